-- Every user ranked by total spend in the reporting currency (rank 1 = the biggest spender;
-- ties broken by user_id), from the user_days aggregates. The totals are summed again over
-- every stored day in DuckDB (cheap: one row per user and day); the model is incremental in
-- what it changes: only the users whose row (totals or rank) differs from the last build are
-- replaced.
{{ config(unique_key='user_id', incremental_strategy='delete+insert') }}
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
{% if is_incremental() %}
except
select * from {{ this }}
{% endif %}
