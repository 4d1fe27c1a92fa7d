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
        currency,
        amount,
        amount_reporting,
        reporting_currency,
        "timestamp" as transacted_at,
        cast("timestamp" as date) as transacted_on,
        z_score,
        mean_prev,
        std_prev,
        n_prev,
        detected_at

    from source

)

select * from renamed
