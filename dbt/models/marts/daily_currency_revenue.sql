-- Revenue per UTC day and original currency: the amounts as paid (in `currency`) and their
-- value in the reporting currency, from the currency_days aggregates. Incremental: a build
-- recomputes the days from window_start() on.
with

currency_days as (

    select * from {{ ref('stg_currency_days') }}
    where reporting_currency = '{{ var("reporting_currency") }}'
    {% if is_incremental() %}
      and day >= '{{ window_start() }}'
    {% endif %}

)

select
    strftime(day, '%Y-%m-%d') as day,
    currency,
    sum(txn_count) as txn_count,
    round(sum(amount_cents) / 100, 2) as revenue,
    round(sum(reporting_cents) / 100, 2) as revenue_reporting,
    reporting_currency

from currency_days
group by all
