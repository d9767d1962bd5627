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
- ``autocorrelated``: like an electricity market's half-hourly prices going up or down (elec2), the
  label is a latent regime that persists over consecutive rows (a Markov chain that stays with
  ``regime_stay``) and the inputs show it only in part (the rule maps them to the regime on
  ``rule_agreement`` of the rows), so the previous row's label (the ``no_change`` baseline) says
  more than the inputs; the rule that ties inputs to regimes changes on ``drift_day``. Its rows come
  at a fixed interval (half-hourly at 48 a day), so time order is the chain's order.
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

Kind = Literal["sudden", "gradual", "recurring", "covariate", "wandering", "mixing", "autocorrelated", "stationary"]
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
    regime_stay: float = 0.9
    """``autocorrelated``: the chance that a row keeps the previous row's regime (runs of 1 / (1 - stay)
    rows on average): what the previous label knows, and a model of the inputs alone does not."""
    rule_agreement: float = 0.8
    """``autocorrelated``: the share of rows whose inputs the label rule maps to their regime (the others
    look like another class): about the most a model of the inputs alone can score."""
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
    StreamSpec("autocorrelated", "autocorrelated", rows_per_day=500, seed=9),
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
    StreamSpec("heldout_autocorrelated_small", "autocorrelated", rows_per_day=48, days=60, drift_day=38, seed=108),
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
    if spec.kind in ("sudden", "autocorrelated"):
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


def _regimes(spec: StreamSpec, index: int) -> np.ndarray:
    """The latent regime of each row of day ``index`` in an autocorrelated stream: one Markov chain over
    the whole stream, so it runs on across midnight. A row keeps the previous row's regime with
    ``regime_stay``, else moves to another class at random. Each draw has its own generator and the
    chain is drawn up to this day only, so a shortened stream has the same regimes."""
    rows = (index + 1) * spec.rows_per_day
    stays = np.random.default_rng([spec.seed, 40_000]).random(rows) < spec.regime_stay
    steps = np.random.default_rng([spec.seed, 40_001]).integers(1, spec.classes, rows)
    first = np.random.default_rng([spec.seed, 40_002]).integers(spec.classes)
    chain = (first + np.cumsum(np.where(stays, 0, steps))) % spec.classes
    return chain[index * spec.rows_per_day:]


def _inputs_showing(spec: StreamSpec, index: int, regimes: np.ndarray, concept: int, concepts: _Concepts,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Inputs that show each row's regime only in part: the class they should look like is the regime
    on ``rule_agreement`` of the rows (else another class at random), and inputs are drawn, as every
    stream draws them, until the day's rule (``concept``) maps them to that class. A new rule thus moves
    the inputs a little too (they are drawn to fit it), as a change of the market's rules would."""
    n, classes = len(regimes), spec.classes
    shown = rng.random(n) < spec.rule_agreement
    looks = np.where(shown, regimes, (regimes + rng.integers(1, classes, n)) % classes)
    x, colour = np.empty((n, len(NUMERIC))), np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        drawn_x, drawn_colour = _inputs(spec, index, 4 * n, rng)
        labelled = concepts.labels(drawn_x, drawn_colour, np.full(4 * n, concept))
        left = []
        for c in range(classes):
            rows = todo[looks[todo] == c]
            found = np.flatnonzero(labelled == c)[:len(rows)]
            x[rows[:len(found)]], colour[rows[:len(found)]] = drawn_x[found], drawn_colour[found]
            left.append(rows[len(found):])
        todo = np.sort(np.concatenate(left))
    return x, colour


def _rows(spec: StreamSpec, index: int, concepts: _Concepts, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """A day's inputs and labels before label noise. In every kind but ``autocorrelated`` the rule labels
    the inputs; there the label is the regime and the inputs are drawn to fit it in part."""
    n = spec.rows_per_day
    if spec.kind == "autocorrelated":
        labels = _regimes(spec, index)
        concept = int(_concept_of_rows(spec, index, n, rng)[0])  # one rule a day, as in ``sudden``
        return *_inputs_showing(spec, index, labels, concept, concepts, rng), labels
    x, colour = _inputs(spec, index, n, rng)
    return x, colour, concepts.labels(x, colour, _concept_of_rows(spec, index, n, rng))


def _seconds(spec: StreamSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """The rows' seconds into their day: at random, or for ``autocorrelated`` at a fixed interval like a
    market's half-hourly prices, so no two rows tie and the time order is the regime chain's."""
    if spec.kind == "autocorrelated":
        return np.arange(n) * 86_400 // n
    return np.sort(rng.integers(0, 86_400, n))


def generate_day(spec: StreamSpec, index: int, concepts: _Concepts) -> pl.DataFrame:
    """One day's rows: a timestamp, the features and the label (``y``), in time order."""
    rng = np.random.default_rng([spec.seed, index])
    n = spec.rows_per_day
    x, colour, labels = _rows(spec, index, concepts, rng)
    flip = rng.random(n) < spec.label_noise
    labels[flip] = rng.integers(0, spec.classes, flip.sum())
    seconds = _seconds(spec, n, rng)
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
