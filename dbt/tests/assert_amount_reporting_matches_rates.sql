-- Every stored transaction's amount_reporting is its amount converted with the rates table
-- (amount x usd_per_unit of its currency / usd_per_unit of its reporting currency), within
-- one cent. Returns each transaction that is not, or whose currency has no rate.
with

transactions as (

    select * from {{ ref('stg_transactions') }}

),

rates as (

    select * from {{ ref('stg_fx_rates') }}

),

converted as (

    select
        transactions.txn_id,
        transactions.amount,
        transactions.currency,
        transactions.amount_reporting,
        transactions.reporting_currency,
        transactions.amount * paid.usd_per_unit / reporting.usd_per_unit as expected

    from transactions
    left join rates as paid on paid.currency = transactions.currency
    left join rates as reporting on reporting.currency = transactions.reporting_currency

)

select *
from converted
where expected is null
   or abs(amount_reporting - expected) > 0.01 + 1e-9
