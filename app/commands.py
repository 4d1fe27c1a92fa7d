"""The app's own commands (``txn COMMAND --help``), next to Faust's (worker, agents, ...)."""

from __future__ import annotations

from app.main import app

__all__: list[str] = []


@app.command()
async def topics() -> None:
    """Print the pipeline's topics and their partition counts."""
    from app import topics as declared

    for topic in (declared.transactions_topic, declared.enriched_topic,
                  declared.anomalies_topic, declared.dlq_topic):
        print(f"{topic.get_topic_name()}\tpartitions={topic.partitions}")
