"""The metadata helper: tables with a schema, rounding, and the small-sample mark."""

import math

import dagster as dg
import numpy as np
import pytest

from assets import metadata as md
from assets.data import FAILURE_COLUMNS
from pipeline.dataset import ReportSpec


def test_a_table_has_the_columns_in_order_and_formats_its_cells():
    columns = [md.Column("name"), md.Column("rows", "int", "rows measured on"), md.Column("accuracy", "float"),
               md.Column("features"), md.Column("per_class")]
    table = md.table([{"name": "a", "rows": 12, "accuracy": 0.912345678, "features": ["x", "y"], "per_class": {"p": 1, "q": 2}},
                      {"name": "b", "rows": 3, "features": []}], columns)
    assert isinstance(table, dg.TableMetadataValue)
    assert [(c.name, c.type, c.description) for c in table.schema.columns] == [
        ("name", "string", None), ("rows", "int", "rows measured on"), ("accuracy", "float", None),
        ("features", "string", None), ("per_class", "string", None)]
    assert md.records(table) == [
        {"name": "a", "rows": 12, "accuracy": 0.9123, "features": "x, y", "per_class": "p: 1, q: 2"},
        {"name": "b", "rows": 3, "accuracy": None, "features": "none", "per_class": None}]


def test_counts_and_an_empty_table_keep_their_schema():
    table = md.counts({"range": 7, "partition": 2}, md.Column("reason"), md.Column("rows", "int"))
    assert md.records(table) == [{"reason": "range", "rows": 7}, {"reason": "partition", "rows": 2}]
    empty = md.counts({}, md.Column("file"), md.Column("reason"))
    assert md.records(empty) == [] and [c.name for c in empty.schema.columns] == ["file", "reason"]
    assert md.plain(table) == md.records(table) and md.plain(3) == 3
    numpy = md.records(md.counts({"a": np.int64(5)}, md.Column("name"), md.Column("rows", "int")))
    assert numpy == [{"name": "a", "rows": 5}] and type(numpy[0]["rows"]) is int


@pytest.mark.parametrize(("value", "expected"), [
    (0.987654, 0.9877), (1.0, 1.0), (0.000123456, 0.0001235), (123456.7, 123500.0), (0.0, 0.0), (None, None), (-2.34567, -2.346),
])
def test_floats_keep_four_significant_digits(value, expected):
    assert md.rounded(value) == expected


def test_a_metric_is_rounded_and_nan_when_there_was_nothing_to_measure():
    assert md.metric(0.912345).value == 0.9123 and math.isnan(md.metric(None).value)
    assert md.seconds(12.3456) == 12.3


def test_a_metric_on_fewer_rows_than_configured_is_a_small_sample():
    threshold = ReportSpec().min_metric_rows
    assert threshold == 200
    assert md.sample(threshold - 1, threshold) == "small sample (< 200 rows)"
    assert md.sample(threshold, threshold) == "ok"



def test_failed_expectations_are_a_table():
    """What a failing Great Expectations check shows (``validation.CheckOutcome.failures``): per
    expectation, the column, the count and a few unexpected values."""
    failures = [{"expectation": "expect_column_values_to_be_between", "column": "latency_ms", "unexpected_count": 144,
                 "unexpected_percent": 10.0034722, "examples": ["-5.0", "-5.0"]},
                {"expectation": "expect_table_columns_to_match_set", "column": "None"}]
    table = md.table(failures, FAILURE_COLUMNS)
    assert [c.name for c in table.schema.columns] == ["expectation", "column", "unexpected_count", "unexpected_percent", "examples"]
    assert md.records(table) == [
        {"expectation": "expect_column_values_to_be_between", "column": "latency_ms", "unexpected_count": 144,
         "unexpected_percent": 10.0, "examples": "-5.0, -5.0"},
        {"expectation": "expect_table_columns_to_match_set", "column": "None", "unexpected_count": None,
         "unexpected_percent": None, "examples": None}]
