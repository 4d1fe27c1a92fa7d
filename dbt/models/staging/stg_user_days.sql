-- One row per user and UTC day: the user's transactions that day (user_days).
with

source as (

    select * from {{ source('mongo', 'user_days') }}

),

renamed as (

    select
        _id as user_id,
        cast(day as date) as day,
        coalesce(reporting_currency, '{{ var("reporting_currency") }}') as reporting_currency,
        txn_count,
        cents as revenue_cents,
        anomaly_count

    from source

)

select * from renamed
