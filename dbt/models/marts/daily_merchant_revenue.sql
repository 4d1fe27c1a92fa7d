-- Revenue per UTC day and merchant in the reporting currency: every valid transaction,
-- whatever its status (the same definition as the stream's `merchant_minute` rollups), summed
-- from `amount_reporting`.
with

transactions as (

    select * from {{ ref('stg_transactions') }}
    where reporting_currency = '{{ var("reporting_currency") }}'

)

select
    strftime(transacted_on, '%Y-%m-%d') as day,
    merchant_id,
    reporting_currency,
    round(sum(amount_reporting), 2) as revenue,
    count(*) as txn_count,
    avg(amount_reporting) as avg_amount,
    count(*) filter (where is_anomaly) as anomaly_count

from transactions
group by all
