{% macro window_start(column='day') -%}
{#- The first day an incremental mart recomputes: its last day minus the `lookback_days` var
    (late events change the aggregates of past days), as "YYYY-MM-DD"; "0000-01-01" (every
    day) when the mart is built from scratch. Evaluated before the model changes anything,
    so the model and its pre-hook see the same day. -#}
{%- if execute and is_incremental() -%}
  {%- set result = run_query("select max(" ~ column ~ ") from " ~ this) -%}
  {%- set last = result.columns[0].values()[0] -%}
  {%- if last is none -%}
0000-01-01
  {%- else -%}
{{ (modules.datetime.date.fromisoformat(last | string) - modules.datetime.timedelta(days=var('lookback_days') | int)).isoformat() }}
  {%- endif -%}
{%- else -%}
0000-01-01
{%- endif -%}
{%- endmacro %}


{% macro delete_window(column='day') -%}
{#- Pre-hook of an incremental mart that appends: drop the rows of the days it recomputes
    (top_spenders, keyed by user, uses delete+insert instead). -#}
{%- if is_incremental() and config.get('incremental_strategy') == 'append' -%}
delete from {{ this }} where {{ column }} >= '{{ window_start(column) }}'
{%- endif -%}
{%- endmacro %}


{% macro mongo_store() -%}
{#- Post-hook (after commit) of a mart: write the mart to Parquet and hand it to the mongo
    plugin, which writes the rows that changed since its last write into the MongoDB
    collection of the same name (app/mongo_dbt.py). -#}
{%- if execute -%}
  {%- set path = adapter.external_root() ~ '/' ~ this.identifier ~ '.parquet' -%}
  {%- do run_query("copy (select * from " ~ this ~ ") to '" ~ path ~ "' (format parquet)") -%}
  {%- do store_relation('mongo', this, path, 'parquet', config) -%}
{%- endif -%}
{%- endmacro %}
