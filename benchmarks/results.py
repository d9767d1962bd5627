"""How every benchmark reports: the machine its figures come from, and ``benchmarks/RESULTS.md``.

One module that every benchmark script imports and that imports none of them, so the scripts do not
import one another for these helpers (``run_all`` and ``feedback`` did, in a cycle).
"""

import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine(*details: str) -> str:
    """Where the figures come from, one description for every benchmark: figures from two runs
    compare only when this matches. ``details`` adds what a benchmark's figures also hang on (a
    library's version, a CPU feature)."""
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
    return ", ".join([platform.machine(), f"{os.cpu_count()} cores", f"{ram_gib:.1f} GiB RAM",
                      f"Python {platform.python_version()}", *details, platform.platform()])


def record(text: str) -> None:
    """Append a report to RESULTS.md, the benchmarks' running log."""
    with open(RESULTS, "a", encoding="utf-8") as fh:
        fh.write("\n" + text)


def emit_report(text: str, to_results: bool) -> None:
    """Print a benchmark's report, and append it to RESULTS.md when asked (``--record``)."""
    print(text)
    if to_results:
        record(text)
