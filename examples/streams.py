"""Drifting tabular streams with known drift points, written as a new user would bring them.

    .venv/bin/python -m examples.streams --out /tmp/streams            # every stream
    .venv/bin/python -m examples.streams --out /tmp/streams sudden     # one of them

Each stream is a folder with a minimal ``dataset.yaml`` (a timestamp, a label and features: no site,
no id, integer classes), a ``landing/`` folder of one CSV a day and ``events.json`` naming the days
the world changed, which ``make backtest`` can mark (``--event DAY``). The label rule and the inputs
are plain functions of a seeded generator, so a stream is the same on every machine.

The kinds:
- ``sudden``: the label rule changes on one day, the inputs do not (a pure concept change).
- ``gradual``: the new rule takes over a growing share of rows over ``transition_days``.
- ``recurring``: the rule alternates between two concepts every ``period_days``.
- ``covariate``: the inputs move (one feature's mean shifts, a category becomes common), the rule stays.
- ``wandering``: the inputs drift a little every day (their means and the colours' shares follow a
  random walk from ``drift_day`` on), the rule stays: many input-drift alarms, few of them harmful.
- ``mixing``: from ``drift_day`` on, each day mixes the inputs anew (every mean moves by up to
  ``mixing_sd`` and the colours' shares tilt, drawn afresh each day, so the inputs stay where the
  reference already had rows), the rule stays: input drift nearly every day that does not hurt.
- ``stationary``: nothing changes (for false alarms).

``DEVELOPMENT`` are the streams Evergreen may be tuned on; ``HELD_OUT`` are kept aside for the final
measurement only (other seeds, drift days, class counts and sizes).
"""

import argparse
import datetime as dt
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import yaml

Kind = Literal["sudden", "gradual", "recurring", "covariate", "wandering", "mixing", "stationary"]
COLOURS = ("red", "green", "blue", "grey")
NUMERIC = ("x1", "x2", "x3", "x4")


@dataclass(frozen=True)
class StreamSpec:
    name: str
    kind: Kind
    days: int = 42
    rows_per_day: int = 2000
    drift_day: int = 21
    """0-based day index of the change (the first day of a gradual transition)."""
    classes: int = 2
    seed: int = 0
    label_noise: float = 0.03
    transition_days: int = 7
    period_days: int = 10
    mixing_sd: float = 0.6
    """``mixing``: the largest move of a numeric input's daily mean, in standard deviations."""
    start: dt.date = dt.date(2026, 6, 1)

    def day(self, index: int) -> dt.date:
        return self.start + dt.timedelta(days=index)

    @property
    def events(self) -> list[dt.date]:
        if self.kind == "stationary":
            return []
        if self.kind == "recurring":
            return [self.day(i) for i in range(self.drift_day, self.days, self.period_days)]
        return [self.day(self.drift_day)]


DEVELOPMENT = (
    StreamSpec("sudden", "sudden", seed=1),
    StreamSpec("gradual", "gradual", seed=2),
    StreamSpec("recurring", "recurring", seed=3),
    StreamSpec("covariate", "covariate", seed=4),
    StreamSpec("wandering", "wandering", drift_day=14, seed=7),
    StreamSpec("mixing", "mixing", drift_day=14, seed=8),
    StreamSpec("small_days", "sudden", rows_per_day=48, days=60, drift_day=35, seed=5),
    StreamSpec("stationary", "stationary", seed=6),
)
HELD_OUT = (
    StreamSpec("heldout_sudden3", "sudden", classes=3, drift_day=17, days=38, seed=101),
    StreamSpec("heldout_gradual", "gradual", rows_per_day=800, drift_day=15, transition_days=10, seed=102),
    StreamSpec("heldout_recurring_small", "recurring", rows_per_day=72, days=56, drift_day=20, period_days=12, seed=103),
    StreamSpec("heldout_covariate3", "covariate", classes=3, drift_day=19, seed=104),
    StreamSpec("heldout_wandering3", "wandering", classes=3, rows_per_day=1000, drift_day=14, seed=105),
    StreamSpec("heldout_mixing3", "mixing", classes=3, rows_per_day=1000, days=40, drift_day=12, mixing_sd=0.5, seed=107),
    StreamSpec("heldout_recurring3", "recurring", classes=3, rows_per_day=300, days=50, drift_day=18, period_days=9, seed=106),
)
STREAMS = {s.name: s for s in (*DEVELOPMENT, *HELD_OUT)}


class _Concepts:
    """Two label rules over the same inputs: class scores linear in the features plus a colour bonus
    and one interaction, so trees need several splits and a changed rule needs new ones."""

    def __init__(self, rng: np.random.Generator, classes: int):
        self.weights = [rng.normal(0, 1, (len(NUMERIC), classes)) for _ in range(2)]
        self.colour = [rng.normal(0, 0.8, (len(COLOURS), classes)) for _ in range(2)]
        self.interaction = [rng.normal(0, 0.7, classes) for _ in range(2)]

    def labels(self, x: np.ndarray, colour: np.ndarray, concept: np.ndarray) -> np.ndarray:
        out = np.empty(len(x), dtype=np.int64)
        for c in (0, 1):
            rows = concept == c
            scores = x[rows] @ self.weights[c] + self.colour[c][colour[rows]]
            scores += np.outer(x[rows, 0] * x[rows, 1], self.interaction[c])
            if scores.shape[1] == 2:
                scores[:, 0] = 0.0  # two classes: the sign of one score difference
            out[rows] = scores.argmax(axis=1)
        return out


def shortened(spec: StreamSpec, days: int) -> StreamSpec:
    """The stream cut to its first ``days`` days (for quick runs); its events keep their days."""
    return replace(spec, days=min(days, spec.days))


def _concept_of_rows(spec: StreamSpec, index: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Which rule labels each row of day ``index``."""
    since = index - spec.drift_day
    if spec.kind == "sudden":
        return np.full(n, int(since >= 0))
    if spec.kind == "gradual":
        share = min(max((since + 1) / spec.transition_days, 0.0), 1.0) if since >= 0 else 0.0
        return (rng.random(n) < share).astype(int)
    if spec.kind == "recurring":
        return np.full(n, int(since >= 0 and (since // spec.period_days) % 2 == 0))
    return np.zeros(n, dtype=int)


def _inputs(spec: StreamSpec, index: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(0, 1, (n, len(NUMERIC)))
    colour_p = np.array([0.4, 0.3, 0.25, 0.05])
    if spec.kind == "covariate" and index >= spec.drift_day:
        ramp = min((index - spec.drift_day + 1) / 3, 1.0)
        x[:, 0] += 1.5 * ramp
        x[:, 2] *= 1 + 0.5 * ramp
        colour_p = (1 - ramp) * colour_p + ramp * np.array([0.1, 0.2, 0.2, 0.5])
    moves = {"wandering": _wander, "mixing": _mix}
    if spec.kind in moves and index >= spec.drift_day:
        means, colour_logits = moves[spec.kind](spec, index)
        x += means
        tilted = np.exp(np.log(colour_p) + colour_logits)
        colour_p = tilted / tilted.sum()
    colour = rng.choice(len(COLOURS), size=n, p=colour_p)
    return x, colour


def _wander(spec: StreamSpec, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Where a wandering stream's inputs are on day ``index``: the sum of daily steps since ``drift_day``
    (0.25 sd per numeric input, 0.3 in the colours' log-odds), the same for every row of a day."""
    steps = np.random.default_rng([spec.seed, 20_000]).normal(0, 1, (spec.days, len(NUMERIC) + len(COLOURS)))
    walked = steps[spec.drift_day:index + 1].sum(axis=0)
    return 0.25 * walked[:len(NUMERIC)], 0.3 * walked[len(NUMERIC):]


def _mix(spec: StreamSpec, index: int) -> tuple[np.ndarray, np.ndarray]:
    """A mixing stream's inputs on day ``index``: means moved by a uniform draw in ±``mixing_sd``
    and the colours' log-odds by a normal one (sd 0.5), drawn afresh for the day, not summed."""
    draw = np.random.default_rng([spec.seed, 30_000, index])
    return draw.uniform(-spec.mixing_sd, spec.mixing_sd, len(NUMERIC)), draw.normal(0, 0.5, len(COLOURS))


def generate_day(spec: StreamSpec, index: int, concepts: _Concepts) -> pl.DataFrame:
    """One day's rows: a timestamp, the features and the label (``y``), in time order."""
    rng = np.random.default_rng([spec.seed, index])
    n = spec.rows_per_day
    x, colour = _inputs(spec, index, n, rng)
    labels = concepts.labels(x, colour, _concept_of_rows(spec, index, n, rng))
    flip = rng.random(n) < spec.label_noise
    labels[flip] = rng.integers(0, spec.classes, flip.sum())
    seconds = np.sort(rng.integers(0, 86_400, n))
    start = dt.datetime.combine(spec.day(index), dt.time(), tzinfo=dt.UTC)
    return pl.DataFrame({
        "ts": [(start + dt.timedelta(seconds=int(s))).strftime("%Y-%m-%dT%H:%M:%SZ") for s in seconds],
        **{name: np.round(x[:, i], 4) for i, name in enumerate(NUMERIC)},
        "colour": [COLOURS[c] for c in colour],
        "y": labels,
    })


def dataset_yaml(spec: StreamSpec) -> dict:
    """The minimal contract a new user writes: timestamp, label, classes, features, first day."""
    return {
        "name": spec.name,
        "source": {"kind": "landing", "landing_dir": "landing"},
        "columns": {"timestamp": "ts", "label": "y"},
        "classes": list(range(spec.classes)),
        "features": [*({"name": n, "type": "numeric"} for n in NUMERIC), {"name": "colour", "type": "categorical"}],
        "partitions": {"start_date": spec.start.isoformat()},
    }


def write_stream(spec: StreamSpec, out: Path) -> Path:
    """The stream's folder under ``out``; returns the path of its dataset YAML."""
    folder = out / spec.name
    (folder / "landing").mkdir(parents=True, exist_ok=True)
    concepts = _Concepts(np.random.default_rng([spec.seed, 10_000]), spec.classes)
    for index in range(spec.days):
        generate_day(spec, index, concepts).write_csv(folder / "landing" / f"{spec.day(index).isoformat()}.csv")
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump(dataset_yaml(spec), sort_keys=False))
    meta = {**asdict(spec), "start": spec.start.isoformat(), "events": [d.isoformat() for d in spec.events]}
    (folder / "events.json").write_text(json.dumps(meta, indent=2))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--days", type=int, help="shorten every stream to this many days")
    parser.add_argument("names", nargs="*", help=f"streams to write (default: all): {', '.join(STREAMS)}")
    args = parser.parse_args(argv)
    for name in args.names or STREAMS:
        spec = STREAMS[name] if args.days is None else shortened(STREAMS[name], args.days)
        print(write_stream(spec, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
