"""The landing sensor: new or changed files in the landing folder run their day's ingestion.

One run per day, whatever number of its files changed: ingestion reads all of a day's files, and two
runs of one partition at once would race. The run key hashes the day's file paths with their content
(sha256), so the same files never run twice and a corrected file runs again. The cursor remembers
each file's size, modification time and hash, so a tick hashes only files that changed. A file
dated after the newest partition (today's micro-batch) stays out of the cursor until its day is a
partition, so it is never skipped for good.
"""

import hashlib
import json
from collections import defaultdict

import dagster as dg

from assets.jobs import ingest_job
from assets.partitions import DAILY
from assets.resources import DatasetResource
from pipeline import sources


@dg.sensor(job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_sensor(context: dg.SensorEvaluationContext, dataset: DatasetResource):
    """Runs ``ingest_job`` once for each day with new or changed files in the dataset's landing folder."""
    config = dataset.load()
    if config.landing_dir is None:
        return dg.SkipReason(f"dataset {config.name!r} has no landing folder (source: {config.source.kind})")
    seen: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
    keys = DAILY.get_partition_keys()
    valid, newest = set(keys), keys[-1] if keys else ""

    current, days, changed = {}, defaultdict(list), set()
    for found in sources.list_landing_files(config.landing_dir):
        path, stat = str(found.path), found.path.stat()
        before = seen.get(path)
        unchanged = before is not None and before[:2] == [stat.st_size, stat.st_mtime_ns]
        state = before if unchanged else [stat.st_size, stat.st_mtime_ns, found.content_hash()]
        day = found.partition_key
        if day > newest:
            continue  # not a partition yet: look again on a later tick
        current[path] = state
        days[day].append((path, state[2]))
        if not unchanged:
            changed.add(day)

    requests = []
    for day in sorted(changed):
        if day not in valid:
            context.log.warning(f"{config.landing_dir}: files for {day} are before the first daily partition; not run")
            continue
        digest = hashlib.sha256(json.dumps(sorted(days[day])).encode()).hexdigest()
        requests.append(dg.RunRequest(run_key=f"{day}:{digest}", partition_key=day,
                                      tags={"evergreen/landing_files": str(len(days[day]))}))
    context.update_cursor(json.dumps(current))
    return requests or dg.SkipReason("no new or changed landing files")
