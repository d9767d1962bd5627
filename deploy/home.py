"""Prepare a DAGSTER_HOME: the folder, and the embedded instance config if it has none.

Used by ``make ui``, ``make run`` (through ``deploy.run_main``) and the end-to-end tests, so every
instance Evergreen starts has the same configuration.

    python -m deploy.home   # prepares the home and prints its path (make ui passes it to dagster dev)
"""

import os
import shutil
from pathlib import Path

INSTANCE_CONFIG = Path(__file__).resolve().parent / "instance" / "dagster.yaml"


def prepare_home(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(INSTANCE_CONFIG, home / "dagster.yaml")
    return home


def home_from_env() -> Path:
    """``DAGSTER_HOME``, else ``dagster_home/`` in the dataset's data folder (which must persist: runs,
    cursors), prepared and exported for this process and its children."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        from assets.resources import default_data_dir  # reads the dataset YAML: only when needed

        home = str(Path(default_data_dir()) / "dagster_home")
        os.environ["DAGSTER_HOME"] = home
    return prepare_home(Path(home))


if __name__ == "__main__":
    print(home_from_env())
