"""False alarms of the data-drift tests on a small stationary stream (48 rows a day), as the drift
report ran them before pooling (a one-day reference against the day's 48 rows) and as it runs them
now (the reference and the current rows sized by ``pipeline.sample_sizes`` / ``drift.pool_newest``).

Two stationary streams of 3 numeric and 2 categorical features: rows independent of each other
(``iid``), and rows sharing a day-level effect (``daily``: each day's means and category mix wobble
around fixed values, as a market's or a site's days do). Run by hand: ``python -m benchmarks.small_days``.
"""

import datetime as dt

import numpy as np
import polars as pl

from pipeline import drift
from pipeline.dataset import TIMESTAMP, load_dataset_config
from pipeline.sample_sizes import sample_sizes

ROWS_PER_DAY, WARMUP, DAYS, WINDOW = 48, 7, 30, 7
NUMERIC, CATEGORICAL = ["price", "volume", "trades"], ["session", "sector"]
SESSIONS, SECTORS = ["a", "b", "c"], list("abcdefgh")
SESSION_MIX, SECTOR_MIX = np.array([0.5, 0.3, 0.2]), np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02])
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def stream(daily_effect: bool, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for d in range(WARMUP + DAYS):
        shift = rng.normal(0, 1.5, 3) if daily_effect else np.zeros(3)
        mix = (lambda p: rng.dirichlet(p * 60)) if daily_effect else (lambda p: p)
        n = ROWS_PER_DAY
        frames.append(pl.DataFrame({
            TIMESTAMP: [START + dt.timedelta(days=d, minutes=30 * i) for i in range(n)],
            "price": rng.normal(100 + shift[0], 5, n), "volume": rng.lognormal(3 + shift[1] / 10, 1, n),
            "trades": rng.poisson(4 + abs(shift[2]) / 3, n).astype(float),
            "session": rng.choice(SESSIONS, n, p=mix(SESSION_MIX)), "sector": rng.choice(SECTORS, n, p=mix(SECTOR_MIX)),
        }))
    return pl.concat(frames)


def alarm_days(frame: pl.DataFrame, pooled: bool, detector: drift.Detector, config) -> tuple[int, int]:
    """(days alarming, days tested) over the DAYS after a model trained on the first WINDOW days."""
    spec = config.feedback.drift if pooled else config.feedback.drift.model_copy(update={"min_rows": 2})
    trained_through = (START + dt.timedelta(days=WARMUP - 1)).date()
    day_of = pl.col(TIMESTAMP).dt.date()
    reference_days = sample_sizes(ROWS_PER_DAY, ROWS_PER_DAY, config).reference_days if pooled else 1
    window = [trained_through - dt.timedelta(days=k) for k in range(reference_days)]
    reference = frame.filter(day_of.is_in(window))
    alarms = tested = 0
    for k in range(1, DAYS + 1):
        day = trained_through + dt.timedelta(days=k)
        current, _ = pool_or_day(frame, day, trained_through, spec, config, pooled)
        report = drift.data_drift(reference, current, NUMERIC, CATEGORICAL, spec, detector)
        tested += bool(report["tested"].all())
        alarms += bool(report["drifted"].any())
    return alarms, tested


def pool_or_day(frame, day, trained_through, spec, config, pooled):
    if pooled:
        return drift.pool_newest(frame, pl.col(TIMESTAMP).dt.date(), day, trained_through, spec.min_rows,
                                 config.feedback.concept.pool_days)
    return frame.filter(pl.col(TIMESTAMP).dt.date() == day), 1


def main() -> None:
    config = load_dataset_config("config/broadband.yaml")
    config = config.model_copy(update={"partitions": config.partitions.model_copy(update={"window_days": WINDOW})})
    print(f"{ROWS_PER_DAY} rows a day, {DAYS} stationary days after a {WARMUP}-day training window")
    for name in ("scipy", "alibi"):
        detector = drift.make_detector(name)
        for daily in (False, True):
            for seed in range(3):
                frame = stream(daily, seed)
                before, after = alarm_days(frame, False, detector, config), alarm_days(frame, True, detector, config)
                print(f"{name:5} {'daily' if daily else 'iid':5} seed {seed}: alarm days before {before[0]}/{DAYS}, "
                      f"after {after[0]}/{DAYS} (tested on {after[1]} days)")


if __name__ == "__main__":
    main()
