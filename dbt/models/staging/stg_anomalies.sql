with

source as (

    select * from {{ source('mongo', 'anomalies') }}

),

renamed as (

    select
        _id as txn_id,
        user_id,
        merchant_id,
        merchant_category,
        amount_reporting,
        reporting_currency,
        "timestamp" as transacted_at,
        cast("timestamp" as date) as transacted_on,
        z_score

    from source

)

select * from renamed
