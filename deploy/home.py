"""Prepare a DAGSTER_HOME: the folder, and the embedded instance config if it has none.

Used by ``make ui``, ``make run`` (through ``deploy.run_main``) and the end-to-end tests, so every
instance Evergreen starts has the same configuration.

    python -m deploy.home   # prepares $DAGSTER_HOME
"""

import os
import shutil
import sys
from pathlib import Path

INSTANCE_CONFIG = Path(__file__).resolve().parent / "instance" / "dagster.yaml"


def prepare_home(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(INSTANCE_CONFIG, home / "dagster.yaml")
    return home


def home_from_env() -> Path:
    """DAGSTER_HOME must persist (runs, cursors): refuse to run without it."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        sys.exit("DAGSTER_HOME is not set: run through `make run` / `make ui`, or export it to a persistent folder")
    return prepare_home(Path(home))


if __name__ == "__main__":
    print(home_from_env())
