-- One row per UTC day and original currency: the sums of the partition parts
-- (currency_days).
with

source as (

    select * from {{ source('mongo', 'currency_days') }}

),

renamed as (

    select
        cast(_id as date) as day,
        currency,
        coalesce(reporting_currency, '{{ var("reporting_currency") }}') as reporting_currency,
        sum(txn_count) as txn_count,
        sum(original_cents) as amount_cents,
        sum(reporting_cents) as reporting_cents

    from source
    group by all

)

select * from renamed
