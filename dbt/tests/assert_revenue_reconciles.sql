-- The marts account for every transaction of the aggregates they are built from: the totals
-- of revenue (reporting currency) and transaction counts of daily_merchant_revenue and
-- anomaly_summary equal those of merchant_days, top_spenders those of the same number of
-- biggest spenders in the user aggregates (stg_user_days),
-- daily_currency_revenue those of currency_days (to the cent), and anomaly_summary's anomaly
-- count that of merchant_days. Returns a row per mismatch.
with

merchant_days as (

    select sum(revenue_cents) / 100 as revenue, sum(txn_count) as txn_count,
           sum(anomaly_count) as anomaly_count
    from {{ ref('stg_merchant_days') }}
    where reporting_currency = '{{ var("reporting_currency") }}'

),

biggest_spenders as (

    select sum(revenue_cents) / 100 as revenue, sum(txn_count) as txn_count
    from {{ ref('stg_user_days') }}
    where reporting_currency = '{{ var("reporting_currency") }}'
    group by user_id
    order by sum(revenue_cents) desc, user_id
    limit (select count(*) from {{ ref('top_spenders') }})

),

checks as (

    select 'daily_merchant_revenue' as mart,
           (select sum(revenue) from {{ ref('daily_merchant_revenue') }}) as revenue,
           (select revenue from merchant_days) as expected_revenue,
           (select sum(txn_count) from {{ ref('daily_merchant_revenue') }}) as txn_count,
           (select txn_count from merchant_days) as expected_txn_count

    union all

    select 'anomaly_summary', null, null,
           (select sum(txn_count) from {{ ref('anomaly_summary') }}),
           (select txn_count from merchant_days)

    union all

    select 'anomaly_summary anomalies', null, null,
           (select sum(anomaly_count) from {{ ref('anomaly_summary') }}),
           (select anomaly_count from merchant_days)

    union all

    select 'top_spenders',
           (select sum(total_spend) from {{ ref('top_spenders') }}),
           (select sum(revenue) from biggest_spenders),
           (select sum(txn_count) from {{ ref('top_spenders') }}),
           (select sum(txn_count) from biggest_spenders)

    union all

    select 'daily_currency_revenue',
           (select sum(revenue_reporting) from {{ ref('daily_currency_revenue') }}),
           (select sum(reporting_cents) / 100 from {{ ref('stg_currency_days') }}
            where reporting_currency = '{{ var("reporting_currency") }}'),
           (select sum(txn_count) from {{ ref('daily_currency_revenue') }}),
           (select sum(txn_count) from {{ ref('stg_currency_days') }}
            where reporting_currency = '{{ var("reporting_currency") }}')

)

select *
from checks
where coalesce(txn_count, 0) != coalesce(expected_txn_count, 0)
   or abs(coalesce(revenue, 0) - coalesce(expected_revenue, 0)) > 0.005
