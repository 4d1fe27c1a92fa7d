-- The exchange rates the stream converts with: app/fx_rates.csv (the `fx_rates_path` var),
-- one row per currency, in US dollars per unit.
with

source as (

    select *
    from read_csv(
        '{{ var("fx_rates_path") }}',
        header = true,
        columns = {'currency': 'VARCHAR', 'usd_per_unit': 'DECIMAL(18, 9)', 'as_of': 'DATE'}
    )

),

renamed as (

    select
        currency,
        cast(usd_per_unit as double) as usd_per_unit,
        as_of as rate_as_of

    from source

)

select * from renamed
