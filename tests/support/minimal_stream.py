"""The smallest dataset a new user writes: a timestamp, a label (integer classes) and three features,
no site and no id column, with a few landing files of a simple rule (y = x1 > x2)."""

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from tests.support.helpers import days_from

START = dt.date(2026, 9, 1)
MINIMAL = {
    "name": "rule_change",
    "source": {"kind": "landing", "landing_dir": "landing"},
    "columns": {"timestamp": "ts", "label": "y"},
    "classes": [0, 1],
    "features": [{"name": "x1", "type": "numeric"}, {"name": "x2", "type": "numeric"},
                 {"name": "colour", "type": "categorical"}],
    "partitions": {"start_date": START.isoformat()},
}


def write_minimal(directory: Path, days: int = 3, rows: int = 80, **overrides) -> Path:
    """The YAML above and ``days`` landing files ``ts,x1,x2,colour,y`` (y = x1 > x2, as 0 / 1)."""
    (directory / "landing").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for day in days_from(START, days):
        x1, x2 = rng.normal(size=rows).round(4), rng.normal(size=rows).round(4)
        stamps = [dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=m) for m in range(0, rows * 15, 15)]
        pl.DataFrame({
            "ts": [s.isoformat(sep=" ") for s in stamps], "x1": x1, "x2": x2,
            "colour": rng.choice(["red", "green", "blue"], size=rows), "y": (x1 > x2).astype(int),
        }).write_csv(directory / "landing" / f"{day.isoformat()}.csv")
    path = directory / "dataset.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, **overrides}))
    return path


def bad_yaml(directory: Path) -> Path:
    """The minimal YAML as a new user might first write it: the label column under a wrong key."""
    return write_minimal(directory, days=0, columns={"timestamp": "ts", "labels": "y"})
