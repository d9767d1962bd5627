"""The landing sensor: a new or changed file in the landing folder runs its day's ingestion.

The run key is the file's path plus the sha256 of its content, so the same file never runs twice
and a corrected file runs again. The cursor remembers each file's size and modification time, so
a tick hashes only files that changed since the last one.
"""

import json

import dagster as dg

from assets.jobs import ingest_job
from assets.partitions import DAILY
from assets.resources import DatasetResource
from pipeline import sources


@dg.sensor(job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_sensor(context: dg.SensorEvaluationContext, dataset: DatasetResource):
    """Runs ``ingest_job`` for the day of each new or changed file in the dataset's landing folder."""
    config = dataset.load()
    if config.landing_dir is None:
        return dg.SkipReason(f"dataset {config.name!r} has no landing folder (source: {config.source.kind})")
    seen: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
    valid_keys = set(DAILY.get_partition_keys())
    requests, updated = [], dict(seen)
    for found in sources.list_landing_files(config.landing_dir):
        stat = found.path.stat()
        path = str(found.path)
        if seen.get(path, [None, None, None])[:2] == [stat.st_size, stat.st_mtime_ns]:
            continue
        digest = found.content_hash()
        updated[path] = [stat.st_size, stat.st_mtime_ns, digest]
        if found.partition_key not in valid_keys:
            context.log.warning(f"{path}: day {found.partition_key} is outside the daily partitions; not run")
            continue
        requests.append(dg.RunRequest(run_key=f"{path}:{digest}", partition_key=found.partition_key,
                                      tags={"evergreen/landing_file": path}))
    context.update_cursor(json.dumps(updated))
    return requests or dg.SkipReason("no new or changed landing files")
