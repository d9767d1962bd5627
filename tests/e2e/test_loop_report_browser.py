"""The loop report opens in a real headless Chromium: it renders with no console error, asks for
nothing beyond its own file, and its plots take room on the page."""

import datetime as dt

import pytest

from pipeline.loop_report import render
from tests.support.browser import chromium_or_skip, open_page
from tests.support.loop_history import replay

pytestmark = pytest.mark.slow  # starts Chromium


def test_the_report_renders_in_chromium_with_no_console_error_and_plots_of_nonzero_size(tmp_path):
    binary = chromium_or_skip()
    history, _, _ = replay(tmp_path, dt.date(2026, 11, 30), 60, ("north", "south", "east", "west"))
    page = tmp_path / "2026-11-30.html"
    page.write_text(render(history), encoding="utf-8")
    opened = open_page(page, binary)
    assert opened.console_errors == []
    assert opened.requests == [page.resolve().as_uri()]  # no network, no other file
    assert len(opened.plot_sizes) == 3 and all(w > 0 and h > 0 for w, h in opened.plot_sizes)
