-- Revenue per UTC day and merchant: every valid transaction, whatever its status (the same
-- definition as the stream's `merchant_minute` rollups).
with

transactions as (

    select * from {{ ref('stg_transactions') }}

)

select
    strftime(transacted_on, '%Y-%m-%d') as day,
    merchant_id,
    round(sum(amount), 2) as revenue,
    count(*) as txn_count,
    avg(amount) as avg_amount,
    count(*) filter (where is_anomaly) as anomaly_count

from transactions
group by all
