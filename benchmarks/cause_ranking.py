"""Is the drifting input named first? (``python -m benchmarks.cause_ranking``, issue 19).

Ten scenarios on the generated streams' inputs and label rules (``examples.streams``): each trains the
teacher on a stationary week, then moves exactly one input on a later day (a numeric mean shift or
scale change, or a category becoming common) while the label rule stays, and ranks the inputs by the
drift report's attribution drift (``pipeline.causes.attribution_drift``, with the report's sample
sizes). A scenario passes when the moved input is ranked first. Scenarios differ in seed (so in the
label rule's weights), class count, the input moved and how far.
"""

import argparse
import datetime as dt
import time
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from benchmarks.results import machine
from examples.streams import COLOURS, NUMERIC, _Concepts
from pipeline.causes import attribution_drift, reference_contributions
from pipeline.dataset import EstimateSpec, TeacherSpec
from pipeline.encoding import fit_preprocessing
from pipeline.teacher import train_teacher

CATEGORICAL = "colour"
BASE_COLOURS = np.array([0.4, 0.3, 0.25, 0.05])


@dataclass(frozen=True)
class Scenario:
    feature: str
    how: str
    """``shift`` (mean + size sd), ``scale`` (sd x size) or ``common`` (the rare colour takes share ``size``)."""
    size: float
    seed: int
    classes: int = 2


SCENARIOS = (
    Scenario("x1", "shift", 1.5, seed=11),
    Scenario("x2", "shift", -1.5, seed=12),
    Scenario("x3", "scale", 2.0, seed=13),
    Scenario("x4", "shift", 1.0, seed=14, classes=3),
    Scenario(CATEGORICAL, "common", 0.5, seed=15),
    Scenario("x1", "scale", 1.8, seed=16, classes=3),
    Scenario("x2", "shift", 2.0, seed=17, classes=3),
    Scenario("x3", "shift", -1.0, seed=18),
    Scenario("x4", "scale", 2.5, seed=19),
    Scenario(CATEGORICAL, "common", 0.35, seed=20, classes=3),
)


def rows(scenario: Scenario, concepts: _Concepts, n: int, rng: np.random.Generator, drifted: bool) -> pl.DataFrame:
    """``n`` labelled rows as the teacher reads them (the label rule never changes)."""
    x = rng.normal(0, 1, (n, len(NUMERIC)))
    colour_p = BASE_COLOURS
    if drifted and scenario.feature in NUMERIC:
        column = NUMERIC.index(scenario.feature)
        x[:, column] = x[:, column] + scenario.size if scenario.how == "shift" else x[:, column] * scenario.size
    elif drifted:
        colour_p = np.append(BASE_COLOURS[:3] / BASE_COLOURS[:3].sum() * (1 - scenario.size), scenario.size)
    colour = rng.choice(len(COLOURS), size=n, p=colour_p)
    labels = concepts.labels(x, colour, np.zeros(n, dtype=int))
    return pl.DataFrame({
        **{name: x[:, i] for i, name in enumerate(NUMERIC)}, "hour": rng.integers(0, 24, n).astype(float),
        CATEGORICAL: [COLOURS[c] for c in colour], "label": [str(c) for c in labels], "weight": np.ones(n),
    })


def rank_of_moved(scenario: Scenario, spec: EstimateSpec, rows_per_day: int) -> tuple[int, pl.DataFrame, int, float]:
    """The moved input's rank, the ranking, the teacher's trees and the seconds the day's side took."""
    rng = np.random.default_rng(scenario.seed)
    concepts = _Concepts(np.random.default_rng([scenario.seed, 10_000]), scenario.classes)
    classes = tuple(str(c) for c in range(scenario.classes))
    train, validation = (rows(scenario, concepts, rows_per_day * days, rng, drifted=False) for days in (5, 1))
    reference = rows(scenario, concepts, rows_per_day, rng, drifted=False)
    day = rows(scenario, concepts, rows_per_day, rng, drifted=True)
    preprocessing = fit_preprocessing(train, [*NUMERIC, "hour"], [CATEGORICAL])
    teacher = train_teacher(train, validation, preprocessing, classes, TeacherSpec(), seed=scenario.seed)
    before = reference_contributions(teacher, reference, spec.contribution_rows)
    started = time.perf_counter()
    ranking = attribution_drift(teacher, before, day, spec.contribution_rows)
    seconds = time.perf_counter() - started
    return ranking["feature"].to_list().index(scenario.feature) + 1, ranking, teacher.booster.num_trees(), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=2000)
    parser.add_argument("--seed-offset", type=int, default=0, help="other label rules and draws: scenarios not tuned on")
    args = parser.parse_args(argv)
    spec = EstimateSpec()
    print(f"{dt.date.today()} · {machine()} · `python -m benchmarks.cause_ranking --rows-per-day {args.rows_per_day} --seed-offset {args.seed_offset}`")
    print("| # | moved input | how | size | classes | rank of the moved input | first three (share of reference attribution) | trees | day's side ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    first = 0
    for number, scenario in enumerate((replace(s, seed=s.seed + args.seed_offset) for s in SCENARIOS), 1):
        rank, ranking, trees, seconds = rank_of_moved(scenario, spec, args.rows_per_day)
        first += rank == 1
        top = ", ".join(f"{r['feature']} {r['share']:.2f}" for r in ranking.head(3).iter_rows(named=True))
        print(f"| {number} | {scenario.feature} | {scenario.how} | {scenario.size:g} | {scenario.classes} | {rank} | {top} | {trees} | {seconds * 1000:.0f} |")
    print(f"\nRanked first in {first} of {len(SCENARIOS)} scenarios.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
