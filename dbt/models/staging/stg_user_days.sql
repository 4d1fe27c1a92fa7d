-- One row per user and UTC day (users_by_day): the user's transactions that day, summed over
-- the partitions by the mongo plugin (`packed`).
with

source as (

    select * from {{ source('mongo', 'users_by_day') }}

),

renamed as (

    select
        user_id,
        cast(day as date) as day,
        coalesce(reporting_currency, '{{ var("reporting_currency") }}') as reporting_currency,
        txn_count,
        cents as revenue_cents,
        anomaly_count

    from source

)

select * from renamed
