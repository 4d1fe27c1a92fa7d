-- The top_spenders_limit biggest spenders in the reporting currency (rank 1 = the biggest;
-- ties broken by user_id), from the users_by_day aggregates. The totals are summed again over
-- every stored day in DuckDB (cheap: one row per user and day). A table rebuilt at every
-- build: its rows are few, and the mongo plugin writes only the rows that changed (and
-- deletes those of users who left the top) into MongoDB.
{{ config(materialized='table') }}
with

user_days as (

    select * from {{ ref('stg_user_days') }}
    where reporting_currency = '{{ var("reporting_currency") }}'

),

per_user as (

    select
        user_id,
        reporting_currency,
        round(sum(revenue_cents) / 100, 2) as total_spend,
        sum(txn_count) as txn_count,
        sum(revenue_cents) / 100 / sum(txn_count) as avg_amount,
        min(day) as first_seen,
        max(day) as last_seen,
        sum(anomaly_count) as anomaly_count

    from user_days
    group by all

),

ranked as (

    select
        *,
        row_number() over (order by total_spend desc, user_id) as spend_rank

    from per_user

)

select * from ranked
where spend_rank <= {{ var('top_spenders_limit') }}
