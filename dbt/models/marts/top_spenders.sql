-- Every user ranked by total spend (rank 1 = the biggest spender; ties broken by user_id).
with

transactions as (

    select * from {{ ref('stg_transactions') }}

),

per_user as (

    select
        user_id,
        round(sum(amount), 2) as total_spend,
        count(*) as txn_count,
        avg(amount) as avg_amount,
        min(transacted_at) as first_seen,
        max(transacted_at) as last_seen,
        count(*) filter (where is_anomaly) as anomaly_count

    from transactions
    group by user_id

)

select
    *,
    row_number() over (order by total_spend desc, user_id) as spend_rank

from per_user
