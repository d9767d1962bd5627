"""Federated training of the student across sites: FedAvg, FedProx and site-level differential privacy.

A site trains the student from the global weights on its own rows only (``local_update``) and sends
back its weights, its sample count and a report of aggregate numbers; the aggregator
(``aggregate``) sees nothing else. Weights travel as numpy ``.npz`` archives (plain arrays, loaded
without pickle), so the bytes a round moves are the archives' sizes.

Differential privacy is DP-FedAvg (McMahan et al., 2018) at site level: every site's update (its
weights minus the global ones) is clipped to an L2 norm ``C``, the K sites' clipped updates are
averaged with equal weights (so one site moves the mean by at most ``C / K``), Gaussian noise of
standard deviation ``z * C / K`` is added, and epsilon comes from the Renyi-DP of the Gaussian
mechanism, ``alpha / (2 z^2)`` per round, composed over the day's rounds (every site takes part in
every round: no sampling amplification is claimed). A site that takes part on many days spends
more: the epsilon reported is per day. With a handful of sites, noise that buys a small epsilon
swamps the update (``benchmarks/federated.py`` measures both ends).

Layout of the files (``FederatedStore``): each site's rows under ``sites/<site>/``, a site's update
per day and round under ``artifacts/site_update/``, the global weights per day and round under
``artifacts/federated_student/``.
"""

import datetime as dt
import json
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl
import torch
from sklearn.metrics import accuracy_score, f1_score

from pipeline import atomic, sources
from pipeline.dataset import TIMESTAMP, DatasetConfig, FederatedSpec, PrivacySpec
from pipeline.drift import data_drift, make_detector, monitored_features
from pipeline.student import (
    StudentData,
    StudentMLP,
    Weights,
    check_compatible,
    encoding_fingerprint,
    load_weights,
    new_model,
    student_data,
    train_epochs,
    transfer_set,
    validation_loss,
    weights_of,
)
from pipeline.teacher import Teacher
from pipeline.training_set import SPLIT, TEST, VALIDATION

SEED_START = "seed"
"""A round-one site update that started from the seeded initial weights (no earlier global fits)."""
MIN_SITES = 2
"""FedAvg over one site is that site's own training: federation needs at least two."""


def dataset_sites(config: DatasetConfig) -> tuple[str, ...]:
    """The sites federated training spans: ``partitions.sites`` when declared; for a landing dataset
    with a site column, the values of that column in the landing files; else ``config.sites`` (the
    simulator's sites, or the one site of a dataset without a site column)."""
    column = config.columns.site
    if config.partitions.sites or config.source.kind != "landing" or column is None or config.landing_dir is None:
        return config.sites
    return landing_sites(config.landing_dir, column, config.source.csv_separator)


def landing_sites(landing_dir: Path, column: str, csv_separator: str = ",") -> tuple[str, ...]:
    """The distinct non-empty values of ``column`` (stripped, as cleaning strips them) in the landing
    files, sorted. Only that column is read. A file that cannot be read is skipped with a warning
    naming it: ingesting its day reports the defect in full."""
    found: set[str] = set()
    for landed in sources.list_landing_files(landing_dir):
        path = landed.path
        scan = (pl.scan_csv(path, separator=csv_separator, infer_schema=False) if path.suffix.lower() == ".csv"
                else pl.scan_parquet(path))
        try:
            values = scan.select(pl.col(column).cast(pl.String).str.strip_chars().unique()).collect()[column]
        except Exception as exc:  # polars raises many types for a broken file; all mean "unreadable"
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            warnings.warn(f"{path}: its sites were not read ({reason})", stacklevel=2)
            continue
        found.update(v for v in values if v)
    return tuple(sorted(found))


def too_few_sites(sites: tuple[str, ...]) -> str | None:
    """Why federated training has nothing to do with these sites, or None when it has."""
    if len(sites) >= MIN_SITES:
        return None
    return (f"federated training needs at least {MIN_SITES} sites; this dataset has {len(sites)}"
            f"{': ' + ', '.join(sites) if sites else ''}, so there is nothing to federate")


def save_weights(path: Path, weights: Weights) -> int:
    """Write ``weights`` atomically; returns the bytes written (what travels over the network)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **weights)
    return path.stat().st_size


def read_weights(path: Path) -> Weights:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


@dataclass(frozen=True)
class FederatedStore:
    """Where sites keep their rows and where updates and global weights are exchanged."""

    root: Path

    def site_rows(self, site: str, day: str) -> Path:
        return self.root / "sites" / site / "training_set" / f"{day}.parquet"

    def read_site_rows(self, site: str, day: str) -> pl.DataFrame:
        """The site's rows, opened through Python so an audit hook sees the read (the privacy test)."""
        with open(self.site_rows(site, day), "rb") as fh:
            return pl.read_parquet(fh)

    def update_dir(self, day: str, site: str, round_: int) -> Path:
        return self.root / "artifacts" / "site_update" / day / site / f"round-{round_}"

    def global_dir(self, day: str, round_: int) -> Path:
        return self.root / "artifacts" / "federated_student" / day / f"round-{round_}"

    def rounds_done(self, day: str) -> int:
        """The newest round of ``day`` that is complete: its ``round.json`` is written after the global
        weights, so a round being written is not counted (0: none yet)."""
        folder = self.root / "artifacts" / "federated_student" / day
        found = [int(m.group(1)) for p in folder.glob("round-*") if (m := re.fullmatch(r"round-(\d+)", p.name))
                 and (p / ROUND_FILE).exists()]
        return max(found, default=0)

    def latest_global(self, until: str, inclusive: bool, encoding: str) -> Path | None:
        """The final global weights of the newest day up to ``until`` (included or not) that were
        trained under ``encoding`` (``student.encoding_fingerprint``)."""
        folder = self.root / "artifacts" / "federated_student"
        days = sorted(p.name for p in folder.glob("*") if p.is_dir() and (p.name <= until if inclusive else p.name < until))
        for day in reversed(days):
            done = self.rounds_done(day)
            if done and read_json(self.global_dir(day, done) / ROUND_FILE).get("encoding") == encoding:
                return self.global_dir(day, done) / GLOBAL_FILE
        return None

    def sites_with_update(self, day: str, round_: int, sites: tuple[str, ...]) -> list[str]:
        return [s for s in sites if (self.update_dir(day, s, round_) / REPORT_FILE).exists()]


GLOBAL_FILE, UPDATE_FILE, REPORT_FILE, ROUND_FILE = "global.npz", "update.npz", "report.json", "round.json"


@dataclass(frozen=True)
class LocalUpdate:
    weights: Weights
    samples: int
    report: dict


def local_update(site: str, round_: int, site_rows: pl.DataFrame, teacher: Teacher, start: Weights,
                 config: DatasetConfig) -> LocalUpdate:
    """One site's round: the student from ``start`` (the global weights) trained ``local_epochs`` on
    the site's transfer rows with the distillation loss (and the FedProx term), validated on the
    site's validation rows. The report holds only aggregate numbers: how the received global model
    does on the site's held-out rows, and the local model's losses."""
    spec, fed = config.training.student, config.training.federated
    train = student_data(transfer_set(site_rows, spec), teacher, config, spec)
    validation = student_data(site_rows.filter(pl.col(SPLIT) == VALIDATION), teacher, config, spec)
    held_out = site_rows.filter(pl.col(SPLIT).is_in([VALIDATION, TEST]))
    model = new_model(train.x.shape[1], train.soft.shape[1], spec, config.training.seed)
    check_compatible(start, model, f"site {site}")
    load_weights(model, start)
    received = _site_scores(model, validation, held_out, teacher, config)
    history = (train_epochs(model, train, validation, spec, fed.local_epochs, config.training.seed + round_, fed.proximal_mu)
               if len(train) else [])  # a site without rows today sends its start back with no weight
    report = {
        "site": site, "round": round_, "encoding": encoding_fingerprint(teacher.preprocessing),
        "samples": len(train), "validation_rows": len(validation),
        "held_out_rows": held_out.height, "received": received,
        "local": {"validation_loss": validation_loss(model, validation, spec)}, "history": history,
    }
    return LocalUpdate(weights_of(model), len(train), report)


def _site_scores(model: StudentMLP, validation: StudentData, held_out: pl.DataFrame, teacher: Teacher,
                 config: DatasetConfig) -> dict:
    """The model's validation loss and its accuracy / macro-F1 on the site's held-out gold rows."""
    spec = config.training.student
    scores = {"validation_loss": validation_loss(model, validation, spec), "accuracy": None, "macro_f1": None}
    if held_out.height:
        data = student_data(held_out, teacher, config, spec)
        with torch.no_grad():
            predicted = model(data.x).argmax(dim=1).numpy()
        truth = data.labels.numpy()
        scores["accuracy"] = float(accuracy_score(truth, predicted))
        scores["macro_f1"] = float(f1_score(truth, predicted, average="macro", labels=range(len(config.classes)), zero_division=0))
    return scores


def site_drift(site_rows: pl.DataFrame, config: DatasetConfig) -> dict:
    """The site's newest day against its earlier days of the window, with the configured detector:
    drift seen at one site may be hidden in the fleet-wide report."""
    if site_rows.is_empty():  # the newest day of no rows is None, and comparing a Date series with it raises
        return {"drifted_features": [], "compared": "no rows at this site"}
    day = site_rows[TIMESTAMP].dt.date()
    newest = cast(dt.date, day.max())  # the rows' newest day (polars types a max as any literal)
    current, reference = site_rows.filter(day == newest), site_rows.filter(day < newest)
    if current.height == 0 or reference.height == 0:
        return {"drifted_features": [], "compared": f"{newest}: no earlier day at this site"}
    numeric, categorical = monitored_features(config)
    spec = config.feedback.drift
    table = data_drift(reference, current, numeric, categorical, spec, make_detector(spec.detector))
    return {"drifted_features": table.filter(pl.col("drifted"))["test"].to_list(),
            "max_effect": float(cast(float | None, table["effect"].max()) or 0.0), "compared": f"{newest} against the {reference.height} earlier rows"}


def seeded_weights(input_width: int, config: DatasetConfig) -> Weights:
    """The seeded initial weights: where round one starts when no earlier global model fits (every
    site and the aggregator derive the same ones)."""
    return weights_of(new_model(input_width, len(config.classes), config.training.student, config.training.seed))


def site_start(store: FederatedStore, day: str, round_: int, preprocessing: dict, config: DatasetConfig) -> tuple[str, Weights]:
    """The name (a path under the store, or ``seed``) and weights a site's round starts from: the
    previous round's global weights; in round one the newest earlier day's final ones trained under
    the same encoding, else the seeded weights."""
    path = round_start(store, day, round_, encoding_fingerprint(preprocessing))
    if path is None:
        return SEED_START, seeded_weights(preprocessing["input_width"], config)
    return str(path.relative_to(store.root)), read_weights(path)


def aggregator_start(store: FederatedStore, reports: dict[str, dict], like: Weights, config: DatasetConfig) -> tuple[str, Weights]:
    """The global weights every site of the round started from (they must agree); ``like`` is one
    site's update, whose shapes say which seeded weights a seeded start had."""
    input_width = next(a for a in like.values() if a.ndim == 2).shape[1]
    if len({r["encoding"] for r in reports.values()}) != 1:
        raise ValueError(f"the sites trained this round under different encodings (a retrain between their runs?): "
                         f"{ {site: r['encoding'] for site, r in reports.items()} }")
    starts = {r["start"] for r in reports.values()}
    if len(starts) != 1:
        raise ValueError(f"the sites started this round from different weights: "
                         f"{ {site: r['start'] for site, r in reports.items()} }; re-run the sites of this round")
    start = starts.pop()
    return start, seeded_weights(input_width, config) if start == SEED_START else read_weights(store.root / start)


def current_round(store: FederatedStore, day: str, requested: int) -> int:
    """The round a run works on: the one asked for (the sensor says), else the day's next."""
    return requested or store.rounds_done(day) + 1


def round_start(store: FederatedStore, day: str, round_: int, encoding: str) -> Path | None:
    """The global weights a round starts from: the previous round's; for round one, the newest
    earlier day's final ones under ``encoding`` (None: none yet, start seeded)."""
    if round_ == 1:
        return store.latest_global(day, inclusive=False, encoding=encoding)
    previous = store.global_dir(day, round_ - 1)
    if not (previous / ROUND_FILE).exists():
        raise FileNotFoundError(f"round {round_} of {day} starts from round {round_ - 1}'s global weights, "
                                f"which do not exist ({previous}): materialize federated_student for round {round_ - 1} first")
    if read_json(previous / ROUND_FILE).get("encoding") != encoding:
        raise ValueError(f"round {round_} of {day}: the teacher's encoding changed since round {round_ - 1} "
                         "(a retrain of the day?); the day's rounds must start again")
    return previous / GLOBAL_FILE


def next_step(store: FederatedStore, day: str, sites: tuple[str, ...], spec: FederatedSpec) -> tuple[str, int, list[str]] | None:
    """What the day's federation needs next: ``("sites", r, [sites])`` to train round r at those
    sites, ``("aggregate", r, [])`` once every site sent round r, or None when the rounds are done
    (the configured number, or converged)."""
    done = store.rounds_done(day)
    if done >= spec.rounds or (done and read_json(store.global_dir(day, done) / ROUND_FILE).get("converged")):
        return None
    sent = store.sites_with_update(day, done + 1, sites)
    missing = [s for s in sites if s not in sent]
    return ("sites", done + 1, missing) if missing else ("aggregate", done + 1, [])


@dataclass(frozen=True)
class Aggregate:
    weights: Weights
    info: dict


def aggregate(start: Weights, updates: dict[str, LocalUpdate | tuple[Weights, int]], privacy: PrivacySpec,
              seed: int | None = None) -> Aggregate:
    """FedAvg: the weights of the sites that had samples, averaged by sample count. With privacy,
    DP-FedAvg: the sites' updates clipped and averaged with equal weights (a weight that depended on
    the other sites' counts would make the sensitivity data-dependent), plus Gaussian noise of
    standard deviation ``z * C / K`` (one of K sites moves the mean by at most C / K). ``seed``
    fixes the noise for tests; by default it is drawn from the OS, as a guarantee needs. The update
    norms are not published under privacy; the sample counts and the sites' reports are outside
    the epsilon."""
    pairs = {site: (u.weights, u.samples) if isinstance(u, LocalUpdate) else u for site, u in updates.items()}
    pairs = {site: pair for site, pair in pairs.items() if pair[1] > 0}
    if not pairs:
        raise ValueError(f"no samples at any site ({sorted(updates)})")
    deltas = {site: {k: w[k] - start[k] for k in start} for site, (w, _) in pairs.items()}
    norms = {site: _norm(d) for site, d in deltas.items()}
    info: dict = {"sites": sorted(pairs), "samples": {s: n for s, (_, n) in pairs.items()}}
    if privacy.enabled:
        share = {site: 1 / len(pairs) for site in pairs}
        scale = {site: min(1.0, privacy.clip_norm / max(norms[site], 1e-12)) for site in deltas}
        sigma = privacy.noise_multiplier * privacy.clip_norm / len(pairs)
        rng = np.random.default_rng(seed)
        mean = {k: sum(share[s] * scale[s] * deltas[s][k] for s in deltas) + rng.normal(0.0, sigma, start[k].shape)
                for k in start}
        info.update(clipped_sites=sorted(s for s, v in scale.items() if v < 1.0), noise_std=sigma)
    else:
        total = sum(n for _, n in pairs.values())
        mean = {k: sum(n / total * deltas[s][k] for s, (_, n) in pairs.items()) for k in start}
        info["update_norms"] = {s: round(v, 4) for s, v in norms.items()}
    weights = {k: (start[k] + mean[k]).astype(start[k].dtype) for k in start}
    return Aggregate(weights, info)


def _norm(weights: Weights) -> float:
    return float(math.sqrt(sum(float((a.astype(np.float64) ** 2).sum()) for a in weights.values())))


RDP_ORDERS = (1.25, 1.5, 1.75, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 128, 256)


def dp_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon of ``rounds`` Gaussian mechanisms of noise multiplier ``z`` at ``delta``: Renyi-DP
    ``rounds * a / (2 z^2)`` at order ``a``, converted by ``eps = rdp + log(1/delta) / (a - 1)``,
    the best order taken."""
    return min(rounds * a / (2 * noise_multiplier ** 2) + math.log(1 / delta) / (a - 1) for a in RDP_ORDERS)


def converged(losses: Sequence[float | None], spec: FederatedSpec) -> bool:
    """The global validation losses so far (one per evaluated round) improved by less than
    ``min_improvement`` in the newest round."""
    finite = [v for v in losses if v is not None and math.isfinite(v)]
    return len(finite) >= 2 and finite[-2] - finite[-1] < spec.min_improvement


def round_summary(store: FederatedStore, day: str, round_: int, reports: dict[str, dict], result: Aggregate,
                  spec: FederatedSpec) -> dict:
    """What a round records: the global validation loss of the weights it started from (weighted by
    the sites' validation rows), the sites' local losses, bytes received, epsilon, convergence."""
    validation_rows = {s: r["validation_rows"] for s, r in reports.items()}
    start_loss = weighted_mean({s: r["received"]["validation_loss"] for s, r in reports.items()}, validation_rows)
    local_loss = weighted_mean({s: r["local"]["validation_loss"] for s, r in reports.items()}, validation_rows)
    earlier = [read_json(store.global_dir(day, r) / ROUND_FILE)["global_validation_loss"] for r in range(1, round_)]
    privacy = spec.privacy
    return {
        "round": round_, "encoding": next(iter(reports.values()))["encoding"], "global_validation_loss": start_loss, "local_validation_loss": local_loss,
        "converged": converged([*earlier, start_loss], spec),
        "bytes_received": sum(r["bytes"] for r in reports.values()),
        "epsilon": dp_epsilon(privacy.noise_multiplier, round_, privacy.delta) if privacy.enabled else None,
        "per_site": per_site(reports), "aggregation": result.info,
    }


def per_site(reports: dict[str, dict]) -> dict[str, dict]:
    """Per-site evaluation of the global weights a round started from, and per-site drift."""
    return {site: {"samples": r["samples"], "held_out_rows": r["held_out_rows"],
                   "accuracy": r["received"]["accuracy"], "macro_f1": r["received"]["macro_f1"],
                   "local_validation_loss": r["local"]["validation_loss"],
                   "drifted_features": (r.get("drift") or {}).get("drifted_features")}
            for site, r in sorted(reports.items())}


def round_curve(store: FederatedStore, day: str, through: int) -> dict[str, list[float]]:
    """The day's losses per round so far, for the learning-curve plot."""
    rounds = [read_json(store.global_dir(day, r) / ROUND_FILE) for r in range(1, through + 1)]
    return {"global model at round start": [r["global_validation_loss"] for r in rounds],
            "sites after local training": [r["local_validation_loss"] for r in rounds]}


def weighted_mean(values: dict[str, float | None], samples: dict[str, int]) -> float | None:
    known = {s: v for s, v in values.items() if v is not None and math.isfinite(v)}
    weight = sum(samples[s] for s in known)
    return sum(samples[s] * v for s, v in known.items()) / weight if weight else None


def write_json(path: Path, payload: dict) -> None:
    atomic.write_text(path, json.dumps(payload, indent=2, default=str))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
