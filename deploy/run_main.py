"""``make run``: materialize the newest days and everything downstream on the local Dagster instance.

The work runs as Dagster runs of the project's own jobs on the instance in ``DAGSTER_HOME`` (so
they appear in the UI afterwards): ``ingest_job`` for each older day of the range, in order (each
day's features read the days before), then ``main_job`` for the newest day, which trains, exports,
registers and packages. The range ends at the last complete day. For a landing-folder dataset each
run is tagged with the run key the landing sensor computes for the day's files, so the sensor does
not ingest those days again.
"""

import argparse
import sys

from deploy.cli import config_errors_are_plain
from deploy.home import home_from_env
from pipeline.progress import Progress, duration

QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""The terminal shows one line per run; every event is still in the instance, for the UI."""


@config_errors_are_plain
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=14, help="how many of the newest daily partitions")
    parser.add_argument("--end", help="last partition (YYYY-MM-DD); default: the newest complete day, "
                        "or for a landing-folder dataset the newest complete day with a file")
    args = parser.parse_args(argv)
    home_from_env()

    import dagster as dg

    from assets.partitions import DAILY, DATASET
    from definitions import defs
    from pipeline.sources import list_landing_files
    from sensors.landing import RUN_KEY_TAG, landed_run_keys

    keys = DAILY.get_partition_keys()
    landed = [f.partition_key for f in list_landing_files(DATASET.landing_dir)] if DATASET.landing_dir else []
    landed = [k for k in landed if k <= keys[-1]]  # today's files are not a complete day yet
    end_key = args.end or (landed[-1] if landed else keys[-1])
    if end_key not in keys:
        sys.exit(f"--end {end_key}: not a daily partition ({keys[0]} .. {keys[-1]})")
    end = keys.index(end_key)
    days = keys[max(0, end - args.days + 1): end + 1]
    landing_keys = landed_run_keys(DATASET.landing_dir, set(days)) if DATASET.landing_dir else {}
    instance = dg.DagsterInstance.get()
    progress = Progress(len(days))
    for i, day in enumerate(days):
        job = defs.resolve_job_def("main_job" if i == len(days) - 1 else "ingest_job")
        tags = {RUN_KEY_TAG: landing_keys[day]} if day in landing_keys else None
        result = job.execute_in_process(partition_key=day, instance=instance, raise_on_error=False, run_config=QUIET_CONSOLE,
                                        tags=tags)
        status = "ok" if result.success else "FAILED"
        print(f"{progress.done(f'{job.name} {day}: {status}')}  run {result.run_id}", flush=True)
        if not result.success:
            return 1
    print(f"\n{len(days)} partitions in {duration(progress.elapsed)}")
    _print_summary(result)
    return 0


def _print_summary(result) -> None:
    metadata = {
        event.materialization.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }
    ev, package = metadata["evaluation"], metadata["edge_package"]
    print(f"edge package: {package['path']}  (version {package['version']}, {package['bytes']} bytes)")
    print(f"newest test day {ev['newest_test_day']}: {ev['newest_test_day_rows']} test rows [{ev['newest_test_day_sample']}]")
    for model in ("teacher", "student"):
        print(f"  {model:8s} accuracy {ev[f'{model}_newest_day_accuracy']:.3f}  macro-F1 {ev[f'{model}_newest_day_macro_f1']:.3f}"
              f"   (whole test split, {ev['test_rows']} rows [{ev['test_sample']}]: {ev[f'{model}_accuracy']:.3f} / {ev[f'{model}_macro_f1']:.3f})")


if __name__ == "__main__":
    sys.exit(main())
