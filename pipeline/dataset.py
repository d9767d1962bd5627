"""The dataset contract: which columns play which role, what the features are and their valid ranges.

Everything downstream of ingestion speaks the canonical names defined here (``timestamp``, ``label``,
``device_id``, ``site`` and each feature's ``name``), so a user's files with other column names run
through the same graph once their YAML maps them. The simulator is just one source of this contract.
"""

import datetime as dt
import os
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

TIMESTAMP, LABEL, DEVICE_ID, SITE = "timestamp", "label", "device_id", "site"
ROW_ID = "row_id"
HOUR_FEATURE = "hour"
"""Derived model input: the hour of day of the reading (see pipeline.features)."""
SINGLE_SITE = "all"
"""The one site of a dataset without a site column that declares no ``partitions.sites``."""


def class_name(value: object) -> str:
    """A class label as it is written in the files: YAML ``1`` is "1", YAML ``true`` is "true".

    Classes stay strings inside Evergreen; integer and boolean labels are accepted as the user
    wrote them rather than rejected for not being strings. A float is refused: ``0.5`` as a class
    is more likely a regression target than a category."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return str(value)
    raise ValueError(f"{value!r}: a class label is a string, an integer or a boolean")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoleColumns(_Strict):
    """Source column names of the roles. Every dataset has a timestamp and a label; ``id`` and
    ``site`` are optional: without a site column every row belongs to one site, without an id column
    each row is its own entity (see ``pipeline.sources.implicit_roles``)."""

    timestamp: str
    label: str
    id: str | None = None
    site: str | None = None


class FeatureSpec(_Strict):
    """One model input: its canonical name, the source column it comes from, its type and range."""

    name: str
    column: str | None = None
    type: Literal["numeric", "categorical"]
    min: float | None = None
    max: float | None = None
    history: bool = False
    """Also derive ``<name>_delta``: the value minus the device's mean over the previous days."""

    @property
    def source_column(self) -> str:
        return self.column or self.name

    @model_validator(mode="after")
    def _range_is_ordered(self) -> "FeatureSpec":
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} is above max {self.max}")
        if self.type == "categorical" and (self.min is not None or self.max is not None or self.history):
            raise ValueError(f"feature {self.name!r}: a categorical feature has no range or history")
        return self


class SourceSpec(_Strict):
    kind: Literal["simulator", "landing"] = "simulator"
    landing_dir: str | None = None
    """Folder of CSV / Parquet files; relative paths are relative to the dataset YAML."""
    csv_separator: str = ","
    timestamp_format: str | None = None
    """A strftime format (``%d/%m/%Y %H:%M``) for timestamps that are neither ISO 8601 nor epoch
    seconds / milliseconds; those two are always read."""
    timezone: str = "UTC"
    """The zone whose calendar days are the partitions; timestamps without an offset are read in it."""
    batch_rows: int = Field(200_000, ge=1)
    """Rows cleaned at a time: cleaning's peak memory grows with this, not with the day's rows."""
    validation_batch_rows: int = Field(500_000, ge=1)
    """Rows Great Expectations validates at a time: its pandas copy grows with this; its overhead
    (about half a second a batch) with the number of batches."""

    @field_validator("csv_separator")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if len(value) != 1 or value in "\"\r\n":
            raise ValueError(f"csv_separator: {value!r} must be one character, not a quote or a line break")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone: {value!r} is not an IANA time zone (e.g. 'Europe/Paris')") from exc
        return value


class PartitionSpec(_Strict):
    start_date: dt.date
    history_days: int = Field(3, ge=1)
    window_days: int = Field(14, ge=2)
    """The newest days a training set holds; each retrain chooses how many of them to learn from
    (``training.recency``)."""
    sites: tuple[str, ...] | None = None
    """The ``site`` partitions of federated training; by default the simulator's sites."""


class QualitySpec(_Strict):
    """Thresholds of the Great Expectations checks on raw data (fractions of the day's rows)."""

    max_null_fraction: float = Field(0.05, ge=0, le=1)
    min_in_range_fraction: float = Field(0.99, ge=0, le=1)
    min_unique_fraction: float = Field(0.98, ge=0, le=1)
    """(device, timestamp) pairs; both rows of a duplicated pair count as not unique."""
    min_clean_fraction: float = Field(0.5, ge=0, le=1)
    """Clean rows over raw rows less exact duplicates: a day below it fails a blocking check (a day
    that is all quarantined is a wrong export or a wrong contract, not a quiet day)."""


class SplitSpec(_Strict):
    """How labelled rows are split into train / validation / test (fractions of labelled rows).

    ``device`` puts each device's rows in one split, so test devices are never seen
    in training while every day, the newest included, is in every split: a model retrained after a
    drift learns from the post-drift labels. ``daily_time`` splits each day by time: its oldest
    labelled rows train, the next validate, the newest test; every day, the newest included, is in
    every split too, and within a day nothing is tested on that is older than what trained.
    ``time`` puts the window's oldest rows in train and its newest in test, a backtest that
    withholds exactly the freshest labels from training.
    """

    method: Literal["auto", "device", "daily_time", "time"] = "auto"
    """``auto``: by device when the dataset has an id column and the window at least ``min_devices``
    devices, else ``daily_time`` (whole devices cannot fill three splits); the choice and its reason
    are in the training set's metadata."""
    min_devices: int = Field(20, ge=3)
    train: float = Field(0.7, gt=0, lt=1)
    validation: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _leaves_a_test_split(self) -> "SplitSpec":
        if self.train + self.validation >= 1:
            raise ValueError("split: train + validation must leave a test split (sum below 1)")
        return self


class TeacherSpec(_Strict):
    num_leaves: int = 31
    learning_rate: float = 0.05
    rounds: int = 300
    early_stopping_rounds: int = 30
    min_data_in_leaf: int = 20
    lambda_l2: float = Field(0.0, ge=0)
    """L2 regularisation of the leaf values (LightGBM's default, 0: none)."""
    feature_fraction: float = Field(1.0, gt=0, le=1)
    """Share of the features each tree may split on (LightGBM's default, 1: all)."""


class StudentSpec(_Strict):
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(256, ge=1)
    """Epochs and batch size of a student fitted without the pipeline's sizing; the pipeline sizes both
    to the transfer set (``pipeline.sample_sizes.student_schedule``), and early stopping ends sooner."""
    patience: int = Field(15, ge=1)
    """Early stopping: training ends after this many epochs without a better validation loss (the best
    epoch's weights are kept). The validation loss is noisy from epoch to epoch: with 5, runs on the
    simulator stopped while still improving (``benchmarks/student_gap.py``)."""
    learning_rate: float = 3e-3
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)
    """Weight of the distillation loss; 1 - alpha goes to the hard labels. Mostly the teacher's softened
    scores (alpha 0.9, temperature 4): many training labels are weak or pseudo, and the teacher's
    scores on the unlabelled rows carry more than they do (measured in ``benchmarks/student_gap.py``).
    Where the labels teach the student more than the teacher can, a full retrain switches to one of
    ``alpha_alternatives`` (``pipeline.distillation_weight``)."""
    alpha_alternatives: tuple[Annotated[float, Field(ge=0, le=1)], ...] = (0.0,)
    """Other alphas a full retrain tries beside the incumbent (the production student's alpha, else
    ``alpha``); one replaces it only when significantly better on the validation rows. Empty: always
    ``alpha``, and one student per retrain instead of two."""
    alpha_switch_z: float = Field(1.645, gt=0)
    """How sure the switch must be: the challenger's wins over the incumbent on the validation rows the
    two disagree on exceed its losses by this many standard errors (a paired sign test; 1.645 is
    one-sided 95%). At 1.28 a 2-class stream flipped to 0.9 on 8 wins against 3 and back two retrains
    later."""
    refit_with_validation: bool = True
    """Once early stopping has chosen the epochs (and a full retrain the alpha), fit the student again on
    the training and validation rows together for that many epochs: the shipped student learns from every
    labelled row the gates do not keep. A fix for a label-rule change learns from that day's rows alone,
    and the extra 15% of them was worth 1.4 points the next day on a 1,000-row 2-class stream (0.943 to
    0.957, mean of 5 seeds) and 0.4 on a 2,000-row 3-class one; at alpha 0.9, where the student mostly
    imitates the teacher, it changed little until the teacher was refitted too: a teacher boosted on the
    window is boosted again on the same rows for the rounds its early stopping kept, and the student of
    alpha 0.9 distils that one (+1.3 points the next day on the 2-class stream, +0.4 to +1.1 on 3-class
    streams and the simulator's fix; level on a 14-day window). The choices (epochs, alpha) stay those
    judged with the early-stopped teacher. Its held-out checks (the int8 model against fp32, the
    calibration) read the test split instead."""
    transfer: tuple[Literal["labelled", "unlabelled", "augmented"], ...] = ("labelled", "unlabelled", "augmented")
    """The rows the teacher scores for the student to imitate."""
    unseen_category_copies: float = Field(0.5, ge=0, le=1)
    """Share of the labelled training rows copied into the transfer set with some of their categorical
    inputs blanked (each with probability 0.5, at least one), scored by the teacher only. The student
    learns what the teacher does with a category it never saw (LightGBM sends it down its missing-value
    branches) instead of extrapolating from an all-zero one-hot: in the simulator, on the days after
    the firmware roll-out (a new version on most rows) a student trained before it agreed with its
    teacher on 92% of rows without the copies and 98% with them, 0.5-1 accuracy point under the
    teacher instead of 4-6 (``benchmarks/unseen_categories.py``). 0: no copies."""
    init: Literal["scratch", "federated"] = "scratch"
    """Start from random weights, or from the newest federated global weights of the same shape."""
    numeric_bins: int = Field(0, ge=0)
    """Quantile bins of each numeric input, encoded piecewise-linearly beside its standardised value
    (``pipeline.evergreen_edge.Encoder``), so the MLP can cut a feature where the teacher's trees do;
    0: standardised only. Where the truth is thresholds, as in the simulator's fault rules (its YAML
    sets 8), they close the student's gap: on two of its training sets over two seeds, from -0.81
    points under the teacher on the next day to +0.02 with 8 bins and -0.12 with 16 (the package grows
    from 34 to 89 KB; ``benchmarks/student_gap.py``), and the 24-day replay from 0.918 to 0.922. Where
    the rule is smooth, as in the generated streams' linear scores, the student without bins beats
    its teacher, and with them it follows the teacher's steps: every held-out stream lost 0.6-2.5
    points of its backtest (``benchmarks/RESULTS.md``), hence off by default."""
    max_bin_columns: int = Field(120, ge=0)
    """At most this many bin columns over all numeric inputs: a wide dataset gets fewer bins per
    numeric (none when fewer than 2 would be left). The first layer, which reads them, stays fp32 in
    both shipped models, so each column costs about 0.5 KB of package with a 64-wide first layer;
    120 keeps the simulator's 15 numerics at 8 bins within the default 100 KB package gate."""

    def bins_per_numeric(self, n_numeric: int) -> int:
        """``numeric_bins``, or fewer to keep within ``max_bin_columns``."""
        bins = min(self.numeric_bins, self.max_bin_columns // max(n_numeric, 1))
        return bins if bins >= 2 else 0


class PrivacySpec(_Strict):
    """Site-level differential privacy (DP-FedAvg): each site's update is clipped to ``clip_norm``
    and Gaussian noise of ``noise_multiplier`` times the largest weighted clip is added to the sum."""

    enabled: bool = False
    clip_norm: float = Field(1.0, gt=0)
    noise_multiplier: float = Field(1.0, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)


class FederatedSpec(_Strict):
    """Federated training of the student across sites: only weights leave a site."""

    enabled: bool = True
    rounds: int = Field(8, ge=1)
    local_epochs: int = Field(10, ge=1)
    proximal_mu: float = Field(0.0, ge=0)
    """FedProx: weight of (mu / 2) * ||w - w_global||^2 in a site's loss; 0 is plain FedAvg."""
    min_improvement: float = Field(0.002, ge=0)
    """Rounds stop early once the global validation loss improves by less than this."""
    privacy: PrivacySpec = PrivacySpec()


class RecencySpec(_Strict):
    """How many of the newest days a retrain learns from, chosen on the newest labels (``pipeline.recency``)."""

    enabled: bool = True
    """False: every retrain learns from the whole ``window_days`` window, as before."""
    windows: tuple[int, ...] = (1, 2, 4, 7, 14)
    """Candidate windows (days); the whole window and, after a change, the days since it are always tried."""
    decays: tuple[float, ...] = (0.7,)
    """Candidates on the whole window with older rows weighted down by this factor per day of age."""
    min_selection_rows: int = Field(200, ge=4)
    """Validation rows the candidates are judged on: the newest days are pooled until there are this many."""
    min_judging_rows: int = Field(20, ge=2)
    """Fewer validation rows than this (even pooled; after a change, since it) and no candidate is judged: the
    whole window, after a change with older days weighted down. Why not more: on the day a rule changes the
    old windows are wrong on tens of percent of its rows, a gap a few dozen labels show; below 50 (the
    old bar), the first fix on a 300-row-a-day stream learned 70% from the old rule and scored 0.52 the
    next day, where a retrain on that day alone scored 0.81."""
    min_train_rows: int = Field(30, ge=1)
    """A candidate window with fewer labelled training rows is not tried."""


class RecallSpec(_Strict):
    """A retrain for a confirmed change of the label rule also tries the teachers of earlier production
    versions, for a rule that came back (``pipeline.recall``)."""

    enabled: bool = True
    versions: int = Field(20, ge=1)
    """How many of the newest earlier production versions are tried."""
    min_rows: int = Field(10, ge=2)
    """Validation rows since the change needed before a past teacher can be recalled."""
    z: float = Field(1.645, gt=0)
    """Standard errors the accuracy gain over the retrained teacher must clear (one-sided 95%)."""


SEARCHED_TEACHER_PARAMS = ("num_leaves", "learning_rate", "min_data_in_leaf", "lambda_l2", "feature_fraction")
"""The ``TeacherSpec`` fields the teacher search tunes (each a range in ``TeacherSearchSpec``)."""


class TeacherSearchSpec(_Strict):
    """Optuna's TPE search over the teacher's LightGBM parameters on full retrains (``pipeline.teacher_search``).
    Each range is ``[low, high]``; the search stops at ``trials`` or ``budget_seconds``, whichever comes first
    (a trial under way when the budget runs out finishes)."""

    budget_seconds: float = Field(60.0, gt=0)
    trials: int = Field(20, ge=1)
    """20: a retrain with the search costs about 1.5-2x one without on the simulator and the generated
    streams (``benchmarks/teacher_search.py``; 30 trials: up to 3.2x on a busy machine)."""
    num_leaves: tuple[int, int] = (8, 128)
    learning_rate: tuple[float, float] = (0.02, 0.3)
    """Log scale. Not much lower: a trial boosts at most ``teacher.rounds`` trees."""
    min_data_in_leaf: tuple[int, int] = (5, 100)
    lambda_l2: tuple[float, float] = (1e-3, 10.0)
    """Log scale; a warm start from 0 (no regularisation) starts from the low end."""
    feature_fraction: tuple[float, float] = (0.5, 1.0)

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> "TeacherSearchSpec":
        for name in SEARCHED_TEACHER_PARAMS:
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"tuning.teacher.{name}: [{low}, {high}] must be positive and ordered")
        if self.feature_fraction[1] > 1:
            raise ValueError("tuning.teacher.feature_fraction: a share of the features is at most 1")
        return self


class StudentSearchSpec(_Strict):
    """Optuna's two-objective search of the student's shape: macro-F1 against single-row latency
    (``pipeline.student_search``)."""

    budget_seconds: float = Field(120.0, gt=0)
    trials: int = Field(16, ge=1)
    widths: tuple[int, int] = (8, 128)
    """Narrowest and widest hidden layer, searched on a log scale (a range, not a list of choices: a
    range may change between retrains of the same study, Optuna's categorical choices may not)."""
    depths: tuple[int, int] = (1, 3)
    """Fewest and most hidden layers."""
    quantize_first_layer: bool = True
    """Whether the search may quantize the first layer too (false: it stays fp32, as measured in
    ``pipeline.quantize``)."""

    @model_validator(mode="after")
    def _ranges(self) -> "StudentSearchSpec":
        for name, (low, high) in (("widths", self.widths), ("depths", self.depths)):
            if not 1 <= low <= high:
                raise ValueError(f"tuning.student.{name}: need 1 <= low <= high, got [{low}, {high}]")
        return self


class TuningSpec(_Strict):
    """Hyper-parameter search inside the loop. ``enabled: false`` trains with the YAML's parameters as they are."""

    enabled: bool = False
    teacher: TeacherSearchSpec = TeacherSearchSpec()
    student: StudentSearchSpec = StudentSearchSpec()


class TrainingSpec(_Strict):
    seed: int = 7
    split: SplitSpec = SplitSpec()
    teacher: TeacherSpec = TeacherSpec()
    student: StudentSpec = StudentSpec()
    federated: FederatedSpec = FederatedSpec()
    recency: RecencySpec = RecencySpec()
    recall: RecallSpec = RecallSpec()
    tuning: TuningSpec = TuningSpec()


class DataDriftSpec(_Strict):
    """Per-feature tests of today's inputs against the production model's reference rows.

    A feature drifts when its corrected p-value is below ``p_value`` *and* its effect size clears
    the floor: with thousands of rows a day, a test alone calls trivial shifts significant.
    """

    detector: Literal["alibi", "scipy"] = "alibi"
    """alibi-detect (BSL 1.1 licence) or scipy's KS / chi-squared (BSD), same tests and output."""
    p_value: float = Field(0.01, gt=0, lt=1)
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    ks_floor: float = Field(0.1, ge=0, le=1)
    """Numeric features: the KS statistic (largest gap between the two CDFs) must reach this."""
    psi_floor: float = Field(0.2, ge=0)
    """Categorical features and predicted classes: population stability index floor."""
    reference_days: int = Field(1, ge=1)
    """The newest days of the production model's training window: the world it was fitted to."""
    reference_min_rows: int = Field(500, ge=1)
    """Days hold fewer rows than this: the reference takes more of the window's newest days."""
    reference_max_rows: int = Field(5000, ge=100)
    min_rows: int = Field(200, ge=2)
    """A test needs this many current rows: the newest days since the model was trained are pooled
    until it has them, otherwise it is reported as not tested (never as "not drifted")."""


class ConceptDriftSpec(_Strict):
    """The production model's accuracy on freshly returned labels against its test accuracy."""

    p_value: float = Field(0.01, gt=0, lt=1)
    min_accuracy_drop: float = Field(0.03, ge=0, le=1)
    min_labels: int = Field(100, ge=1)
    """Fresh labels the test needs: those of the newest days since the model was trained are pooled
    until there are this many, otherwise it is reported as not tested (never as "not drifted")."""
    min_slice_labels: int | None = Field(30, ge=1)
    """A slice (a site, a category of an input) with this many fresh labels is also tested, against
    the lower of its own and the whole split's test accuracy (``drift.slice_concept_drift``); null:
    the overall test only."""
    pool_days: int = Field(7, ge=1)
    """At most this many days of returned labels (and of inputs, for the data tests) are pooled."""
    lookback_days: int = Field(3, ge=0)
    """Labels that come back today are matched with the readings of this many days before."""


class PolicySpec(_Strict):
    """When to retrain, how, and with which hyper-parameters."""

    full_retrain_drop: float = Field(0.06, gt=0, le=1)
    """An accuracy drop on fresh labels this large means the old trees are wrong: retrain in full."""
    max_wait_days: int = Field(2, ge=0)
    """After an alarm, wait for the inputs to settle (no drift day over day), at most this long."""
    cooldown_days: int = Field(2, ge=0)
    """No drift-triggered retrain within this many days of the previous one."""
    forget_tolerance: float = Field(0.02, ge=0, le=1)
    """An incremental teacher may lose at most this much macro-F1 on the older window."""
    min_new_rows: int = Field(200, ge=1)
    """Fewer labelled training rows since the production model than this: no incremental update.
    A cap: a stream whose day brings fewer labelled training rows needs one day's worth
    (``pipeline.sample_sizes``)."""
    min_validation_rows: int = Field(50, ge=1)
    """Fewer new validation rows than this cannot judge an incremental update: retrain the window."""
    memory_days: int = Field(14, ge=1)
    """How far back the policy looks for the start of a drift event (a streak of alarm days)."""
    student_steps: int = Field(1500, ge=100)
    """The student's epochs are chosen to give about this many optimiser steps."""


class EstimateSpec(_Strict):
    """Estimated performance without labels (calibrated probabilities of the day's rows) and the
    causes of a drift (the teacher's feature contributions), and how the policy uses them."""

    enabled: bool = True
    """Off: no estimate nor causes in the drift report, and the policy decides from the tests alone."""
    acts: bool = False
    """The policy acts on the estimate: no retrain for a shift whose estimate has not dropped beyond its
    band ("shift without harm"), a retrain at once on an estimated drop. Off by default until backtests
    show it helps: in the simulator's 12-day replay the estimated-drop rule retrained on a stationary
    day, and in a 14-day one "shift without harm" kept a model 2-3 points under a nightly retrain."""
    band_z: float = Field(1.96, gt=0)
    """Half-width of the sampling-error band in standard errors (1.96: 95%)."""
    min_drop: float = Field(0.02, ge=0, le=1)
    """An estimated drop harms when the band's upper end is below the reference accuracy by this much."""
    max_unseen_share: float = Field(0.1, ge=0, le=1)
    """More of the day's rows than this outside what the reference saw (a numeric input beyond its
    range, a category it never had): the estimate is unreliable, and the policy falls back on the tests."""
    min_rows: int = Field(50, ge=1)
    """A site with fewer rows gets no estimate of its own (it still counts in the day's)."""
    contribution_rows: int = Field(200, ge=10)
    """Rows sampled from the reference and from the day for the teacher's feature contributions
    (``pred_contrib`` costs about 1 ms a row on a 170-tree teacher: 200 + 200 rows keep the report fast)."""
    top_causes: int = Field(3, ge=1)


class FeedbackSpec(_Strict):
    drift: DataDriftSpec = DataDriftSpec()
    concept: ConceptDriftSpec = ConceptDriftSpec()
    policy: PolicySpec = PolicySpec()
    estimate: EstimateSpec = EstimateSpec()


class GateSpec(_Strict):
    """What a candidate must pass before it may replace production (blocking checks)."""

    min_macro_f1: float = Field(0.5, ge=0, le=1)
    """The student's macro-F1 on the test split must reach this, whatever production does."""
    max_regression: float = Field(0.02, ge=0, le=1)
    """Macro-F1 the candidate may lose against production on the newest labelled test rows."""
    regression_confidence: float = Field(0.95, gt=0.5, lt=1)
    """A regression fails the gate only when it exceeds the tolerance with this confidence."""
    regression_days: int = Field(3, ge=1)
    """How many of the newest days of the test split the candidate and production are compared on."""
    regression_min_rows: int = Field(300, ge=1)
    """Days with fewer test rows than this: the comparison takes more of the newest days."""
    max_int8_drop: float = Field(0.01, ge=0, le=1)
    """Macro-F1 the int8 model may lose against fp32 on the validation rows."""
    max_package_bytes: int = Field(100_000, ge=1)
    max_latency_us: float = Field(1000.0, gt=0)
    """Single-row median latency through the edge runtime: a budget that catches a model grown far
    too big; the benchmark, not this gate, measures the 20 µs target."""


class CanarySpec(_Strict):
    """Gray release: a promoted candidate serves a fraction of sites first."""

    fraction: float = Field(0.25, ge=0, lt=1)
    """Share of sites (at least one) that get the new version first; 0 promotes to all at once."""
    window_days: int = Field(2, ge=1)
    min_labels: int = Field(100, ge=1)
    """Returned labels each arm needs before the canary can be judged; until then it waits. A cap: a
    stream that returns fewer labels to an arm over the window needs what it returns
    (``pipeline.sample_sizes``)."""
    tolerance: float = Field(0.02, ge=0, le=1)
    """Canary sites may be at most this much less accurate than control sites and still roll out."""
    early_margin: float | None = Field(0.05, gt=0, le=1)
    """A canary more accurate than control by at least this much with 99% confidence, from its first
    served day, rolls out before its window ends: it fixes what production gets wrong (after a
    label-rule change, every day of waiting costs the control sites). null: always wait for the window."""
    fix_fraction: float | None = Field(0.75, gt=0, lt=1)
    """Share of sites a fix gets first: a candidate retrained for a confirmed change of the label rule
    that is already more accurate than production on the held-out rows since the change
    (``fix_judged_on``) by ``fix_z`` standard errors. Production is known wrong there, so it keeps
    only the control sites, and the verdict can still roll the fix back. null: a fix starts on
    ``fraction`` like any candidate."""
    fix_z: float = Field(1.645, gt=0)
    """Standard errors a fix's accuracy gain over production must clear on the held-out rows since the
    change (``fix_judged_on``) to get ``fix_fraction`` (one-sided 95%, as a recall's). Less sure than
    the early roll-out's 99%: a fix still meets its verdict, while each day production keeps the
    fleet costs every site the change. On the simulator's roll-out the day-1 fix read 0.960 against
    production's 0.900 on its 100 test rows since the change (lower bound -0.005 at 99%, +0.014 at
    95%) and served one site of four the next day: 0.804 that day, where three sites would have read
    0.882-0.898."""
    fix_judged_on: tuple[Literal["test", "validation"], ...] = ("test", "validation")
    """The held-out rows since the change a fix is judged on for ``fix_fraction``. The validation rows
    chose the candidate's training window and stopped its training, so they flatter it a little; they
    count here because this only sets how many sites the fix serves first (the paired verdict on
    served labels still rolls it out or back), and the test rows alone are too few on the day after a
    change: in two simulator replays the day-1 fix had 79 and 100 test rows (95% lower bounds -0.015
    and +0.014), and 193 and 170 with the validation rows (+0.031 and +0.009)."""


class DeploymentSpec(_Strict):
    gates: GateSpec = GateSpec()
    canary: CanarySpec = CanarySpec()


class ActiveLearningSpec(_Strict):
    """Which of the day's readings a person is asked to label (``label_queue``)."""

    budget_per_day: int = Field(100, ge=0)
    """Rows queued per day; 0 turns the queue off."""
    strategy: Literal["committee", "entropy", "margin", "random"] = "committee"
    """``committee``: query by committee; ``entropy`` / ``margin``: the current teacher's uncertainty."""
    committee_size: int = Field(3, ge=3)
    disagreement: Literal["vote_entropy", "kl"] = "vote_entropy"
    """How committee disagreement is scored: entropy of the votes, or mean KL to the consensus."""
    answer_lag_days: int = Field(1, ge=0)
    """Demo mode: the simulator's oracle answers a day's queue this many days later."""
    retrain_after_labels: int = Field(300, ge=1)
    """The label sensor launches an incremental retrain once this many answered labels arrived."""


class SelfTrainingSpec(_Strict):
    """Pseudo-labels from the teacher's confident predictions on unlabelled training devices."""

    enabled: bool = True
    threshold: float = Field(0.9, gt=0, lt=1)
    """A pseudo-label needs at least this predicted probability."""
    max_rounds: int = Field(3, ge=1)
    class_quota: float | None = Field(1.0, gt=0)
    """Per round, a class gains at most this many pseudo-labels per gold training label of it, so
    the majority class does not swamp the rest; null turns the quota off."""
    stop_on_drop: bool = True
    """Stop (and keep the previous round) when validation macro-F1 drops."""
    weight: float = Field(0.5, gt=0, le=1)


class LabelCondition(_Strict):
    """One comparison of a labelling rule: ``feature op value`` (data, never evaluated as code)."""

    feature: str
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float | str


class LabellingRule(_Strict):
    """A labelling function declared in the dataset YAML: votes ``label`` where all conditions hold."""

    name: str
    label: str
    when: tuple[LabelCondition, ...] = Field(min_length=1)

    @field_validator("label", mode="before")
    @classmethod
    def _label_as_written(cls, value: object) -> str:
        return class_name(value)


class WeakSupervisionSpec(_Strict):
    """Labelling functions combined by a label model that learns each one's accuracy."""

    enabled: bool = True
    rules: tuple[LabellingRule, ...] = ()
    python: tuple[str, ...] = ()
    """More labelling functions declared in Python, as ``module:attribute`` naming a list of them."""
    min_confidence: float = Field(0.5, gt=0, le=1)
    """A weak label is kept when the label model gives its class at least this probability."""
    class_quota: float | None = Field(1.0, gt=0)
    """At most this many weak labels per gold training label of the class, the most confident first;
    null: no limit. Rules label most rows, and unchecked they outweigh the real labels."""
    weight: float = Field(0.3, gt=0, le=1)


class AugmentationSpec(_Strict):
    """Synthetic training rows for rare classes (training split only, never validation or test)."""

    enabled: bool = True
    method: Literal["interpolate", "noise"] = "interpolate"
    """``interpolate``: between a row and one of its nearest same-class neighbours; ``noise``: jitter."""
    min_class_fraction: float = Field(0.08, gt=0, lt=1)
    """Classes below this share of the labelled training rows are topped up to it."""
    neighbours: int = Field(5, ge=1)
    max_per_real_row: int = Field(4, ge=1)
    """At most this many synthetic rows per real row of a class: three rows cannot stand for three hundred."""
    noise_scale: float = Field(0.05, gt=0)
    """Standard deviation of the noise, as a fraction of each feature's standard deviation."""
    weight: float = Field(0.5, gt=0, le=1)


class LabellingSpec(_Strict):
    active: ActiveLearningSpec = ActiveLearningSpec()
    self_training: SelfTrainingSpec = SelfTrainingSpec()
    weak: WeakSupervisionSpec = WeakSupervisionSpec()
    augmentation: AugmentationSpec = AugmentationSpec()


class ReportSpec(_Strict):
    """What a person reads: the metadata in the UI, the command line's summaries and the daily loop
    report (``pipeline.loop_report``)."""

    min_metric_rows: int = Field(200, ge=1)
    """A metric measured on fewer rows than this is shown as a small sample: on a handful of rows an
    accuracy of 1.000 says little."""
    days: int = Field(60, ge=1, le=3660)
    """How many days, up to the report's own, the loop report's history covers."""


class FirmwareRollout(_Strict):
    date: dt.date
    version: str
    ramp_days: int = Field(3, ge=1)
    share: float = Field(0.8, ge=0, le=1)
    fault_rate: float = Field(0.2, ge=0, le=1)
    """Share of upgraded devices' hours with the new firmware fault signature."""
    min_severity: float = Field(0.4, ge=0, le=1)
    """A firmware bug is never mild: the new faults' severity starts here, so they can be learned."""


class NewDeviceModel(_Strict):
    date: dt.date
    name: str
    share: float = Field(0.15, ge=0, le=1)


class DriftTimeline(_Strict):
    line_ageing_db_per_day: float = 0.01
    ageing_start: dt.date | None = None
    firmware_rollout: FirmwareRollout | None = None
    new_device_model: NewDeviceModel | None = None
    evening_hours: tuple[int, int] = (19, 23)
    evening_congestion_factor: float = 3.0


class LabelReturn(_Strict):
    """Labels come back late and partially, as from a ticket system."""

    fraction: float = Field(0.3, ge=0, le=1)
    max_lag_days: int = Field(3, ge=0)
    delay_days: int = Field(0, ge=0)
    """Days before any label comes back: a row's label returns ``delay_days`` + 0..``max_lag_days`` days after it."""


class SiteProfile(_Strict):
    """What makes a site unlike the others (non-IID federated data): its device mix, how much of it
    runs the old firmware, how far it takes the roll-out, and its line lengths."""

    device_models: dict[str, float] | None = None
    """Weights over the simulator's base device models; uniform if absent."""
    old_firmware_share: float | None = Field(None, ge=0, le=1)
    rollout_share: float | None = Field(None, ge=0, le=1)
    line_length_m: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _mix_is_a_distribution(self) -> "SiteProfile":
        weights = (self.device_models or {}).values()
        if self.device_models is not None and (any(w < 0 for w in weights) or sum(weights) <= 0):
            raise ValueError(f"device_models: weights must be non-negative with a positive sum, got {self.device_models}")
        return self


class SimulatorSpec(_Strict):
    seed: int = 42
    sites: tuple[str, ...] = ("north", "south", "east", "west")
    devices_per_site: int = Field(40, ge=1)
    site_profiles: dict[str, SiteProfile] = {}

    @model_validator(mode="after")
    def _profiles_name_sites(self) -> "SimulatorSpec":
        unknown = sorted(set(self.site_profiles) - set(self.sites))
        if unknown:
            raise ValueError(f"site_profiles: {unknown} are not among the sites {list(self.sites)}")
        return self
    hours: tuple[int, ...] = tuple(range(24))
    label_return: LabelReturn = LabelReturn()
    drift: DriftTimeline = DriftTimeline()


class TlsSpec(_Strict):
    """TLS to the broker; file paths are relative to the dataset YAML."""

    enabled: bool = False
    ca_file: str | None = None
    """The CA that signed the broker's certificate; the system's CAs when unset."""
    cert_file: str | None = None
    key_file: str | None = None
    """A client certificate and key, for brokers that authenticate clients by certificate."""


class BrokerSpec(_Strict):
    """Where devices publish. The user name and password come from ``EVERGREEN_MQTT_USERNAME`` and
    ``EVERGREEN_MQTT_PASSWORD``, never from this file."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    topic_prefix: str = "evergreen"
    """Devices publish to ``<prefix>/<site>/<device>/telemetry`` and ``.../predictions``."""
    keepalive_s: int = Field(30, ge=5)
    tls: TlsSpec = TlsSpec()

    @model_validator(mode="after")
    def _prefix_is_a_topic_level(self) -> "BrokerSpec":
        if not self.topic_prefix or any(c in self.topic_prefix for c in "+#") or self.topic_prefix.strip("/") != self.topic_prefix:
            raise ValueError(f"topic_prefix: {self.topic_prefix!r} must be non-empty, without wildcards or outer slashes")
        return self


class CollectorSpec(_Strict):
    """The MQTT collector: messages in, Parquet micro-batches in the landing folder out."""

    broker: BrokerSpec = BrokerSpec()
    client_id: str = "evergreen-collector"
    """The broker keeps this client's session (and unacknowledged messages) across restarts."""
    shared_group: str | None = None
    """Scale out past one core: collectors with their own ``client_id`` and the same group share the
    topics (an MQTT shared subscription), each message going to one of them."""
    roll_seconds: float = Field(10.0, gt=0)
    roll_rows: int = Field(20_000, ge=1, le=60_000)
    """A batch's messages are acknowledged once it has landed, so a batch must fit in the 65,535
    message ids a session may have in flight."""
    max_payload_bytes: int = Field(4096, ge=64)
    max_clock_skew_s: float = Field(300.0, ge=0)
    """A reading stamped further than this in the future of its arrival is rejected."""
    dedup_keys: int = Field(500_000, ge=60_000)
    """Message keys remembered against redelivery (at least a batch's worth, for a crash between
    landing and acknowledging); restarts reload them from the newest landed files."""
    rejects_dir: str | None = None
    predictions_dir: str | None = None
    """Default: ``rejects`` and ``predictions`` beside the landing folder (never inside it: the
    landing sensor would take them for telemetry). Relative paths are relative to the YAML."""


class DatasetConfig(_Strict):
    """A dataset YAML, validated. ``base_dir`` is where the YAML lives (for relative paths)."""

    name: str
    columns: RoleColumns
    classes: tuple[str, ...]
    features: tuple[FeatureSpec, ...]
    source: SourceSpec = SourceSpec()
    partitions: PartitionSpec
    quality: QualitySpec = QualitySpec()
    training: TrainingSpec = TrainingSpec()
    feedback: FeedbackSpec = FeedbackSpec()
    deployment: DeploymentSpec = DeploymentSpec()
    labelling: LabellingSpec = LabellingSpec()
    report: ReportSpec = ReportSpec()
    simulator: SimulatorSpec = SimulatorSpec()
    collector: CollectorSpec = CollectorSpec()
    base_dir: Path = Path(".")

    @field_validator("classes", mode="before")
    @classmethod
    def _classes_as_written(cls, value: object) -> object:
        return tuple(class_name(v) for v in value) if isinstance(value, (list, tuple)) else value

    @model_validator(mode="after")
    def _roles_fit(self) -> "DatasetConfig":
        """Settings that need a role column the dataset does not have."""
        if self.columns.site is None and len(self.partitions.sites or ()) > 1:
            raise ValueError(f"partitions.sites: {list(self.partitions.sites or ())} are several sites, but columns.site "
                             "is not set: without a site column every row belongs to one site")
        if self.columns.id is None and self.training.split.method == "device":
            raise ValueError("training.split.method: 'device' needs columns.id (without an id column each row is "
                             "its own entity); use 'time' or 'auto'")
        return self

    @model_validator(mode="after")
    def _names_are_unique(self) -> "DatasetConfig":
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"features: duplicate names {dupes}")
        reserved = {TIMESTAMP, LABEL, DEVICE_ID, SITE, ROW_ID} & set(names)
        if reserved:
            raise ValueError(f"features: {sorted(reserved)} are reserved role names")
        derived = {HOUR_FEATURE} | {f"{n}_delta" for n in names}
        if clash := sorted(derived & set(names)):
            raise ValueError(f"features: {clash} are names of derived features (the hour of day, <feature>_delta)")
        self._columns_are_distinct()
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise ValueError("classes: need at least two distinct class names")
        if self.deployment.canary.window_days > self.feedback.concept.lookback_days + 1:
            raise ValueError(f"deployment.canary.window_days: at most feedback.concept.lookback_days + 1 "
                             f"({self.feedback.concept.lookback_days + 1}): the canary is judged on the readings "
                             "that returned labels can still be matched with")
        self._rules_are_known()
        return self

    def _columns_are_distinct(self) -> None:
        """Each source column plays one part: two roles or features on one column would be renamed
        twice when the files are read."""
        parts = [(f"columns.{role}", column) for role, column in self.columns.model_dump().items() if column is not None]
        parts += [(f"features.{f.name}", f.source_column) for f in self.features]
        seen: dict[str, str] = {}
        for part, column in parts:
            if column in seen:
                raise ValueError(f"{part}: column {column!r} is already used by {seen[column]}")
            seen[column] = part

    def _rules_are_known(self) -> None:
        names = {f.name for f in self.features} | {f"{f.name}_delta" for f in self.features if f.history} | {HOUR_FEATURE}
        for rule in self.labelling.weak.rules:
            if rule.label not in self.classes:
                raise ValueError(f"labelling.weak.rules.{rule.name}: label {rule.label!r} is not one of {list(self.classes)}")
            for condition in rule.when:
                if condition.feature not in names:
                    raise ValueError(f"labelling.weak.rules.{rule.name}: unknown feature {condition.feature!r}")

    @property
    def sites(self) -> tuple[str, ...]:
        """Without a site column, the one site every row belongs to."""
        if self.columns.site is None:
            return self.partitions.sites or (SINGLE_SITE,)
        return self.partitions.sites or self.simulator.sites

    @property
    def numeric_features(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.type == "numeric"]

    @property
    def categorical_features(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.type == "categorical"]

    @property
    def role_renames(self) -> dict[str, str]:
        """Source column -> canonical name, for the roles and every feature."""
        c = self.columns
        roles = {c.timestamp: TIMESTAMP, c.label: LABEL, c.id: DEVICE_ID, c.site: SITE}
        renames = {source: name for source, name in roles.items() if source is not None}
        renames.update({f.source_column: f.name for f in self.features})
        return renames

    @property
    def required_source_columns(self) -> list[str]:
        """Source columns every file must have (the label may be absent: labels often come later)."""
        c = self.columns
        roles = [name for name in (c.timestamp, c.id, c.site) if name is not None]
        return [*roles, *(f.source_column for f in self.features)]

    @property
    def landing_dir(self) -> Path | None:
        if self.source.landing_dir is None:
            return None
        return (self.base_dir / self.source.landing_dir).resolve()

    @property
    def rejects_dir(self) -> Path | None:
        """Where the collector keeps the messages it could not land, with their reasons."""
        return self._beside_landing(self.collector.rejects_dir, "rejects")

    @property
    def predictions_dir(self) -> Path | None:
        """Where the collector lands the predictions devices publish (read by the drift report)."""
        return self._beside_landing(self.collector.predictions_dir, "predictions")

    def _beside_landing(self, configured: str | None, default: str) -> Path | None:
        if configured is not None:
            return (self.base_dir / configured).resolve()
        return None if self.landing_dir is None else self.landing_dir.parent / default


class DatasetConfigError(ValueError):
    """A dataset YAML that cannot be used; the message names the file and the field."""


DATASET_ENV = "EVERGREEN_DATASET"
DEFAULT_DATASET = Path(__file__).resolve().parent.parent / "config" / "broadband.yaml"


def dataset_path() -> Path:
    """The dataset YAML Evergreen runs: ``EVERGREEN_DATASET``, else the embedded simulator default."""
    return Path(os.environ.get(DATASET_ENV, DEFAULT_DATASET)).resolve()


def load_dataset_config(path: str | Path) -> DatasetConfig:
    path = Path(path)
    raw = _read_yaml(path)
    try:
        return DatasetConfig(**raw, base_dir=path.resolve().parent)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise DatasetConfigError(f"{path}: invalid dataset config: {fields}") from exc


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The YAML as a mapping; ``extends: <other.yaml>`` starts from that file and overrides it
    section by section (mappings merge, anything else replaces), so a variant names only what differs."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetConfigError(f"{path}: cannot read dataset config: {exc}") from exc
    if not isinstance(raw, dict):
        raise DatasetConfigError(f"{path}: a dataset config is a YAML mapping")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    base = (path.parent / str(parent)).resolve()
    if base in seen or base == path.resolve():
        raise DatasetConfigError(f"{path}: extends: {parent} extends itself")
    return _merged(_read_yaml(base, (*seen, path.resolve())), raw)


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key written twice in one mapping: plain YAML keeps the last one
    silently, and a second ``classes:`` would quietly replace the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} on line {line} (first on line {seen[key]})", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep)


def _merged(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged
