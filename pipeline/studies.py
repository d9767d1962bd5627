"""Where Optuna's studies live: one relational database per deployment, one study per dataset and search.

A later retrain loads the same study (``load_if_exists``) and continues its history, so a re-tune's
sampler knows what earlier retrains of the dataset found. The embedded default is a SQLite file in
the dataset's data folder, beside the Dagster instance (``<data_dir>/tuning/optuna.db``); the
scale-out deployment (runs on several machines) uses its PostgreSQL server, the one the Dagster
instance uses (``EVERGREEN_PG_*``), or any SQLAlchemy URL given as ``EVERGREEN_TUNING_STORAGE``.
"""

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy

TUNING_STORAGE_ENV = "EVERGREEN_TUNING_STORAGE"
POSTGRES_ENV = ("EVERGREEN_PG_HOST", "EVERGREEN_PG_PORT", "EVERGREEN_PG_USER", "EVERGREEN_PG_PASSWORD", "EVERGREEN_PG_DB")
"""The scale-out instance's server (``deploy/postgres/dagster.yaml``)."""
SQLITE_TIMEOUT_S = 60
"""A writer of the SQLite file waits this long for another's write to end."""


def default_url(data_dir: str | Path) -> str:
    """``EVERGREEN_TUNING_STORAGE``; else the scale-out PostgreSQL when every ``EVERGREEN_PG_*`` is
    set; else ``sqlite:///<data_dir>/tuning/optuna.db``."""
    if configured := os.environ.get(TUNING_STORAGE_ENV):
        return configured
    if all(os.environ.get(name) for name in POSTGRES_ENV):
        host, port, user, password, db = (os.environ[name] for name in POSTGRES_ENV)
        url = sqlalchemy.URL.create("postgresql+psycopg2", user, password, host, int(port), db)
        return url.render_as_string(hide_password=False)
    return f"sqlite:///{Path(data_dir) / 'tuning' / 'optuna.db'}"


def shown(url: str | None) -> str:
    """The storage as metadata may show it: without its password; "in memory" for no storage."""
    return sqlalchemy.make_url(url).render_as_string(hide_password=True) if url else "in memory"


def _sqlite_file(url: str | None) -> Path | None:
    parsed = sqlalchemy.make_url(url) if url else None
    if parsed is None or parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


@contextlib.contextmanager
def exclusive(url: str | None) -> Iterator[None]:
    """Runs that open, read or write one SQLite file take turns (two runs tuning at once: a backfill,
    a retrain beside a scheduled one). Measured: two searches opening a new file at once both create
    its tables, and one fails. PostgreSQL needs no turns."""
    path = _sqlite_file(url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def storage(url: str | None) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage at ``url`` (a SQLite file's folder is created); None: in memory, for
    benchmarks and tools that keep no history."""
    if url is None:
        return optuna.storages.InMemoryStorage()
    if sqlalchemy.make_url(url).get_backend_name() != "sqlite":
        return optuna.storages.RDBStorage(url)
    if path := _sqlite_file(url):
        path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})


def study_name(dataset: str, search: str) -> str:
    """One study per dataset and search: ``broadband_cpe/teacher``."""
    return f"{dataset}/{search}"
