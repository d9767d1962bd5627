"""CSV files that people open in a spreadsheet, safe from formula injection (OWASP's rule).

A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is run as a
formula by spreadsheet programs (``=HYPERLINK(...)`` from a user's landing file would reach a
labeller as a live link). Such cells are written with a leading apostrophe, which spreadsheets show
as text; ``restored`` takes it off again, so what is read back is what was written. A cell that
already starts with apostrophes before a formula character gets one more, so the round trip is
exact for every value.
"""

import re
from pathlib import Path

import polars as pl

from pipeline import atomic

_FORMULA = r"^'*[=+\-@\t\r]"
_FORMULA_RE = re.compile(_FORMULA)


def neutralised(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with every formula-leading text cell prefixed by an apostrophe."""
    text = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    return frame.with_columns(
        pl.when(pl.col(c).str.contains(_FORMULA)).then(pl.lit("'") + pl.col(c)).otherwise(pl.col(c)).alias(c) for c in text
    )


def restored(cell: str) -> str:
    """A cell as it was before ``neutralised`` (cells it left alone come back as they are)."""
    return cell[1:] if cell.startswith("'") and _FORMULA_RE.match(cell) else cell


def write(frame: pl.DataFrame, path: Path) -> Path:
    """Write ``frame`` as a neutralised CSV, atomically (a reader sees the old file or the new one)."""
    with atomic.atomic_path(path) as tmp:
        neutralised(frame).write_csv(tmp)
    return path
