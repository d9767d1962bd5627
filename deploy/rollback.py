"""Roll production back from a shell: ``make rollback`` or ``python -m deploy.rollback [--version V]``.

It launches the project's ``rollback_job`` on the instance in ``DAGSTER_HOME``, exactly as the UI's
launchpad does, so the move is a run in the instance's history and a line in the registry's
ledger (by ``cli:<user>``). Without ``--version`` it serves the ``previous`` version again; run it
twice and production is back where it started.

    python -m deploy.rollback                 # back to previous
    python -m deploy.rollback --version v20261020-1a2b3c4d --reason "bad firmware interaction"
    python -m deploy.rollback --history       # the ledger: which version was production when
"""

import argparse
import getpass
import sys

from deploy.cli import config_errors_are_plain
from deploy.home import home_from_env


@config_errors_are_plain
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="previous", help="version id or alias to serve (default: previous)")
    parser.add_argument("--reason", default="rolled back from the command line")
    parser.add_argument("--history", action="store_true", help="print the registry's ledger and exit")
    args = parser.parse_args(argv)
    home_from_env()

    import dagster as dg

    from assets.common import BY_TAG
    from assets.release import RollbackConfig
    from definitions import defs

    if args.history:
        return _print_history()
    job = defs.resolve_job_def("rollback_job")
    result = job.execute_in_process(
        instance=dg.DagsterInstance.get(), raise_on_error=False, tags={BY_TAG: f"cli:{getpass.getuser()}"},
        run_config=dg.RunConfig(ops={"rollback_production": RollbackConfig(version=args.version, reason=args.reason)}),
    )
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        print(f"rollback failed (run {result.run_id}): {failure.step_failure_data.error.message if failure else 'see the run'}",
              file=sys.stderr)
        return 1
    outcome = result.output_for_node("rollback_production")
    print(f"production is {outcome['production']} (was {outcome['replaced'] or outcome['production']}); "
          f"package {outcome['package']} sha256 {outcome['sha256']} (run {result.run_id})")
    return 0


def _print_history() -> int:
    from assets.resources import StorageResource, default_data_dir

    registry = StorageResource(data_dir=default_data_dir()).registry
    for event in registry.history():
        print(f"{event['at']}  {event['event']:20s} {event['version']:28s} production={event['production']}  "
              f"by {event['by']}: {event['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
