{% test unique_combination_of_columns(model, columns) %}
-- Rows whose combination of `columns` appears more than once (the key of a mart).
select {{ columns | join(', ') }}, count(*) as n
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
