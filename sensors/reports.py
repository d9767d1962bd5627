"""What the feedback sensors read: the newest day's report among materializations since their cursor."""

from dataclasses import dataclass

import dagster as dg


@dataclass(frozen=True)
class NewestReport:
    partition_key: str
    metadata: dict
    cursor: str
    """The storage id of the last materialization read: the next tick starts after it."""
    run_id: str
    """The run that materialized it (a runless report's is empty)."""


def newest_report(context: dg.SensorEvaluationContext, asset_key: dg.AssetKey) -> NewestReport | None:
    """The newest partition's materialization among those after the cursor (a backfill's older days
    are history, not news), with its metadata values; None when nothing new arrived."""
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, after_storage_id=after), limit=1000, ascending=True,
    ).records
    if not records:
        return None
    newest = max(records, key=lambda r: (r.partition_key or "", r.storage_id))
    return NewestReport(newest.partition_key, {k: v.value for k, v in newest.asset_materialization.metadata.items()},
                        str(max(r.storage_id for r in records)), newest.run_id)
