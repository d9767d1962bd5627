"""The loop report's size, render time and browser open time for a 4-site history of 60 and 365 days.

    python -m benchmarks.loop_report [--record]

The history is synthetic (``tests.support.loop_history.replay``: a real registry moved through
releases, canaries and rollbacks, a drift report per day): rendering reads only what the report
shows, so its cost hangs on the number of days and events, not on how they were produced. Goal
(issue 20): at most 2 MB and 2 s to render at 365 days, and under 2 s to open in a browser.
"""

import argparse
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

from benchmarks.results import emit_report, machine
from pipeline.dataset import ROW_ID, TIMESTAMP
from pipeline.label_inbox import LabelInbox
from pipeline.loop_report import inbox_days, render
from tests.support.browser import BrowserMissing, chromium_binary, open_page
from tests.support.loop_history import loop_history, replay

SITES, LAST, REPEATS = ("north", "south", "east", "west"), dt.date(2026, 11, 30), 5


def inbox_seconds(root: Path, days: int) -> float:
    """Reading a label inbox of ``days`` days (a queue of 50 rows a day, 45 answered the next day) into the backlog."""
    inbox, first = LabelInbox(root / "inbox"), LAST - dt.timedelta(days=days - 1)
    for k in range(days):
        day = first + dt.timedelta(days=k)
        ids = [f"{day}-{i}" for i in range(50)]
        inbox.write_queue(day, pl.DataFrame({ROW_ID: ids, TIMESTAMP: [f"{day}T12:00:00+00:00"] * 50}))
        answered = inbox.answered_dir / (day + dt.timedelta(days=1)).isoformat()
        answered.mkdir(parents=True)
        (answered / "labeller.csv").write_text("row_id,label\n" + "".join(f"{i},ok\n" for i in ids[:45]))
    start = time.perf_counter()
    inbox_days(inbox, ("ok", "fault"), first, LAST)
    return time.perf_counter() - start


def measure(days: int, root: Path, browser: str | None) -> dict:
    root.mkdir()
    replayed, registry, reports = replay(root, LAST, days, SITES)
    seconds = []
    for _ in range(REPEATS):  # from the plain inputs: the registry on disk and the drift reports' rows
        start = time.perf_counter()
        history = loop_history(registry, reports, LAST, days, SITES, replayed.quarantine, replayed.inbox)
        page = render(history)
        seconds.append(time.perf_counter() - start)
    path = root / f"{days}.html"
    path.write_text(page, encoding="utf-8")
    opened = [open_page(path, browser).seconds for _ in range(3)] if browser else []
    return {"days": days, "bytes": len(page.encode()), "render_s": statistics.median(seconds),
            "open_s": statistics.median(opened) if opened else None, "events": len(history.ledger),
            "inbox_s": inbox_seconds(root, days)}


def report(rows: list[dict], browser: str | None) -> str:
    lines = [f"## {dt.date.today()}: the loop report's size and time (issue 20)",
             f"Machine: {machine()}. Command: `python -m benchmarks.loop_report` (synthetic 4-site history, a retrain every "
             f"10 days with a canary each, median of {REPEATS} renders from the registry on disk and the drift reports' rows; browser: {browser or 'none found'}, median of 3 opens, "
             "navigation to the load event; the label inbox, 50 rows queued a day and 45 answered, is read once).", "",
             "| days | ledger events | page size | time to generate | opens in Chromium | reading the label inbox |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        opened = f"{r['open_s'] * 1000:.0f} ms" if r["open_s"] is not None else "not measured"
        lines.append(f"| {r['days']} | {r['events']} | {r['bytes'] / 1024:.0f} KiB | {r['render_s'] * 1000:.1f} ms | {opened} | {r['inbox_s']:.2f} s |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    try:
        browser: str | None = chromium_binary()
    except BrowserMissing:
        browser = None
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(days, Path(tmp) / str(days), browser) for days in (60, 365)]
    emit_report(report(rows, browser), args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
