-- One row per UTC day and merchant (merchant_days): the merchant's numbers, summed over the
-- partitions by the mongo plugin (`packed`).
with

source as (

    select * from {{ source('mongo', 'merchant_days') }}

),

renamed as (

    select
        cast(_id as date) as day,
        merchant_id,
        merchant_category,
        coalesce(reporting_currency, '{{ var("reporting_currency") }}') as reporting_currency,
        txn_count,
        cents as revenue_cents,
        anomaly_count

    from source

)

select * from renamed
