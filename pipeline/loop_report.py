"""The loop report: one self-contained HTML page per day that answers the operator's morning
question: is the model healthy, what did Evergreen do over the last weeks, and why.

Built from plain inputs (the registry's versions and ledger, the daily drift reports, quarantine
counts, the label inbox), so it renders without Dagster and replays any history. The page carries
everything inline (plots as SVG written here, no script, no stylesheet or font from the network): it
opens from a mail attachment or an air-gapped machine, and stays small (Evidently's reports grow to
hundreds of MB because they embed the rows; this one embeds only the daily figures).

Every string that comes from data (versions, feature names, reasons, who moved what) is escaped.
Ledger events are placed on the UTC day they happened (a backfill's releases fall on the day it ran).
"""

import datetime as dt
import html
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipeline import drift
from pipeline.dataset import ROW_ID
from pipeline.label_inbox import LabelInbox
from pipeline.registry import (
    CANARY_ROLLED_BACK,
    CANARY_ROLLED_OUT,
    CANARY_STARTED,
    CANARY_SUPERSEDED,
    PROMOTION,
    ROLLBACK,
)

TOP_FEATURES, TOP_REASONS = 8, 8


@dataclass(frozen=True)
class Estimate:
    """An accuracy estimated without labels, with its band."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class DriftDay:
    """What the report needs of one day's drift report."""

    day: dt.date
    production_version: str
    summary: drift.DriftSummary
    effects: dict[str, float] = field(default_factory=dict)
    """Each input's effect as a multiple of its floor (tested inputs only)."""
    estimate: Estimate | None = None


@dataclass(frozen=True)
class QuarantineDay:
    day: dt.date
    rows: int
    reasons: dict[str, int]


@dataclass(frozen=True)
class InboxDay:
    day: dt.date
    queued: int
    answered: int

    @property
    def backlog(self) -> int:
        return self.queued - self.answered


@dataclass(frozen=True)
class LoopHistory:
    """Everything one day's report shows, already loaded; ``days`` ends at ``day``."""

    day: dt.date
    days: int
    sites: tuple[str, ...]
    serving: dict[str, str | None]
    """Each site's version now (the registry's ``serving``)."""
    versions: dict[str, dict]
    """Version id -> its registry entry."""
    ledger: list[dict]
    drift_days: list[DriftDay]
    quarantine: list[QuarantineDay] = field(default_factory=list)
    inbox: list[InboxDay] = field(default_factory=list)

    @property
    def first_day(self) -> dt.date:
        return self.day - dt.timedelta(days=self.days - 1)

    def in_window(self, day: dt.date) -> bool:
        return self.first_day <= day <= self.day


# Inputs.

def drift_days(reports: pl.DataFrame, n_features: int, full_retrain_drop: float) -> list[DriftDay]:
    """One ``DriftDay`` per day of ``reports`` (drift reports of many days, concatenated), oldest first."""
    if reports.is_empty():
        return []
    days = []
    for (day,), report in sorted(reports.group_by(drift.DAY), key=lambda group: group[0][0]):
        inputs = report.filter(pl.col("kind").is_in([drift.NUMERIC, drift.CATEGORICAL]) & pl.col("tested"))
        effects = {r["test"]: r["effect"] / r["floor"] for r in inputs.iter_rows(named=True) if r["floor"] and r["effect"] is not None}
        days.append(DriftDay(day, report[drift.PRODUCTION_VERSION][0], drift.summarise(report, n_features, full_retrain_drop),
                             effects, _estimate(report)))
    return days


def _estimate(report: pl.DataFrame) -> Estimate | None:
    if not {"low", "high"} <= set(report.columns):
        return None
    rows = report.filter((pl.col("kind") == drift.ESTIMATE) & (pl.col("test") == drift.ESTIMATED_ACCURACY_TEST) & pl.col("statistic").is_not_null())
    if rows.is_empty():
        return None
    row = rows.row(0, named=True)
    return Estimate(row["statistic"], row["low"], row["high"])


def inbox_days(inbox: LabelInbox, classes: tuple[str, ...], first: dt.date, last: dt.date) -> list[InboxDay]:
    """Rows queued for a person and answers merged, cumulative, on each day of ``first``..``last``."""
    queued = {dt.date.fromisoformat(p.stem): _queue_rows(p) for p in inbox.queue_dir.glob("*.csv")}
    answered = inbox.merged_by_day(classes, last)
    merged: set[str] = set().union(*(rows for d, rows in answered.items() if d < first))
    result, total = [], sum(n for d, n in queued.items() if d < first)
    for day in _days(first, last):
        merged |= answered.get(day, set())
        total += queued.get(day, 0)
        result.append(InboxDay(day, total, len(merged)))
    return result


def _queue_rows(path: Path) -> int:
    return pl.read_csv(path, columns=[ROW_ID], schema_overrides={ROW_ID: pl.String}).height


def _days(first: dt.date, last: dt.date) -> Iterable[dt.date]:
    return (first + dt.timedelta(days=k) for k in range((last - first).days + 1))


# What the page says.

def event_day(event: dict) -> dt.date:
    return dt.datetime.fromisoformat(event["at"]).astimezone(dt.timezone.utc).date()


def retrains(history: LoopHistory) -> list[dict]:
    """Versions trained on a day of the window, oldest first: day, version, method, why."""
    rows = []
    for version, entry in history.versions.items():
        lineage = entry.get("lineage", {})
        day = dt.date.fromisoformat(lineage["partition"])
        if history.in_window(day):
            update = lineage.get("teacher_update", {})
            rows.append({"day": day, "version": version, "method": update.get("method", "?"), "reason": update.get("reason", ""),
                         "change_day": lineage.get("change_day"), "accuracy": entry.get("metrics", {}).get("student", {}).get("accuracy")})
    return sorted(rows, key=lambda r: (r["day"], r["version"]))


def releases(history: LoopHistory) -> list[dict]:
    """The ledger's moves of the window, oldest first."""
    return [e for e in history.ledger if history.in_window(event_day(e))]


def open_alarms(today: DriftDay | None) -> list[str]:
    if today is None:
        return []
    summary, alarms = today.summary, []
    if summary.data_drift:
        alarms.append(f"data drift in {', '.join(summary.drifted_features)}")
    if summary.prediction_drift:
        alarms.append("prediction drift")
    if summary.concept_drift:
        alarms.append(f"concept drift: accuracy {_pct(summary.fresh_accuracy)} on {summary.fresh_labels} labels "
                      f"against {_pct(summary.reference_accuracy)} at training")
    return alarms


def headline(history: LoopHistory) -> dict:
    """The day's state in a few numbers: what the top of the page and the asset's metadata show."""
    today = next((d for d in history.drift_days if d.day == history.day), None)
    alarms = open_alarms(today)
    rolled_back = [e for e in releases(history) if event_day(e) == history.day and e["event"] in (ROLLBACK, CANARY_ROLLED_BACK)]
    serving = any(history.serving.values())
    trained = retrains(history)
    last = trained[-1] if trained else None
    quarantined = next((q.rows for q in history.quarantine if q.day == history.day), 0)
    return {
        "status": "healthy" if serving and not alarms and not rolled_back else "degraded",
        "serving": dict(history.serving), "open_alarms": alarms,
        "last_retrain": f"{last['version']} ({last['day']}): {last['method']}, {last['reason']}" if last else "none in the window",
        "fresh_label_accuracy": today.summary.fresh_accuracy if today else None,
        "fresh_labels": today.summary.fresh_labels if today else 0,
        "alarm_days": sum(d.summary.alarm for d in history.drift_days if history.in_window(d.day)),
        "retrains": len(trained), "releases": len(releases(history)),
        "quarantined_today": quarantined, "label_backlog": history.inbox[-1].backlog if history.inbox else 0,
    }


def top_features(history: LoopHistory) -> list[tuple[str, int, float]]:
    """(feature, days drifted, largest effect / floor) over the window, most drifted first."""
    days: Counter[str] = Counter()
    largest: dict[str, float] = {}
    for d in history.drift_days:
        if history.in_window(d.day):
            days.update(d.summary.drifted_features)
            for name, ratio in d.effects.items():
                largest[name] = max(largest.get(name, 0.0), ratio)
    ranked = sorted(largest, key=lambda n: (-days[n], -largest[n], n))
    return [(n, days[n], largest[n]) for n in ranked[:TOP_FEATURES]]


def top_reasons(history: LoopHistory) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    for q in history.quarantine:
        if history.in_window(q.day):
            counts.update(q.reasons)
    return counts.most_common(TOP_REASONS)


def serving_timeline(history: LoopHistory) -> dict[str, list[tuple[dt.date, str]]]:
    """Per site, (day, version) whenever the version it serves changed in the window, replayed from the ledger."""
    production: str | None = None
    canary: tuple[str, set[str]] | None = None
    timeline: dict[str, list[tuple[dt.date, str]]] = {s: [] for s in history.sites}
    for event in history.ledger:
        kind, version = event["event"], event["version"]
        if kind in (PROMOTION, ROLLBACK, CANARY_ROLLED_OUT):
            production, canary = version, None
        elif kind == CANARY_STARTED:
            canary = (version, set(event.get("sites", [])))
        elif kind in (CANARY_ROLLED_BACK, CANARY_SUPERSEDED) and canary and canary[0] == version:
            canary = None
        for site, changes in timeline.items():
            now = canary[0] if canary and site in canary[1] else production
            if now and (not changes or changes[-1][1] != now):
                changes.append((event_day(event), now))
    return {s: [c for c in changes if history.in_window(c[0])] for s, changes in timeline.items()}


# SVG.

_WIDTH, _HEIGHT, _PAD = 720, 200, 36
_RED, _BLUE, _GREY, _GREEN = "#c0392b", "#1f5fa8", "#888", "#2e7d32"


def _x(history: LoopHistory, day: dt.date) -> float:
    span = max(history.days - 1, 1)
    return _PAD + (_WIDTH - 2 * _PAD) * (day - history.first_day).days / span


def _y(value: float, low: float, high: float) -> float:
    return _HEIGHT - _PAD + (value - low) / ((high - low) or 1.0) * (2 * _PAD - _HEIGHT)


def _svg(title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" height="{_HEIGHT}" '
            f'role="img" aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>'
            f'<rect width="{_WIDTH}" height="{_HEIGHT}" fill="#fff"/>{"".join(body)}</svg>')


def _axes(history: LoopHistory, low: float, high: float, fmt: str) -> list[str]:
    body = [f'<line x1="{_PAD}" y1="{_HEIGHT - _PAD}" x2="{_WIDTH - _PAD}" y2="{_HEIGHT - _PAD}" stroke="{_GREY}"/>']
    for value in (low, high):
        y = _y(value, low, high)
        body.append(f'<text x="{_PAD - 4}" y="{y + 4:.0f}" font-size="10" text-anchor="end">{format(value, fmt)}</text>')
    for day in (history.first_day, history.day):
        body.append(f'<text x="{_x(history, day):.0f}" y="{_HEIGHT - _PAD + 14}" font-size="10" text-anchor="middle">{day}</text>')
    return body


def _polyline(points: Sequence[tuple[float, float]], colour: str, dash: str = "") -> str:
    if not points:
        return ""
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"{f" stroke-dasharray={chr(34)}{dash}{chr(34)}" if dash else ""}/>'


def accuracy_svg(history: LoopHistory) -> str:
    """Accuracy on returned labels per day, accuracy at training (dashed), the estimated accuracy's
    band when reports carry it, alarm days as red ticks and releases as green lines."""
    days = [d for d in history.drift_days if history.in_window(d.day)]
    values = [v for d in days for v in (d.summary.fresh_accuracy, d.summary.reference_accuracy) if v is not None]
    values += [v for d in days if d.estimate for v in (d.estimate.low, d.estimate.high)]
    low = math.floor(min([*values, 0.5]) * 10) / 10
    body = _axes(history, low, 1.0, ".1f")
    band = [d for d in days if d.estimate]
    if band:
        upper = [(_x(history, d.day), _y(d.estimate.high, low, 1.0)) for d in band if d.estimate]
        lower = [(_x(history, d.day), _y(d.estimate.low, low, 1.0)) for d in reversed(band) if d.estimate]
        body.append(f'<polygon class="estimate-band" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in upper + lower)}" fill="{_BLUE}" fill-opacity="0.15"/>')
        body.append(_polyline([(_x(history, d.day), _y(d.estimate.value, low, 1.0)) for d in band if d.estimate], _BLUE, "2 2"))
    for event in releases(history):
        x = _x(history, event_day(event))
        body.append(f'<line x1="{x:.1f}" y1="{_PAD}" x2="{x:.1f}" y2="{_HEIGHT - _PAD}" stroke="{_GREEN}" stroke-opacity="0.5"/>')
    for d in days:
        if d.summary.alarm:
            x = _x(history, d.day)
            body.append(f'<line class="alarm" x1="{x:.1f}" y1="{_HEIGHT - _PAD}" x2="{x:.1f}" y2="{_HEIGHT - _PAD - 8}" stroke="{_RED}" stroke-width="2"/>')
    reference = [(_x(history, d.day), _y(d.summary.reference_accuracy, low, 1.0)) for d in days if d.summary.reference_accuracy is not None]
    body.append(_polyline(reference, _GREY, "4 3"))
    measured = [(_x(history, d.day), _y(d.summary.fresh_accuracy, low, 1.0)) for d in days if d.summary.fresh_accuracy is not None]
    body.append(_polyline(measured, _BLUE))
    body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{_BLUE}"/>' for x, y in measured]
    return _svg("accuracy on returned labels per day", body)


def bars_svg(history: LoopHistory, values: dict[dt.date, int], title: str, colour: str) -> str:
    """One bar per day of the window."""
    high = max([*values.values(), 1])
    body = _axes(history, 0, high, "d")
    width = max((_WIDTH - 2 * _PAD) / history.days - 1, 1)
    for day, value in values.items():
        if history.in_window(day) and value:
            top = _y(value, 0, high)
            body.append(f'<rect x="{_x(history, day) - width / 2:.1f}" y="{top:.1f}" width="{width:.1f}" '
                        f'height="{_HEIGHT - _PAD - top:.1f}" fill="{colour}"/>')
    return _svg(title, body)


# HTML.

_STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:760px;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
.healthy{color:#2e7d32}.degraded{color:#c0392b}.today{background:#f6f6f6;padding:.8em 1em;border-radius:6px}
.none{color:#888}"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], css: str = "") -> str:
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return '<p class="none">none in the window</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


def _today(history: LoopHistory, numbers: dict) -> str:
    alarms = "".join(f"<li>{_e(a)}</li>" for a in numbers["open_alarms"]) or "<li>none</li>"
    serving = ", ".join(f"{_e(site)}: <b>{_e(version or 'none')}</b>" for site, version in numbers["serving"].items())
    return (f'<section class="today" id="today"><p>Status: <b class="{numbers["status"]}">{numbers["status"]}</b></p>'
            f"<p>Serving: {serving or 'no site yet'}</p><p>Last retrain: {_e(numbers['last_retrain'])}</p>"
            f"<p>Accuracy on today's returned labels: {_pct(numbers['fresh_label_accuracy'])} "
            f"({numbers['fresh_labels']} labels) · quarantined today: {numbers['quarantined_today']} · "
            f"label inbox backlog: {numbers['label_backlog']}</p><p>Open alarms:</p><ul>{alarms}</ul></section>")


def render(history: LoopHistory) -> str:
    """The whole page, one string."""
    numbers = headline(history)
    window = [d for d in history.drift_days if history.in_window(d.day)]
    timeline = serving_timeline(history)
    sections = [
        f"<h1>Evergreen loop report, {history.day} (last {history.days} days)</h1>", _today(history, numbers),
        "<h2>Accuracy on returned labels</h2>", accuracy_svg(history),
        "<p>Blue: measured on the labels that came back each day; grey dashed: the serving model's test accuracy; "
        "red ticks: alarm days; green lines: releases and rollbacks. The estimated accuracy and its band appear once "
        "drift reports carry them.</p>",
        "<h2>Serving version per site</h2>",
        _table(("site", "serving now", "changes in the window"),
               ((s, history.serving.get(s) or "none", "; ".join(f"{d}: {v}" for d, v in timeline.get(s, []))) for s in history.sites),
               "serving"),
        "<h2>Alarms</h2>",
        _table(("day", "production", "data drift", "prediction", "concept", "fresh accuracy", "labels"),
               ((d.day, d.production_version, ", ".join(d.summary.drifted_features), _yes(d.summary.prediction_drift),
                 _yes(d.summary.concept_drift), _pct(d.summary.fresh_accuracy), d.summary.fresh_labels)
                for d in window if d.summary.alarm), "alarms"),
        "<h2>Retrains and why</h2>",
        _table(("day", "version", "method", "why", "label-rule change", "student accuracy"),
               ((r["day"], r["version"], r["method"], r["reason"], r["change_day"] or "", _pct(r["accuracy"])) for r in retrains(history)),
               "retrains"),
        "<h2>Releases, canaries, rollbacks</h2>",
        _table(("day", "event", "version", "sites", "replaced", "why", "by"),
               ((event_day(e), e["event"], e["version"], ", ".join(e.get("sites", [])), e.get("replaced") or "", e["reason"], e["by"])
                for e in releases(history)), "releases"),
        "<h2>Most drifted features</h2>",
        _table(("feature", "days drifted", "largest effect / floor"), ((n, k, f"{r:.2f}") for n, k, r in top_features(history)), "features"),
        "<h2>Quarantined rows</h2>",
        bars_svg(history, {q.day: q.rows for q in history.quarantine}, "rows quarantined per day", _RED),
        _table(("reason", "rows"), top_reasons(history), "reasons"),
        "<h2>Label inbox backlog</h2>",
        bars_svg(history, {i.day: i.backlog for i in history.inbox}, "rows waiting for a person per day", _BLUE),
    ]
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>Evergreen loop report {history.day}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")


def _yes(flag: bool) -> str:
    return "yes" if flag else ""
