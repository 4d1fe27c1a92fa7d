-- The conversions the stream summed agree with the rates table: per day and currency, the
-- reporting-currency cents equal the original cents x (usd_per_unit of the currency /
-- usd_per_unit of the reporting currency) within the rounding of each transaction to the cent
-- (half a cent of each side per transaction, plus one). Returns each day and currency that
-- does not, or whose currency has no rate.
with

currency_days as (

    select * from {{ ref('stg_currency_days') }}

),

rates as (

    select * from {{ ref('stg_fx_rates') }}

),

converted as (

    select
        currency_days.*,
        paid.usd_per_unit / reporting.usd_per_unit as ratio,
        currency_days.amount_cents * paid.usd_per_unit / reporting.usd_per_unit as expected

    from currency_days
    left join rates as paid on paid.currency = currency_days.currency
    left join rates as reporting on reporting.currency = currency_days.reporting_currency

)

select *
from converted
where expected is null
   or abs(reporting_cents - expected) > 0.5 * txn_count * (1 + ratio) + 1
