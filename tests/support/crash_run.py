"""The crash tests' run worker: ``main_job`` for one partition on the instance in ``DAGSTER_HOME``,
through its own multiprocess executor, as a run launched from the UI; or a re-execution from
failure of an earlier run, as the UI's "Re-execute from failure" does.

    python -m tests.support.crash_run --partition 2026-10-20
    python -m tests.support.crash_run --from-failure RUN_ID
"""

import argparse

import dagster as dg

PARTITION_TAG = "dagster/partition"


def main_job() -> dg.JobDefinition:
    from definitions import defs

    return defs.resolve_job_def("main_job")


def main() -> None:
    parser = argparse.ArgumentParser()
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--partition")
    what.add_argument("--from-failure", metavar="RUN_ID")
    args = parser.parse_args()
    with dg.DagsterInstance.get() as instance:
        options = dg.ReexecutionOptions.from_failure(args.from_failure, instance) if args.from_failure else None
        partition = instance.get_run_by_id(args.from_failure).tags[PARTITION_TAG] if options else args.partition
        tags = {PARTITION_TAG: partition}  # as the UI does: a re-execution keeps its parent's partition
        with dg.execute_job(dg.reconstructable(main_job), instance, tags=tags, reexecution_options=options,
                            raise_on_error=False) as result:
            print(f"run {result.run_id}: {'success' if result.success else 'failure'}", flush=True)


if __name__ == "__main__":
    main()
