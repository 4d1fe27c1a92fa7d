-- One row per UTC day and original currency (currency_days): its numbers, summed over the
-- partitions by the mongo plugin (`packed`).
with

source as (

    select * from {{ source('mongo', 'currency_days') }}

),

renamed as (

    select
        cast(_id as date) as day,
        currency,
        coalesce(reporting_currency, '{{ var("reporting_currency") }}') as reporting_currency,
        txn_count,
        original_cents as amount_cents,
        reporting_cents

    from source

)

select * from renamed
