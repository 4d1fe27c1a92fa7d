-- One row per UTC day and merchant: the sums of the merchant's partition parts
-- (merchant_days).
with

source as (

    select * from {{ source('mongo', 'merchant_days') }}

),

renamed as (

    select
        cast(_id as date) as day,
        id as merchant_id,
        category as merchant_category,
        coalesce(reporting_currency, '{{ var("reporting_currency") }}') as reporting_currency,
        sum(txn_count) as txn_count,
        sum(cents) as revenue_cents,
        sum(anomaly_count) as anomaly_count

    from source
    group by all

)

select * from renamed
