-- One row per UTC hour: the sums over its minutes and partition parts (volume_hours).
with

source as (

    select * from {{ source('mongo', 'volume_hours') }}

),

renamed as (

    select
        strptime(_id, '%Y-%m-%dT%H') as hour,
        cast(strptime(_id, '%Y-%m-%dT%H') as date) as day,
        coalesce(reporting_currency, '{{ var("reporting_currency") }}') as reporting_currency,
        sum(txn_count) as txn_count,
        sum(cents) as revenue_cents,
        sum(anomaly_count) as anomaly_count

    from source
    group by all

)

select * from renamed
