-- The sink's aggregates count the same transactions: per UTC day, merchant_days,
-- users_by_day and currency_days have the same transaction count and revenue
-- (reporting-currency cents), and merchant_days and users_by_day the same anomaly count.
-- A warning, not an error: the sink writes each collection separately, so a live
-- snapshot can hold one a few seconds ahead of another; tests/integration/test_dbt.py
-- requires it to pass on its static data. Returns a row per day and mismatch.
{{ config(severity='warn') }}
with

per_source as (

    select 'merchant_days' as source, day, sum(txn_count) as txn_count,
           sum(revenue_cents) as cents, sum(anomaly_count) as anomaly_count
    from {{ ref('stg_merchant_days') }} group by all

    union all

    select 'users_by_day', day, sum(txn_count), sum(revenue_cents), sum(anomaly_count)
    from {{ ref('stg_user_days') }} group by all

    union all

    select 'currency_days', day, sum(txn_count), sum(reporting_cents), null
    from {{ ref('stg_currency_days') }} group by all

),

reference as (

    select day, txn_count, cents, anomaly_count
    from per_source where source = 'merchant_days'

)

select per_source.*, reference.txn_count as merchant_days_txn_count,
       reference.cents as merchant_days_cents
from per_source
full join reference using (day)
where day < current_date - 1
  and (per_source.txn_count is distinct from reference.txn_count
   or per_source.cents is distinct from reference.cents
   or (per_source.anomaly_count is not null
       and per_source.anomaly_count is distinct from reference.anomaly_count))
