"""Searching the teacher's LightGBM parameters on a full retrain: Optuna's TPE, warm-started, pruned, bounded.

Each trial trains a teacher on the train split with parameters from ``tuning.teacher``'s ranges and
is judged on the validation split only (the test split stays untouched): by the weighted multi-class
log-loss at its early-stopping iteration. Log-loss rather than macro-F1 because it is what early
stopping already minimizes (a trial's stopping point and its score agree), it is continuous on a
small validation split where macro-F1 moves in steps of a few rows and ties (TPE learns nothing from
ties), LightGBM computes it every iteration for free (the pruning reads it), and the student
distils the teacher's probabilities, not only its argmax. ``benchmarks/teacher_search.py`` measures
whether a better validation log-loss carries over to the test macro-F1.

- Warm start: trial 0 of every search is the production teacher's parameters (else the YAML's),
  enqueued, so a re-tune never starts from nothing and the kept teacher is never worse on
  validation than the one it replaces would be if retrained on the same rows. The next trials are
  the YAML's parameters (after a change of the label rule, parameters tuned on the old rule did
  worse than the YAML's on every generated gradual stream: RESULTS.md), then the best of the
  study's last ``EARLIER_SEARCHES`` searches.
- Pruning: optuna-integration (``LightGBMPruningCallback``) is not installed; ``_report`` is the
  same small callback: it reports the validation log-loss every ``REPORT_EVERY`` iterations and
  raises ``optuna.TrialPruned`` when ``trial.should_prune()``. It reports the best loss so far,
  not the current one: a fast learning rate overfits after its best iteration, which early
  stopping forgives, and so does the pruner (``_MedianPruner``).
- Budget: ``trials`` or ``budget_seconds``, whichever comes first (``study.optimize``'s timeout;
  a trial under way finishes).
- History: one study per dataset persists (``pipeline.studies``); each search adds its trials to it
  and starts from its earlier searches' best parameters (above). The search itself runs in a study
  of its own, in memory: the sampler and the pruner compare only values scored on these rows. Measured
  (``benchmarks/teacher_search.py``, RESULTS.md): with TPE reading the whole study after a drift,
  the earlier week's values (another scale: the new week's rows are easier or harder) decided what
  it sampled, and the re-tune reached a fresh search's best in 3 of 9 runs.
The best trial's teacher is kept as trained (training is deterministic: no retrain).
"""

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import optuna
import polars as pl

from pipeline import studies
from pipeline.dataset import SEARCHED_TEACHER_PARAMS, DatasetConfig, TeacherSearchSpec, TeacherSpec
from pipeline.teacher import Teacher, teacher_preprocessing, train_teacher
from pipeline.training_set import SPLIT, TRAIN, VALIDATION

OBJECTIVE = "multi_logloss"
"""LightGBM's name of the validation metric each trial minimizes (see the module's docstring)."""
SEARCH = "teacher"
RUN, WARM_START = "run", "warm_start"
"""User attributes of a trial: the search it belongs to, and where an enqueued warm start comes from."""
EARLIER_SEARCHES = 2
"""Searches of the study whose best parameters a new search re-tries after the production ones."""
REPORT_EVERY = 10
"""Iterations between two reports of a trial's validation loss."""
STARTUP_TRIALS = 5
"""Trials (warm starts included) before TPE models the results; the others are drawn at random."""
PRUNE_AFTER_TRIALS = 3
"""Completed trials of this search before any other trial may be pruned."""
LOG_SCALE = frozenset({"learning_rate", "lambda_l2"})
MIN_TRIALS_FOR_IMPORTANCE = 4
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


@dataclass
class TeacherSearch:
    """What a search found and how: the kept teacher, its parameters and this search's trials."""

    teacher: Teacher
    params: dict
    """The kept teacher's ``TeacherSpec``, as trained."""
    chosen_trial: int
    warm_starts: list[dict]
    """The enqueued first trials: each one's ``source`` (production, configured, an earlier search) and parameters."""
    trials: list[dict]
    importances: dict[str, float]
    study: str
    storage: str
    study_trials: int
    """Trials in the study after this search, earlier retrains' included."""
    seconds: float
    budget: dict
    """The trials and seconds the search was allowed."""

    @property
    def chosen_warm_start(self) -> str | None:
        """Where the chosen parameters come from when a warm start won (None: a proposal of this search)."""
        return next(t["warm_start"] for t in self.trials if t["number"] == self.chosen_trial)

    @property
    def reason(self) -> str:
        chosen = next(t for t in self.trials if t["number"] == self.chosen_trial)
        how = f"a warm start ({chosen['warm_start']} parameters)" if chosen["warm_start"] else "a TPE proposal"
        counts = {s: sum(t["state"] == s for t in self.trials) for s in ("complete", "pruned")}
        return (f"trial {self.chosen_trial}, {how}: validation {OBJECTIVE} {chosen['value']:.4f}, the lowest of "
                f"{counts['complete']} completed trials ({counts['pruned']} pruned) in {self.seconds:.1f} s; "
                f"study {self.study} holds {self.study_trials} trials of earlier searches and this one")

    def history(self) -> list[dict]:
        """Each trial of this search with the best value so far: the optimization history."""
        best, rows = math.inf, []
        for t in self.trials:
            if t["value"] is not None:
                best = min(best, t["value"])
            rows.append({"trial": t["number"], "value": t["value"], "best": None if math.isinf(best) else best})
        return rows

    def to_json(self) -> dict:
        return {"objective": f"validation {OBJECTIVE}", "chosen_trial": self.chosen_trial, "reason": self.reason,
                "chosen_warm_start": self.chosen_warm_start, "params": self.params, "warm_starts": self.warm_starts,
                "study": self.study, "storage": self.storage, "study_trials": self.study_trials,
                "seconds": self.seconds, "budget": self.budget, "importances": self.importances, "trials": self.trials}


class _MedianPruner(optuna.pruners.BasePruner):
    """Optuna's median rule, except that a completed trial that stopped earlier counts with its final
    best (``optuna.pruners.MedianPruner`` leaves it out, and a slow trial would be judged against the
    few that ran as long): a trial whose best validation loss by a step is above the median of the
    completed trials' by that step stops. Never a warm start, never before ``warmup`` iterations."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.curves: list[dict[int, float]] = []

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.warmup or trial.user_attrs.get(WARM_START) or len(self.curves) < PRUNE_AFTER_TRIALS:
            return False
        peers = [min(v for s, v in curve.items() if s <= step) for curve in self.curves if min(curve, default=step + 1) <= step]
        return len(peers) >= PRUNE_AFTER_TRIALS and trial.intermediate_values[step] > float(np.median(peers))


def _report(trial: optuna.Trial, curve: dict[int, float]) -> Callable[[lgb.callback.CallbackEnv], None]:
    """The pruning callback: the best validation loss so far to the trial (and ``curve``) every
    ``REPORT_EVERY`` iterations."""

    def callback(env: lgb.callback.CallbackEnv) -> None:
        step = env.iteration + 1
        if step % REPORT_EVERY:
            return
        value = min(next(entry[2] for entry in env.evaluation_result_list or () if entry[1] == OBJECTIVE),
                    min(curve.values(), default=math.inf))
        curve[step] = value
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"best validation {OBJECTIVE} {value:.4f} by iteration {step} is above the median")

    return callback


def search_space(spec: TeacherSearchSpec) -> dict[str, tuple[float, float]]:
    return {name: getattr(spec, name) for name in SEARCHED_TEACHER_PARAMS}


def _suggest(trial: optuna.Trial, spec: TeacherSearchSpec) -> dict:
    params: dict = {}
    for name, (low, high) in search_space(spec).items():
        if isinstance(low, int) and isinstance(high, int):
            params[name] = trial.suggest_int(name, low, high)
        else:
            params[name] = trial.suggest_float(name, low, high, log=name in LOG_SCALE)
    return params


def clipped(params: dict, spec: TeacherSearchSpec) -> dict:
    """``params``' searched values moved into the search space (a warm start from outside it, e.g. no
    L2 regularisation on a log scale, starts from its nearest edge)."""
    return {name: type(low)(min(max(params[name], low), high)) for name, (low, high) in search_space(spec).items()}


def _with(base: TeacherSpec, params: dict) -> TeacherSpec:
    return TeacherSpec.model_validate({**base.model_dump(), **params})


def _trial_row(trial: optuna.trial.FrozenTrial) -> dict:
    complete = trial.state == optuna.trial.TrialState.COMPLETE  # a pruned trial's value is its last report
    return {"number": trial.number, "state": trial.state.name.lower(), "value": trial.value if complete else None,
            "warm_start": trial.user_attrs.get(WARM_START), "params": trial.params,
            "best_iteration": trial.user_attrs.get("best_iteration"), "last_step": trial.last_step,
            "seconds": round(trial.duration.total_seconds(), 3) if trial.duration else None}


def importances(trials: list[optuna.trial.FrozenTrial], seed: int) -> dict[str, float]:
    """fANOVA importance of each parameter over this search's completed trials; empty when they are
    too few (or did not vary) to say."""
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    view = optuna.create_study(direction="minimize")
    view.add_trials(complete)
    try:
        found = optuna.importance.get_param_importances(view, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
    except (ValueError, RuntimeError):
        return {}
    return {name: round(float(value), 4) for name, value in found.items()}


def warm_starts(production: dict | None, configured: dict, earlier: list[optuna.trial.FrozenTrial],
                spec: TeacherSearchSpec) -> list[dict]:
    """The trials a search starts with: the production parameters, the configured ones, then the best
    of each of the study's last ``EARLIER_SEARCHES`` searches (``earlier``: the study's completed
    trials), each clipped into the search space, none twice."""
    searches: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for trial in earlier:
        searches.setdefault(trial.user_attrs.get(RUN, ""), []).append(trial)
    latest = sorted(searches.values(), key=lambda ts: max(t.number for t in ts), reverse=True)[:EARLIER_SEARCHES]
    candidates = [*([("production", production)] if production else []), ("configured", configured)]
    for trials in latest:
        best = min(trials, key=lambda t: t.value if t.value is not None else math.inf)
        when = best.datetime_complete.date().isoformat() if best.datetime_complete else "?"
        candidates.append((f"best of the search of {when}", best.params))
    starts: list[dict] = []
    for source, params in candidates:
        if all(clipped(params, spec) != s["params"] for s in starts):
            starts.append({"source": source, "params": clipped(params, spec)})
    return starts


def search_teacher(training_set: pl.DataFrame, config: DatasetConfig, production: dict | None = None,
                   storage_url: str | None = None) -> TeacherSearch:
    """The best teacher of a search on ``training_set`` (see the module's docstring). ``production``:
    the production teacher's searched parameters (``pipeline.teacher.production_params``), the first warm start (None:
    the YAML's come first, ``warm_starts``). ``storage_url``: the study's database (``pipeline.studies``); None keeps
    it in memory. Reading and writing the study take turns on a SQLite file (``studies.exclusive``)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started, spec, base, seed = time.perf_counter(), config.training.tuning.teacher, config.training.teacher, config.training.seed
    name, run = studies.study_name(config.name, SEARCH), uuid.uuid4().hex
    with studies.exclusive(storage_url):  # opening the storage creates its tables on first use
        history = optuna.create_study(study_name=name, storage=studies.storage(storage_url), direction="minimize", load_if_exists=True)
        earlier = history.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    starts = warm_starts(production, base.model_dump(), earlier, spec)
    pruner = _MedianPruner(warmup=base.early_stopping_rounds)
    study = optuna.create_study(direction="minimize", pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, multivariate=True))
    for start in starts:
        study.enqueue_trial(start["params"], user_attrs={WARM_START: start["source"]})
    objective = _Objective(training_set, config, run, pruner)
    study.optimize(objective, n_trials=spec.trials, timeout=spec.budget_seconds)  # its first trials are never pruned
    mine = study.get_trials(deepcopy=False, states=FINISHED)  # not the warm starts the budget left waiting
    with studies.exclusive(storage_url):
        history.add_trials(mine)
        total = len(history.get_trials(deepcopy=False))
    return TeacherSearch(
        teacher=objective.best_teacher, params=_with(base, objective.best_params).model_dump(mode="json"),
        chosen_trial=objective.best_trial, warm_starts=starts, trials=[_trial_row(t) for t in mine],
        importances=importances(mine, seed), study=name, storage=studies.shown(storage_url), study_trials=total,
        seconds=round(time.perf_counter() - started, 3), budget={"trials": spec.trials, "seconds": spec.budget_seconds})


class _Objective:
    """A trial: a teacher trained on the train split with the trial's parameters, its validation loss
    reported for pruning; the best teacher of this search is kept."""

    def __init__(self, training_set: pl.DataFrame, config: DatasetConfig, run: str, pruner: _MedianPruner):
        self.train = training_set.filter(pl.col(SPLIT) == TRAIN)
        self.validation = training_set.filter(pl.col(SPLIT) == VALIDATION)
        self.preprocessing = teacher_preprocessing(self.train, config)
        self.config, self.run, self.pruner = config, run, pruner
        self.best_value, self.best_trial, self.best_params = math.inf, -1, dict[str, float]()
        self._best_teacher: Teacher | None = None

    @property
    def best_teacher(self) -> Teacher:
        if self._best_teacher is None:  # a search's first trials are never pruned: one completes, or an error was raised
            raise RuntimeError("no trial of this search completed")
        return self._best_teacher

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(RUN, self.run)
        params = _suggest(trial, self.config.training.tuning.teacher)
        curve: dict[int, float] = {}
        teacher = train_teacher(self.train, self.validation, self.preprocessing, self.config.classes,
                                _with(self.config.training.teacher, params), self.config.training.seed,
                                callbacks=[_report(trial, curve)])
        value = float(teacher.booster.best_score["valid_0"][OBJECTIVE])
        trial.set_user_attr("best_iteration", teacher.booster.best_iteration)
        self.pruner.curves.append(curve)
        if value < self.best_value:
            self.best_value, self.best_trial, self.best_params, self._best_teacher = value, trial.number, params, teacher
        return value
