-- The marts account for every staged transaction and its amount: the totals of revenue (in
-- the reporting currency) and transaction counts in daily_merchant_revenue, top_spenders and
-- daily_currency_revenue equal those of the staged transactions in the reporting currency (to
-- the cent), and anomaly_summary counts every staged transaction. Returns a row on mismatch.
with

staged as (

    select round(sum(amount_reporting), 2) as revenue, count(*) as txn_count
    from {{ ref('stg_transactions') }}
    where reporting_currency = '{{ var("reporting_currency") }}'

),

staged_all as (

    select count(*) as txn_count from {{ ref('stg_transactions') }}

),

marts as (

    select 'daily_merchant_revenue' as mart, sum(revenue) as revenue,
           sum(txn_count) as txn_count, (select txn_count from staged) as staged_txn_count
    from {{ ref('daily_merchant_revenue') }}

    union all

    select 'top_spenders', sum(total_spend), sum(txn_count), (select txn_count from staged)
    from {{ ref('top_spenders') }}

    union all

    select 'daily_currency_revenue', sum(revenue_reporting), sum(txn_count),
           (select txn_count from staged)
    from {{ ref('daily_currency_revenue') }}

    union all

    select 'anomaly_summary', null, sum(txn_count), (select txn_count from staged_all)
    from {{ ref('anomaly_summary') }}

)

select marts.mart, marts.revenue, staged.revenue as staged_revenue,
       marts.txn_count, marts.staged_txn_count
from marts cross join staged
where coalesce(marts.txn_count, 0) != marts.staged_txn_count
   or (marts.revenue is not null and abs(marts.revenue - staged.revenue) > 0.005)
