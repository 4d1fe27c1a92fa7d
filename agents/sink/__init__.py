"""The MongoDB sink (``txn sink``, docs/sink.md): reads what the processing worker publishes and
writes MongoDB, plus the per-minute rollups.

Read it in this order; each module imports only modules above it (the imports, one way, are
listed in docs/sink.md)::

    exceptions.py   the sink's errors (PoisonMessage, ...) and DATA_ERRORS
    crash.py        crash-only: an unexpected exception ends the process (exit 70)
    documents.py    pure: message -> document, dead-letter records, rollup numbers, Entry
    batch.py        Batch (items + events, no I/O) and Acks (a batch's Kafka acks)
    retry.py        database calls in a writer thread, retried through an outage
    mongo.py        MongoStore: collections, indexes, inserts, rollup reads and upserts
    metrics.py      Prometheus counters, health, and the /metrics /health /ready server
    writer.py       MongoSink: add() / flush() of one collection; acks go on after the write
    rollups.py      RollupState (pure) and Rollups: the step after the transactions' write
    agents.py       the Faust agents and tasks on ``sink_app``, wiring the objects above
    command.py      ``txn sink`` (imports ``agents.py`` only when it runs)

Importing the package imports nothing else: the processing app autodiscovers ``agents`` and so
imports every module here, which only declares agents and tasks on ``sink_app``.
"""

__all__: list[str] = []
