-- One row per user and UTC day: the user's transactions that day, the sums of the user's
-- partition parts (users_by_day: the numbers of user_days, grouped by day).
with

source as (

    select * from {{ source('mongo', 'users_by_day') }}

),

renamed as (

    select
        id as user_id,
        cast(day as date) as day,
        coalesce(reporting_currency, '{{ var("reporting_currency") }}') as reporting_currency,
        sum(txn_count) as txn_count,
        sum(cents) as revenue_cents,
        sum(anomaly_count) as anomaly_count

    from source
    group by all

)

select * from renamed
