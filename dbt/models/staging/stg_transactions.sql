with

source as (

    select * from {{ source('mongo', 'transactions') }}

),

renamed as (

    select
        _id as txn_id,
        user_id,
        merchant_id,
        merchant_category,
        payment_method,
        status,
        currency,
        amount,
        amount_reporting,
        reporting_currency,
        "timestamp" as transacted_at,
        cast("timestamp" as date) as transacted_on,
        z_score,
        coalesce(is_anomaly, false) as is_anomaly,
        processed_at

    from source

)

select * from renamed
