-- Per UTC day and merchant category: anomalies (from the `anomalies` collection), their share
-- of the transactions, the average and largest z-score, and their amount in the reporting
-- currency.
with

transactions as (

    select * from {{ ref('stg_transactions') }}

),

anomalies as (

    select * from {{ ref('stg_anomalies') }}

),

volume as (

    select
        strftime(transacted_on, '%Y-%m-%d') as day,
        merchant_category,
        count(*) as txn_count

    from transactions
    group by all

),

flagged as (

    select
        strftime(transacted_on, '%Y-%m-%d') as day,
        merchant_category,
        count(*) as anomaly_count,
        avg(z_score) as avg_z,
        max(z_score) as max_z,
        round(coalesce(sum(amount_reporting) filter (
            where reporting_currency = '{{ var("reporting_currency") }}'), 0), 2)
            as anomaly_amount

    from anomalies
    group by all

)

select
    volume.day,
    volume.merchant_category,
    volume.txn_count,
    coalesce(flagged.anomaly_count, 0) as anomaly_count,
    coalesce(flagged.anomaly_count, 0) / volume.txn_count as anomaly_rate,
    flagged.avg_z,
    flagged.max_z,
    coalesce(flagged.anomaly_amount, 0) as anomaly_amount,
    '{{ var("reporting_currency") }}' as reporting_currency

from volume
left join flagged using (day, merchant_category)
