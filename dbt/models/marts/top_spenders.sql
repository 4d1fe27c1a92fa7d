-- Every user ranked by total spend in the reporting currency (rank 1 = the biggest spender;
-- ties broken by user_id).
with

transactions as (

    select * from {{ ref('stg_transactions') }}
    where reporting_currency = '{{ var("reporting_currency") }}'

),

per_user as (

    select
        user_id,
        reporting_currency,
        round(sum(amount_reporting), 2) as total_spend,
        count(*) as txn_count,
        avg(amount_reporting) as avg_amount,
        min(transacted_at) as first_seen,
        max(transacted_at) as last_seen,
        count(*) filter (where is_anomaly) as anomaly_count

    from transactions
    group by all

)

select
    *,
    row_number() over (order by total_spend desc, user_id) as spend_rank

from per_user
