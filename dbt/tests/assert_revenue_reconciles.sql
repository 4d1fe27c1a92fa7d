-- The marts account for every staged transaction and its amount: the totals of revenue and
-- transaction counts in daily_merchant_revenue and top_spenders, and of transaction counts in
-- anomaly_summary, equal those of stg_transactions (to the cent). Returns a row on mismatch.
with

staged as (

    select round(sum(amount), 2) as revenue, count(*) as txn_count
    from {{ ref('stg_transactions') }}

),

marts as (

    select 'daily_merchant_revenue' as mart, sum(revenue) as revenue, sum(txn_count) as txn_count
    from {{ ref('daily_merchant_revenue') }}

    union all

    select 'top_spenders', sum(total_spend), sum(txn_count)
    from {{ ref('top_spenders') }}

    union all

    select 'anomaly_summary', null, sum(txn_count)
    from {{ ref('anomaly_summary') }}

)

select marts.mart, marts.revenue, staged.revenue as staged_revenue,
       marts.txn_count, staged.txn_count as staged_txn_count
from marts cross join staged
where coalesce(marts.txn_count, 0) != staged.txn_count
   or (marts.revenue is not null and abs(marts.revenue - staged.revenue) > 0.005)
