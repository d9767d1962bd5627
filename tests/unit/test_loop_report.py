"""The loop report renders a replayed history (a real registry moved through releases, canaries and
rollbacks, drift reports with alarms) and says what the inputs say, escaped and self-contained."""

import datetime as dt
import re
from html.parser import HTMLParser

import polars as pl
import pytest

from pipeline import loop_report
from pipeline.dataset import ROW_ID, TIMESTAMP
from pipeline.label_inbox import LabelInbox
from pipeline.loop_report import headline, render
from pipeline.registry import CANARY_ROLLED_BACK, CANARY_ROLLED_OUT, CANARY_STARTED, PROMOTION, ROLLBACK
from tests.support.loop_history import REASONS, loop_history, replay, report_rows

LAST, SITES = dt.date(2026, 11, 30), ("north", "south", "east", "west")


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    return replay(tmp_path_factory.mktemp("loop"), LAST, 60, SITES)


class _Sections(HTMLParser):
    """The page's tables by class, as rows of cell texts; every tag seen."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.tags: list[tuple[str, dict]] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self._table = dict(attrs).get("class", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(page: str) -> _Sections:
    parser = _Sections()
    parser.feed(page)
    return parser


def _rows(parsed: _Sections, table: str) -> list[list[str]]:
    return [row for row in parsed.tables[table] if row]  # the header row has no td


def test_the_today_summary_says_status_serving_versions_last_retrain_and_open_alarms(replayed):
    history, registry, _ = replayed
    numbers = headline(history)
    assert numbers["status"] == "degraded"  # the day before a retrain: data and concept drift
    assert numbers["serving"] == {s: registry.serving(s) for s in SITES} == dict.fromkeys(SITES, "v004")
    assert numbers["last_retrain"] == "v006 (2026-11-21): full, label rule changed"
    assert numbers["open_alarms"] == ["data drift in temperature",
                                      "concept drift: accuracy 80.0% on 150 labels against 92.0% at training"]
    today = render(history).split('<section class="today" id="today">')[1].split("</section>")[0]
    assert 'Status: <b class="degraded">degraded</b>' in today
    assert all(f"{site}: <b>v004</b>" in today for site in SITES)
    assert "v006 (2026-11-21): full, label rule changed" in today and "concept drift: accuracy 80.0%" in today


def test_a_day_without_alarms_with_every_site_served_is_healthy(replayed):
    history, registry, reports = replayed
    quiet = loop_history(registry, reports.filter(pl.col("day") < dt.date(2026, 11, 26)), dt.date(2026, 11, 25), 60, SITES,
                         history.quarantine, history.inbox)
    assert headline(quiet)["status"] == "healthy" and headline(quiet)["open_alarms"] == []


def test_releases_canaries_and_rollbacks_are_the_registry_ledger_of_the_window(replayed):
    history, registry, _ = replayed
    rows = _rows(_parse(render(history)), "releases")
    ledger = registry.history()
    assert [(r[0], r[1], r[2]) for r in rows] == [(e["at"][:10], e["event"], e["version"]) for e in ledger]
    assert {r[1] for r in rows} == {PROMOTION, CANARY_STARTED, CANARY_ROLLED_OUT, CANARY_ROLLED_BACK, ROLLBACK}
    [rollback] = [r for r in rows if r[1] == ROLLBACK]
    assert rollback[:7] == ["2026-11-20", ROLLBACK, "v004", "", "v005", "operator: bad firmware push", "ops"]
    assert all(r[3] == "north" for r in rows if r[1] == CANARY_STARTED)
    short = loop_history(registry, replayed[2], LAST, 15, SITES, [], [])
    assert [r[1] for r in _rows(_parse(render(short)), "releases")] == [ROLLBACK, CANARY_STARTED, CANARY_ROLLED_BACK]


def test_retrains_are_the_versions_trained_in_the_window_with_their_reason(replayed):
    history, registry, _ = replayed
    rows = _rows(_parse(render(history)), "retrains")
    expected = [(registry.get(v).partition, v, registry.get(v).entry["lineage"]["teacher_update"]["reason"]) for v in registry.versions()]
    assert [(r[0], r[1], r[3]) for r in rows] == expected
    assert len(rows) == 6 and rows[5][2:6] == ["full", "label rule changed", "2026-11-21", "90.0%"]


def test_alarm_days_and_the_most_drifted_features_follow_the_drift_reports(replayed):
    history, _, reports = replayed
    parsed = _parse(render(history))
    alarm_days = sorted({str(d) for d in reports.filter(pl.col("drifted"))["day"].to_list()})
    assert [r[0] for r in _rows(parsed, "alarms")] == alarm_days
    concept = {str(d) for d in reports.filter((pl.col("kind") == "concept") & pl.col("drifted"))["day"].to_list()}
    assert {r[0] for r in _rows(parsed, "alarms") if r[4] == "yes"} == concept
    assert all(r[5] == "80.0%" and r[6] == "150" for r in _rows(parsed, "alarms") if r[0] in concept)
    features = _rows(parsed, "features")
    drifted = reports.filter(pl.col("drifted") & (pl.col("kind") == "numeric")).group_by("test").len()
    assert {r[0]: int(r[1]) for r in features if int(r[1])} == dict(drifted.iter_rows())
    assert features[0][2] == "3.00"  # effect 0.3 over a floor of 0.1


def test_serving_versions_per_site_replay_the_canary_on_its_site_only(replayed):
    history, _, _ = replayed
    timeline = loop_report.serving_timeline(history)
    assert ("2026-10-22", "v003") in [(str(d), v) for d, v in timeline["north"]]
    assert all(v != "v003" for s in SITES[1:] for _, v in timeline[s])
    assert timeline["south"][-1] == (dt.date(2026, 11, 20), "v004")
    rows = {r[0]: r for r in _rows(_parse(render(history)), "serving")}
    assert set(rows) == set(SITES) and all(r[1] == "v004" for r in rows.values())


def test_quarantine_reasons_and_the_inbox_backlog_are_counted_over_the_window(replayed):
    history, _, _ = replayed
    reasons = dict((r[0], int(r[1])) for r in _rows(_parse(render(history)), "reasons"))
    assert reasons == {reason: 7 * 20 for reason in REASONS}  # each reason first (5) on 20 days and second (2) on 20
    assert headline(history)["label_backlog"] == 5 * 60 and headline(history)["quarantined_today"] == history.quarantine[-1].rows


def test_every_string_from_data_is_escaped(replayed):
    page = render(replayed[0])
    assert "<script" not in page and "<b>site</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page and "&lt;b&gt;site&lt;/b&gt;: unknown" in page
    assert "load &amp; wear" in page
    assert {tag for tag, _ in _parse(page).tags} <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "section", "p", "b",
                                                      "ul", "li", "table", "tr", "th", "td", "svg", "rect", "line", "text", "polyline",
                                                      "circle", "polygon"}


def test_the_page_is_self_contained(replayed):
    page = render(replayed[0])
    assert not re.search(r"(src|href)=|https?://(?!www\.w3\.org/2000/svg)|@import|url\(", page)
    assert page.count("<svg") == 3


def test_the_estimated_accuracy_band_shows_only_once_drift_reports_carry_it(replayed):
    history, registry, reports = replayed
    assert "estimate-band" not in render(history)
    estimated = reports.filter(pl.col("day") != LAST).vstack(report_rows(LAST, "v004", set(), 0.9, 150, estimate=(0.88, 0.85, 0.91)))
    with_estimate = loop_history(registry, estimated, LAST, 60, SITES, [], [])
    assert with_estimate.drift_days[-1].estimate == loop_report.Estimate(0.88, 0.85, 0.91)
    assert 'class="estimate-band"' in render(with_estimate)


def test_the_inbox_backlog_is_queued_rows_not_yet_answered(tmp_path):
    inbox, day = LabelInbox(tmp_path / "inbox"), dt.date(2026, 10, 1)
    rows = pl.DataFrame({ROW_ID: ["a", "b", "c"], TIMESTAMP: ["2026-10-01T00:00:00+00:00"] * 3})
    inbox.write_queue(day, rows)
    answers = inbox.answered_dir / "2026-10-02"
    answers.mkdir(parents=True)
    (answers / "alice.csv").write_text("row_id,label\na,ok\nb,ok\nzz,ok\n")
    days = loop_report.inbox_days(inbox, ("ok", "fault"), day - dt.timedelta(days=1), day + dt.timedelta(days=2))
    assert [(d.queued, d.answered, d.backlog) for d in days] == [(0, 0, 0), (3, 0, 3), (3, 2, 1), (3, 2, 1)]


def test_plots_scale_to_the_window(replayed):
    history = replayed[0]
    svg = loop_report.accuracy_svg(history)
    xs = [float(x) for x in re.findall(r'<circle cx="([\d.]+)"', svg)]
    assert len(xs) == 60 and min(xs) == pytest.approx(36) and max(xs) == pytest.approx(720 - 36)
    assert len(re.findall('class="alarm"', svg)) == headline(history)["alarm_days"] == 12
