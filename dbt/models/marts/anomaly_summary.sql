-- Per UTC day and merchant category: transactions and anomalies (from the merchant_days
-- aggregates), the anomaly rate, and the anomalies' average and largest z-score and amount in
-- the reporting currency (from the `anomalies` collection). Incremental: a build recomputes
-- the days from window_start() on.
with

merchant_days as (

    select * from {{ ref('stg_merchant_days') }}
    where reporting_currency = '{{ var("reporting_currency") }}'
    {% if is_incremental() %}
      and day >= '{{ window_start() }}'
    {% endif %}

),

anomalies as (

    select * from {{ ref('stg_anomalies') }}
    where reporting_currency = '{{ var("reporting_currency") }}'
    {% if is_incremental() %}
      and transacted_on >= '{{ window_start() }}'
    {% endif %}

),

volume as (

    select
        strftime(day, '%Y-%m-%d') as day,
        merchant_category,
        sum(txn_count) as txn_count,
        sum(anomaly_count) as anomaly_count

    from merchant_days
    group by all

),

flagged as (

    select
        strftime(transacted_on, '%Y-%m-%d') as day,
        merchant_category,
        avg(z_score) as avg_z,
        max(z_score) as max_z,
        round(sum(amount_reporting), 2) as anomaly_amount

    from anomalies
    group by all

)

select
    volume.day,
    volume.merchant_category,
    volume.txn_count,
    volume.anomaly_count,
    volume.anomaly_count / volume.txn_count as anomaly_rate,
    flagged.avg_z,
    flagged.max_z,
    coalesce(flagged.anomaly_amount, 0) as anomaly_amount,
    '{{ var("reporting_currency") }}' as reporting_currency

from volume
left join flagged using (day, merchant_category)
