{% test positive(model, column_name) %}
-- Rows whose value is not above zero.
select * from {{ model }} where {{ column_name }} <= 0
{% endtest %}
