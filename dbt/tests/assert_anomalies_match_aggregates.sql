-- The `anomalies` collection and the aggregates count the same anomalies: per day and
-- merchant category, the anomaly documents (in the reporting currency) number the anomalies
-- of merchant_days. Only the days before yesterday (UTC) that still have anomaly documents
-- are compared (the sink keeps anomalies ANOMALY_RETENTION_DAYS, the aggregates longer; the
-- anomalies are re-read only every DBT_SCAN_INTERVAL_SECONDS). A warning: the sink writes
-- the two separately. Returns a row per mismatch.
{{ config(severity='warn') }}
with

documents as (

    select transacted_on as day, merchant_category, count(*) as anomaly_count
    from {{ ref('stg_anomalies') }}
    where reporting_currency = '{{ var("reporting_currency") }}'
      and transacted_on < current_date - 1
    group by all

),

aggregates as (

    select day, merchant_category, sum(anomaly_count) as anomaly_count
    from {{ ref('stg_merchant_days') }}
    where reporting_currency = '{{ var("reporting_currency") }}'
      and day in (select day from documents)
    group by all

)

select *
from documents
full join aggregates using (day, merchant_category)
where coalesce(documents.anomaly_count, 0) != coalesce(aggregates.anomaly_count, 0)
