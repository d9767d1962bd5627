"""The landing sensor: new or changed files in the landing folder run their day's ingestion.

One run per day, whatever number of its files changed: ingestion reads all of a day's files, and two
runs of one partition at once would race. The run key hashes the day's file paths with their content
(sha256), so the same files never run twice and a corrected file runs again. The cursor remembers
each file's size, modification and change times, inode and hash, so a tick hashes only files that
changed. The change time (ctime) is the kernel's: a copy that restores the old modification time
(``cp -p``, ``rsync -t``, an editor) still moves it, so a corrected file of the same size and
mtime is hashed again. Entries of the landing folder that belong to no day (no date, or a date that
is not one) are reported in the tick's log and skip reason. A file
dated after the newest partition (today's micro-batch) stays out of the cursor until its day is a
partition, so it is never skipped for good.

A day whose newest ``raw_telemetry`` came from a run tagged with the same run key (``RUN_KEY_TAG``:
the sensor's own runs, and ``make run``'s, which tags its runs with the key the sensor would compute)
is not run again: the first tick after ``make run`` does not re-ingest the days it has just ingested,
and a lost cursor costs hashing, not runs. Backfills and UI runs carry no key: a day they ingested
runs once more when its files are first seen.
"""

import hashlib
import json
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path

import dagster as dg

from assets.data import raw_telemetry
from assets.jobs import ingest_job
from assets.partitions import DAILY
from assets.resources import DatasetResource
from pipeline import sources

RUN_KEY_TAG = "evergreen/landing_run_key"
"""On a run that ingested a day: the run key of the landing files it read (``run_key``)."""


def run_key(day: str, files: list[tuple[str, str]]) -> str:
    """The day and a sha256 over its files' (path, content sha256) pairs: the same files, the same key."""
    return f"{day}:{hashlib.sha256(json.dumps(sorted(files)).encode()).hexdigest()}"


def landed_run_keys(landing_dir: Path, wanted: Collection[str]) -> dict[str, str]:
    """The run key of each ``wanted`` day with landed files (what ``make run`` tags its runs with)."""
    days: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for found in sources.list_landing_files(landing_dir):
        if found.partition_key in wanted:
            days[found.partition_key].append((str(found.path), found.content_hash()))
    return {day: run_key(day, files) for day, files in days.items()}


def ingested_key(instance: dg.DagsterInstance, day: str) -> str | None:
    """The run key tagged on the run of the day's newest ``raw_telemetry`` (None: none, or untagged)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=raw_telemetry.key, asset_partitions=[day]), limit=1).records
    run = instance.get_run_by_id(records[0].run_id) if records else None
    return run.tags.get(RUN_KEY_TAG) if run else None


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
    inventory = sources.landing_inventory(config.landing_dir)
    for found in inventory.files:
        path, stat = str(found.path), found.path.stat()
        before, signature = seen.get(path), [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        unchanged = before is not None and before[:-1] == signature
        state = before if unchanged else [*signature, found.content_hash()]
        day = found.partition_key
        if day > newest:
            continue  # not a partition yet: look again on a later tick
        current[path] = state
        days[day].append((path, state[-1]))
        if not unchanged:
            changed.add(day)

    requests, ingested = [], []
    for day in sorted(changed):
        if day not in valid:
            context.log.warning(f"{config.landing_dir}: files for {day} are before the first daily partition; not run")
            continue
        key = run_key(day, days[day])
        if ingested_key(context.instance, day) == key:
            ingested.append(day)
            continue
        requests.append(dg.RunRequest(run_key=key, partition_key=day,
                                      tags={"evergreen/landing_files": str(len(days[day])), RUN_KEY_TAG: key}))
    context.update_cursor(json.dumps(current))
    if ingested:
        context.log.info(f"not run again, already ingested from the same files: {', '.join(ingested)}")
    if undated := inventory.skipped_on(None):
        context.log.warning(f"{len(undated)} landing entries belong to no day and are not read: "
                            + "; ".join(map(str, undated[:20])))
    unread = f"; {len(undated)} entries belong to no day, not read (first: {undated[0]})" if undated else ""
    return requests or dg.SkipReason("no new or changed landing files"
                                     + (f" ({len(ingested)} day(s) already ingested from the same files)" if ingested else "")
                                     + unread)
