-- Revenue per UTC day and merchant in the reporting currency: every valid transaction,
-- whatever its status (the same definition as the stream's rollups), from the merchant_days
-- aggregates. Incremental: a build recomputes the days from window_start() on.
with

merchant_days as (

    select * from {{ ref('stg_merchant_days') }}
    where reporting_currency = '{{ var("reporting_currency") }}'
    {% if is_incremental() %}
      and day >= '{{ window_start() }}'
    {% endif %}

)

select
    strftime(day, '%Y-%m-%d') as day,
    merchant_id,
    reporting_currency,
    round(sum(revenue_cents) / 100, 2) as revenue,
    sum(txn_count) as txn_count,
    sum(revenue_cents) / 100 / sum(txn_count) as avg_amount,
    sum(anomaly_count) as anomaly_count

from merchant_days
group by all
