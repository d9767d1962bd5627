"""The labelling layer's pipeline: the label inbox round trip and its rejects, active learning,
weak supervision, self-training, augmentation, and provenance in the training set."""

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import active_learning, augmentation, self_training, weak_supervision
from pipeline.dataset import LABEL, ROW_ID, DatasetConfigError, load_dataset_config
from pipeline.encoding import fit_preprocessing
from pipeline.features import model_feature_names
from pipeline.label_inbox import LabelInbox, oracle_answers
from pipeline.teacher import train_teacher
from pipeline.training_set import (
    PROVENANCE,
    SPLIT,
    TRAIN,
    UNLABELLED,
    WEIGHT,
    LabelSource,
    build_training_set,
    on_training_device,
    provenance_counts,
    split_gold,
)
from tests.conftest import DEFAULT_YAML
from tests.support.helpers import KEY, days_from, labelled_features

DAY = dt.date(2026, 9, 10)


@pytest.fixture(scope="module")
def small(config):
    return config.model_copy(update={"simulator": config.simulator.model_copy(update={"devices_per_site": 20})})


@pytest.fixture(scope="module")
def truth(small) -> pl.DataFrame:
    """Three days of feature rows with every true label."""
    return labelled_features(small, days_from(DAY - dt.timedelta(days=2), 3))


@pytest.fixture(scope="module")
def window(truth) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(feature rows without labels, gold labels for a random 30% of them)."""
    gold = truth.sample(fraction=0.3, seed=1).select(ROW_ID, LABEL, pl.lit("oracle").alias("label_source"))
    return truth.with_columns(pl.lit(None, pl.String).alias(LABEL)), gold


def _with(config, **labelling):
    parts = {name: getattr(config.labelling, name).model_copy(update=value) for name, value in labelling.items()}
    return config.model_copy(update={"labelling": config.labelling.model_copy(update=parts)})


# --- the label inbox -------------------------------------------------------------------------

def _queue(inbox: LabelInbox, day: dt.date, row_ids: list[str]) -> None:
    rows = pl.DataFrame({ROW_ID: row_ids, "timestamp": [dt.datetime(2026, 9, 10, 3, tzinfo=dt.timezone.utc)] * len(row_ids),
                         "rx_power_dbm": [-20.0] * len(row_ids)})
    inbox.write_queue(day, rows)


def test_the_queue_is_a_csv_with_an_empty_label_column(tmp_path):
    inbox = LabelInbox(tmp_path)
    _queue(inbox, DAY, ["a", "b"])
    written = pl.read_csv(inbox.queue_path(DAY), schema_overrides={LABEL: pl.String})
    assert written.columns[-1] == LABEL and written[LABEL].null_count() == 2
    assert written[ROW_ID].to_list() == ["a", "b"]
    assert [p.name for p in inbox.queue_dir.iterdir()] == [f"{DAY}.csv"]  # no temporary file left


def test_answers_merge_good_rows_and_reject_bad_ones_with_reasons(tmp_path, config):
    inbox = LabelInbox(tmp_path)
    _queue(inbox, DAY, ["r1", "r2", "r3", "r4", "r5", "r6", "r7"])
    answered = inbox.answered_dir / (DAY + dt.timedelta(days=1)).isoformat()
    answered.mkdir(parents=True)
    (answered / "alice.csv").write_bytes(b"\n".join([
        b"row_id,note,label",
        b"r1,,fiber",                 # good
        b"r2,,none",                  # good, answered again identically below
        b"r2,,none",
        b"r3,,fiber",                 # conflicts with bob's answer
        b"r4,,melted",                # not a class
        b"zz,,power",                 # never queued
        b"r5,caf\xe9,power",          # latin-1 byte: not UTF-8
        b"r6,,",                      # left unlabelled
        b"r7,extra,field,power",      # wrong number of fields
        b"",
    ]))
    (answered / "bob.csv").write_text("label,row_id\npower,r3\n", encoding="utf-8")
    (answered / "scan.csv").write_bytes(b"\xff\xfe\x00garbage")

    answers = inbox.read_answers(DAY + dt.timedelta(days=1), config.classes)

    assert sorted(answers.labels.select(ROW_ID, LABEL).rows()) == [("r1", "fiber"), ("r2", "none")]
    assert answers.labels["observed_at"].null_count() == 0
    reasons = {(Path(f).name, line): reason for f, line, reason in answers.rejects.select("file", "line", "reason").rows()}
    assert reasons[("alice.csv", 5)].startswith("conflicting labels for one row: fiber / power")
    assert reasons[("bob.csv", 2)].startswith("conflicting labels")
    assert reasons[("alice.csv", 6)].startswith("label 'melted' is not one of")
    assert reasons[("alice.csv", 7)] == "row_id was never queued for labelling"
    assert reasons[("alice.csv", 8)] == "line is not UTF-8 (byte 7)"
    assert reasons[("alice.csv", 10)] == "4 fields where the header has 3"
    assert reasons[("scan.csv", 1)].startswith("header is not UTF-8")
    counts = answers.counts
    assert counts == {"files": 3, "rows": 11, "merged": 2, "rejected": 7, "unanswered": 1, "duplicates": 1}
    assert counts["rows"] == counts["merged"] + counts["rejected"] + counts["unanswered"] + counts["duplicates"]

    path = inbox.write_rejects(DAY + dt.timedelta(days=1), answers.rejects)
    assert pl.read_csv(path).height == 7
    assert inbox.write_rejects(DAY + dt.timedelta(days=1), answers.rejects.clear()) is None and not path.exists()


FORMULAS = ['=HYPERLINK("http://evil.example","click")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "'=quoted", "plain", "-"]


def test_the_queue_and_rejects_neutralise_spreadsheet_formulas_and_read_back_unchanged(tmp_path, config):
    """OWASP's CSV-injection rule: formula-leading text cells get a leading apostrophe in every CSV
    written for people; answers read back through the inbox come back as they were."""
    inbox = LabelInbox(tmp_path)
    rows = pl.DataFrame({ROW_ID: [f"r{i}" for i in range(len(FORMULAS))], "site": FORMULAS,
                         "timestamp": [dt.datetime(2026, 9, 10, 3, tzinfo=dt.timezone.utc)] * len(FORMULAS),
                         "rx_power_dbm": [-20.0] * len(FORMULAS)})
    inbox.write_queue(DAY, rows)
    written = pl.read_csv(inbox.queue_path(DAY), schema_overrides={"site": pl.String, LABEL: pl.String})
    assert written["site"].to_list() == ["'" + f for f in FORMULAS[:6]] + ["plain", "'-"]
    assert written["rx_power_dbm"].to_list() == [-20.0] * len(FORMULAS)  # numbers are not text cells

    answered = inbox.answered_dir / DAY.isoformat()
    answered.mkdir(parents=True)
    labelled = written.with_columns(pl.Series(LABEL, ["'=fiber", "fiber", *["none"] * (len(FORMULAS) - 2)]))
    labelled.write_csv(answered / "answers.csv")  # saved back as the spreadsheet shows it
    answers = inbox.read_answers(DAY, ("none", "fiber", "=fiber"))
    assert sorted(answers.labels.select(ROW_ID, LABEL).rows())[:2] == [("r0", "=fiber"), ("r1", "fiber")]
    rejects = inbox.write_rejects(DAY, pl.DataFrame({"file": ["x.csv"], "line": [2], ROW_ID: ["r9"],
                                                     LABEL: ["=cmd|' /C calc'!A0"], "reason": ["not a class"]}))
    assert pl.read_csv(rejects)[LABEL].item() == "'=cmd|' /C calc'!A0"


def test_the_oracle_answers_the_queue_after_the_lag_with_the_truth(tmp_path, small, truth):
    inbox = LabelInbox(tmp_path)
    asked = truth.filter(pl.col("timestamp").dt.date() == DAY).head(25)
    inbox.write_queue(DAY, asked.drop(LABEL))
    lag = small.labelling.active.answer_lag_days
    assert oracle_answers(inbox, small, DAY, KEY) is None  # not due yet
    path = oracle_answers(inbox, small, DAY + dt.timedelta(days=lag), KEY)
    assert path.parent.name == (DAY + dt.timedelta(days=lag)).isoformat()
    answers = inbox.read_answers(DAY + dt.timedelta(days=lag), small.classes)
    assert answers.counts["merged"] == 25 and answers.rejects.height == 0
    assert answers.labels.join(asked, on=ROW_ID).filter(pl.col(LABEL) != pl.col(f"{LABEL}_right")).height == 0
    assert oracle_answers(inbox, small, DAY + dt.timedelta(days=lag), KEY) is None  # answered once


# --- active learning ---------------------------------------------------------------------------

def test_uncertainty_scores_order_rows_from_sure_to_unsure():
    p = np.array([[1.0, 0.0, 0.0], [0.6, 0.4, 0.0], [0.34, 0.33, 0.33]])
    assert np.all(np.diff(active_learning.entropy(p)) > 0)
    assert np.all(np.diff(active_learning.margin_uncertainty(p)) > 0)
    agree = [np.eye(3)[[0, 1]], np.eye(3)[[0, 1]], np.eye(3)[[0, 1]]]
    split = [np.eye(3)[[0, 0]], np.eye(3)[[1, 1]], np.eye(3)[[2, 0]]]
    assert active_learning.vote_entropy(agree) == pytest.approx([0.0, 0.0], abs=1e-9)
    assert active_learning.vote_entropy(split)[0] == pytest.approx(np.log(3))
    assert active_learning.mean_kl(agree) == pytest.approx([0.0, 0.0], abs=1e-9)
    assert active_learning.mean_kl(split)[0] > active_learning.mean_kl(split)[1] > 0


@pytest.mark.parametrize("disagreement", ["vote_entropy", "kl"])
def test_query_by_committee_asks_about_faults_far_more_than_random(small, window, truth, disagreement):
    features, gold = window
    config = _with(small, active={"disagreement": disagreement})
    frame = split_gold(features, gold, config, min_per_split=0)
    candidates = frame.filter((pl.col(SPLIT) == UNLABELLED) & on_training_device(frame, config))
    scored = active_learning.score_candidates(candidates, frame.filter(pl.col(SPLIT) == TRAIN), None, config, seed=0)
    assert scored.method == f"committee ({disagreement})"
    chosen = active_learning.select(candidates, scored.scores, 100).drop(LABEL).join(truth.select(ROW_ID, LABEL), on=ROW_ID)
    base_rate = (truth[LABEL] != "none").mean()
    assert chosen.height == 100 and (chosen[LABEL] != "none").mean() > 2 * base_rate


def test_without_labels_or_a_teacher_the_queue_falls_back_to_random(small, window):
    features, _ = window
    scored = active_learning.score_candidates(features.head(50), features.head(0), None, _with(small, active={"strategy": "margin"}), 3)
    assert scored.method == "random: margin needs a production teacher" and len(scored.scores) == 50


# --- weak supervision --------------------------------------------------------------------------

def test_yaml_rules_vote_where_every_condition_holds_and_nulls_abstain(config):
    frame = pl.DataFrame({ROW_ID: ["a", "b", "c"], "uptime_h": [2.0, 50.0, None], "tx_power_dbm": [1.0, 1.0, 1.0]})
    [weak_laser] = [f for f in weak_supervision.labelling_functions(config) if f.name == "weak_laser"]
    assert weak_laser.applies(frame).to_list() == [True, False, False]


def test_python_labelling_functions_load_by_module_and_attribute(config):
    with_python = _with(config, weak={"python": ("tests.support.labelling_functions:RULES",)})
    assert weak_supervision.labelling_functions(with_python)[-1].name == "no_uptime"
    with pytest.raises(ValueError, match="is not a list of LabellingFunction"):
        weak_supervision.labelling_functions(_with(config, weak={"python": ("tests.support.labelling_functions:NOT_RULES",)}))


def test_a_rule_on_an_unknown_feature_or_class_is_a_config_error(tmp_path):
    text = DEFAULT_YAML.read_text().replace("label: fiber, when: [{feature: rx_power_dbm_delta", "label: fiber, when: [{feature: rx_power_delta")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(DatasetConfigError, match="weak_light: unknown feature 'rx_power_delta'"):
        load_dataset_config(tmp_path / "bad.yaml")


def test_the_label_model_trusts_a_precise_function_over_sloppy_ones():
    """One precise function among four sloppy ones (each abstains on 30% of rows): a majority vote
    counts them alike; the label model learns from their agreements which one to trust."""
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 3, n)
    columns = []
    for accuracy in (0.95, 0.5, 0.45, 0.45, 0.4):
        vote = np.where(rng.uniform(size=n) < accuracy, y, (y + rng.integers(1, 3, n)) % 3)
        columns.append(np.where(rng.uniform(size=n) < 0.7, vote, weak_supervision.ABSTAIN))
    votes = np.stack(columns, axis=1)
    covered = (votes != weak_supervision.ABSTAIN).any(axis=1)
    probabilities, estimated = weak_supervision._label_model(votes, 3, None, seed=0)

    def majority(row: np.ndarray) -> int:
        counts = np.bincount(row[row >= 0], minlength=3)
        return int(rng.choice(np.flatnonzero(counts == counts.max())))

    by_majority = np.array([majority(row) if c else -1 for row, c in zip(votes, covered)])
    assert (probabilities.argmax(axis=1) == y)[covered].mean() > (by_majority == y)[covered].mean() + 0.1
    assert estimated.argmax() == 0


def test_weak_labels_report_coverage_overlap_conflict_and_accuracy(small, window, truth):
    features, gold = window
    result = weak_supervision.weak_labels(features, small, weak_supervision.class_balance(gold, small.classes))
    assert set(result.functions) == {r.name for r in small.labelling.weak.rules}
    healthy = result.functions["healthy"]
    assert 0.5 < healthy["coverage"] <= healthy["overlap"] + healthy["coverage"] and 0 <= healthy["conflict"] <= healthy["overlap"]
    assert all(0 <= f["estimated_accuracy"] <= 1 for f in result.functions.values() if f["coverage"] > 0)
    assert all(f["estimated_accuracy"] is None for f in result.functions.values() if f["coverage"] == 0)
    checked = result.labels.join(truth.select(ROW_ID, pl.col(LABEL).alias("truth")), on=ROW_ID)
    assert result.labels.height > features.height / 2 and (checked[LABEL] == checked["truth"]).mean() > 0.85
    assert (result.labels["confidence"] >= small.labelling.weak.min_confidence).all()


def test_a_function_that_never_votes_has_no_accuracy_estimate():
    votes = np.array([[0, -1, 1], [1, -1, 1], [0, -1, 0], [2, -1, 2]] * 50)
    _, estimated = weak_supervision._label_model(votes, 3, None, seed=0)
    assert np.isnan(estimated[1]) and not np.isnan(estimated[[0, 2]]).any()


# --- self-training -----------------------------------------------------------------------------

def test_self_training_labels_only_training_devices_within_quotas(small, window, truth):
    features, gold = window
    config = _with(small, self_training={"stop_on_drop": False, "max_rounds": 2})
    frame = split_gold(features, gold, config)
    result = self_training.self_train(frame, config, None)
    assert [r["round"] for r in result.rounds] == [0, 1, 2] and result.stopped == "all 2 rounds kept"
    labelled = frame.join(result.labels.select(ROW_ID), on=ROW_ID)
    assert labelled.height == result.labels.height > 0
    assert (labelled[SPLIT] == UNLABELLED).all() and on_training_device(labelled, config).all()
    train_counts = dict(frame.filter(pl.col(SPLIT) == TRAIN).group_by(LABEL).len().iter_rows())
    for r in result.rounds[1:]:
        assert all(count <= train_counts.get(label, 0) for label, count in r["per_class"].items())
    checked = result.labels.join(truth.select(ROW_ID, pl.col(LABEL).alias("truth")), on=ROW_ID)
    assert (checked[LABEL] == checked["truth"]).mean() > 0.9 and (result.labels["confidence"] >= 0.9).all()


def test_self_training_stops_and_discards_a_round_that_lowers_validation(small, window):
    """A teacher that learned shuffled labels offers confident nonsense: the round's retrain does
    worse on validation, so its pseudo-labels are thrown away and the rounds stop."""
    features, gold = window
    config = _with(small, self_training={"threshold": 0.3, "class_quota": None})
    frame = split_gold(features, gold, config)
    train = frame.filter(pl.col(SPLIT) == TRAIN)
    shuffled = train.with_columns(pl.col(LABEL).shuffle(seed=0))
    numeric, categorical = model_feature_names(config)
    confused = train_teacher(shuffled, frame.filter(pl.col(SPLIT) == "validation"), fit_preprocessing(shuffled, numeric, categorical),
                             config.classes, config.training.teacher, seed=0)
    result = self_training.self_train(frame, config, confused)
    assert [r["round"] for r in result.rounds] == [0, 1] and result.rounds[1]["kept"] is False
    assert result.rounds[1]["offered"] > 0 and result.labels.height == 0
    assert result.stopped.startswith("round 1: validation macro-F1 dropped")


# --- augmentation and the training set ---------------------------------------------------------

def test_augmentation_tops_rare_classes_up_between_real_rows(small, truth):
    rows = pl.concat([truth.filter(pl.col(LABEL) == "none").head(400), truth.filter(pl.col(LABEL) == "power").head(10)])
    synthetic = augmentation.augment(rows, small)
    spec = small.labelling.augmentation
    assert set(synthetic[LABEL]) == {"power"} and synthetic.height == min(int(np.ceil(spec.min_class_fraction * 410)) - 10, 40)
    assert synthetic[ROW_ID].str.starts_with("aug:").all() and synthetic[ROW_ID].n_unique() == synthetic.height
    real = rows.filter(pl.col(LABEL) == "power")
    for name in ("uptime_h", "latency_ms", "rx_power_dbm"):
        assert real[name].min() <= synthetic[name].min() and synthetic[name].max() <= real[name].max()
    noise = augmentation.augment(rows, _with(small, augmentation={"method": "noise"}))
    assert noise.height == synthetic.height and noise["device_model"].is_in(real["device_model"].implode()).all()


def test_the_training_set_says_where_every_label_came_from(small, window):
    features, gold = window
    train_device_rows = features.filter(on_training_device(features, small) & ~pl.col(ROW_ID).is_in(gold[ROW_ID].implode()))
    other_rows = features.filter(~on_training_device(features, small))
    pseudo = train_device_rows.head(50).select(ROW_ID, pl.lit("none").alias(LABEL))
    weak = pl.concat([train_device_rows.slice(25, 60), other_rows.head(20)]).select(ROW_ID, pl.lit("fiber").alias(LABEL))
    queued = train_device_rows.slice(200, 30).select(ROW_ID, pl.lit("power").alias(LABEL), pl.lit("inbox").alias("label_source"))
    frame = build_training_set(features, pl.concat([gold, queued]), small,
                               [LabelSource(pseudo, "pseudo", 0.5), LabelSource(weak, "weak", 0.3)])

    counts = provenance_counts(frame)
    assert counts["pseudo"] == 50 and counts["weak"] == 60 - 25 and counts["active"] == 30
    assert counts["augmented"] > 0 and counts["gold"] > 0
    held_out = frame.filter(pl.col(SPLIT).is_in(["validation", "test"]))
    assert set(held_out[PROVENANCE]) == {"gold"} and (held_out[WEIGHT] == 1.0).all()
    assert frame.join(other_rows.head(20).select(ROW_ID), on=ROW_ID)[SPLIT].to_list().count(TRAIN) == 0
    weights = dict(frame.filter(pl.col(SPLIT) == TRAIN).group_by(PROVENANCE).agg(pl.col(WEIGHT).first()).iter_rows())
    assert weights == {"gold": 1.0, "active": 1.0, "pseudo": 0.5, "weak": 0.3, "augmented": small.labelling.augmentation.weight}
    assert frame.filter(pl.col(PROVENANCE) == "augmented")[ROW_ID].str.starts_with("aug:").all()
    assert frame.filter(pl.col(PROVENANCE).ne_missing("augmented")).height == features.height


def test_a_class_quota_keeps_the_most_confident_labels_per_gold_label(small, window):
    features, gold = window
    open_rows = features.filter(on_training_device(features, small) & ~pl.col(ROW_ID).is_in(gold[ROW_ID].implode()))
    weak = open_rows.head(3000).select(ROW_ID, pl.lit("power").alias(LABEL), pl.int_range(pl.len()).cast(pl.Float64).alias("confidence"))
    frame = build_training_set(features, gold, small, [LabelSource(weak, "weak", 0.3, class_quota=0.5)])
    gold_power = frame.filter((pl.col(SPLIT) == TRAIN) & (pl.col(PROVENANCE) == "gold") & (pl.col(LABEL) == "power")).height
    taken = frame.filter(pl.col(PROVENANCE) == "weak")
    assert taken.height == int(0.5 * gold_power) > 0
    assert set(taken[ROW_ID]) == set(weak.sort("confidence", descending=True).head(taken.height)[ROW_ID])
    nothing = build_training_set(features, gold, small, [LabelSource(weak.clear(), "weak", 0.3, class_quota=0.5)])
    assert provenance_counts(nothing)["weak"] == 0


def test_accuracy_is_never_measured_on_the_rows_people_were_asked_about():
    from pipeline.labels import unbiased

    gold = pl.DataFrame({ROW_ID: ["a", "b", "c"], LABEL: ["none", "fiber", "power"], "label_source": ["oracle", "inbox", "data"]})
    assert unbiased(gold)[ROW_ID].to_list() == ["a", "c"]
