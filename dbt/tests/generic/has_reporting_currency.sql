{% test has_reporting_currency(model) %}
-- A row when the rates table has no rate for the reporting currency (nothing could be
-- converted into it).
select '{{ var("reporting_currency") }}' as missing_currency
where not exists (
    select 1 from {{ model }} where currency = '{{ var("reporting_currency") }}'
)
{% endtest %}
