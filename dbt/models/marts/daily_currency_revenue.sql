-- Revenue per UTC day and original currency: the amounts as paid (in `currency`) and their
-- value in the reporting currency (from `amount_reporting`).
with

transactions as (

    select * from {{ ref('stg_transactions') }}
    where reporting_currency = '{{ var("reporting_currency") }}'

)

select
    strftime(transacted_on, '%Y-%m-%d') as day,
    currency,
    count(*) as txn_count,
    round(sum(amount), 2) as revenue,
    round(sum(amount_reporting), 2) as revenue_reporting,
    reporting_currency

from transactions
group by all
