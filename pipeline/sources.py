"""Where raw telemetry comes from: the simulator, or CSV / Parquet files in a landing folder.

A landing file belongs to the daily partition whose date (``YYYY-MM-DD``) its name or folder carries,
so the landing sensor can map a new file to its partition without opening it. Every other entry of
the landing folder (another format, a date that is not one, a dangling link) is reported with its
reason, never passed over: ``landing_inventory``. Hidden entries (a leading dot) are in-flight
copies of writers that rename into place, and are not entries yet. Raw is kept as it
came: CSV cells stay strings (a malformed cell is not lost to type inference), and every row records
the file and line it came from, so later errors and quarantine reasons can name them.
"""

import codecs
import csv
import datetime as dt
import functools
import gzip
import hashlib
import io
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import polars as pl

from pipeline.dataset import DEVICE_ID, SITE, DatasetConfig
from pipeline.message_contract import PREDICTED_CLASS
from pipeline.simulator import TRUTH, simulate_day

SOURCE_FILE, SOURCE_ROW = "_source_file", "_source_row"
LANDING_SUFFIXES = (".csv", ".csv.gz", ".parquet")
_DATE_IN_PATH = re.compile(r"(?<!\d)(\d{4})-(\d{1,2})-(\d{1,2})(?!\d)")
_HEAD_BYTES = 64 * 1024
"""A CSV header line longer than this is not a header. Checked before polars reads: a 40 MB file
whose line breaks were lost, read as a header of 21 million columns, took polars 90 s and 12 GB."""
_LONG_LINE_BYTES = 1024 * 1024
_SEPARATORS = (",", ";", "\t", "|")
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_T = TypeVar("_T")
_MAGIC = {b"PAR1": "a Parquet file", b"\x89PNG": "a PNG image", b"PK\x03\x04": "a ZIP archive (an .xlsx workbook?)",
          b"\x1f\x8b": "a gzip archive", b"%PDF": "a PDF document", b"\xff\xd8\xff": "a JPEG image"}


class SourceError(ValueError):
    """A landing file that cannot be read at all; the message names the file."""


@dataclass(frozen=True)
class LandingFile:
    path: Path
    day: dt.date

    @property
    def partition_key(self) -> str:
        return self.day.isoformat()

    def content_hash(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class SkippedEntry:
    """An entry of the landing folder that is not read, why, and the day its name gives (if any)."""

    path: Path
    reason: str
    day: dt.date | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class LandingInventory:
    """Every entry of a landing folder: the files read, and the entries skipped with their reasons."""

    files: list[LandingFile]
    skipped: list[SkippedEntry]

    def skipped_on(self, day: dt.date | None) -> list[SkippedEntry]:
        """Entries of ``day`` that are not read (``None``: those whose name gives no day)."""
        return [e for e in self.skipped if e.day == day]


def landing_suffix(path: Path) -> str | None:
    """The data format a name announces (``.csv``, ``.csv.gz``, ``.parquet``), else None."""
    name = path.name.lower()
    return next((s for s in sorted(LANDING_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def landing_file(path: Path) -> LandingFile | None:
    """The landing file at ``path`` with its day, or None when it is not a dated data file."""
    entry = _landing_entry(path)
    return entry if isinstance(entry, LandingFile) else None


def _landing_entry(path: Path) -> LandingFile | SkippedEntry | None:
    """A dated data file, or why the entry is skipped; None for hidden in-flight entries."""
    if path.name.startswith("."):
        return None
    day, problem = _day_of(path)
    if path.is_symlink() and not path.exists():
        return SkippedEntry(path, "a symbolic link whose target is missing", day)
    if landing_suffix(path) is None:
        return SkippedEntry(path, f"not a data file (read are {', '.join(LANDING_SUFFIXES)})", day)
    if day is None:
        return SkippedEntry(path, problem)
    return LandingFile(path, day)


def _day_of(path: Path) -> tuple[dt.date | None, str]:
    """The day of the last date in the path (file name first, then folders), or why there is none."""
    for part in reversed(path.parts):
        if match := _DATE_IN_PATH.search(part):
            text = match.group(0)
            if len(text) != 10:
                return None, f"date {text!r} in the name is not written YYYY-MM-DD"
            try:
                return dt.date.fromisoformat(text), ""
            except ValueError:
                return None, f"{text!r} in the name is not a calendar date"
    return None, "no date (YYYY-MM-DD) in the name or folder: it belongs to no day"


def landing_inventory(landing_dir: Path) -> LandingInventory:
    """Every entry below ``landing_dir``: dated data files, oldest day first, and skipped entries."""
    if not landing_dir.is_dir():
        return LandingInventory([], [])
    entries = [_landing_entry(p) for p in sorted(landing_dir.rglob("*")) if p.is_file() or p.is_symlink()]
    files = sorted((e for e in entries if isinstance(e, LandingFile)), key=lambda f: (f.day, str(f.path)))
    return LandingInventory(files, [e for e in entries if isinstance(e, SkippedEntry)])


def list_landing_files(landing_dir: Path) -> list[LandingFile]:
    """Dated data files below ``landing_dir``, oldest day first (hidden in-flight files skipped)."""
    return landing_inventory(landing_dir).files


def read_landing_file(path: Path, csv_separator: str = ",") -> pl.DataFrame:
    """One file as it came, plus ``_source_file`` and ``_source_row`` (1-based data row).

    Every defect that stops the read is a SourceError starting with the path, naming the line where
    it can: the operator fixes or removes that one file and the day runs again."""
    return _LandingRead.open(path, csv_separator).run(pl.LazyFrame.collect)


@dataclass(frozen=True)
class _LandingRead:
    """One landing file whose first bytes passed the checks, read lazily (whole, or streamed to
    Parquet); ``run`` turns polars' errors while reading into a SourceError naming the file."""

    path: Path
    source: Path | io.BytesIO
    separator: str | None  # None: Parquet

    @classmethod
    def open(cls, path: Path, separator: str) -> "_LandingRead":
        if path.stat().st_size == 0:
            raise SourceError(f"{path}: empty file (0 bytes)")
        if landing_suffix(path) == ".parquet":
            _check_parquet(path)
            return cls(path, path, None)
        return cls(path, _csv_source(path, separator), separator)

    def frame(self) -> pl.LazyFrame:
        """The file's rows with their provenance (a row index streams; ``int_range(pl.len())`` would not)."""
        source = self.source if isinstance(self.source, Path) else io.BytesIO(self.source.getvalue())
        frame = (pl.scan_parquet(source) if self.separator is None
                 else pl.scan_csv(source, infer_schema=False, separator=self.separator, encoding="utf8"))
        return (frame.drop(SOURCE_FILE, SOURCE_ROW, strict=False).with_row_index(SOURCE_ROW, offset=1)
                .select(pl.exclude(SOURCE_ROW), pl.lit(str(self.path)).alias(SOURCE_FILE), pl.col(SOURCE_ROW).cast(pl.Int64)))

    def schema(self) -> pl.Schema:
        return self.run(pl.LazyFrame.collect_schema)

    def run(self, action: Callable[[pl.LazyFrame], _T]) -> _T:
        try:
            return action(self.frame())
        except Exception as exc:  # polars raises many types for a broken file; all mean "unreadable"
            if self.separator is None:
                raise SourceError(f"{self.path}: cannot read as parquet: {_first_line(exc)}") from exc
            with (self.path.open("rb") if isinstance(self.source, Path) else io.BytesIO(self.source.getvalue())) as lines:
                where = _csv_problem(lines, self.separator)  # polars says what failed, rarely where
            raise SourceError(f"{self.path}: cannot read as csv: {where or _first_line(exc)}") from exc


def _check_parquet(path: Path) -> None:
    """Parquet starts and ends with ``PAR1``: checking both names a truncated copy or another format
    plainly, before polars' own message (which says neither)."""
    with path.open("rb") as fh:
        head = fh.read(8)
        fh.seek(max(path.stat().st_size - 4, 0))
        tail = fh.read(4)
    if not head.startswith(b"PAR1"):
        raise SourceError(f"{path}: cannot read as parquet: {_not_parquet(head)}")
    if tail != b"PAR1":
        raise SourceError(f"{path}: cannot read as parquet: truncated (the file ends without the PAR1 footer)")


def _csv_source(path: Path, separator: str) -> Path | io.BytesIO:
    """The CSV bytes to read as text cells, strictly UTF-8 (a lossy read would turn latin-1 letters
    into U+FFFD, silently). UTF-16 with a byte-order mark is decoded: the mark makes that unambiguous
    and lossless."""
    source: Path | io.BytesIO = io.BytesIO(_gunzipped(path)) if landing_suffix(path) == ".csv.gz" else path
    head = source.getvalue()[:_HEAD_BYTES + 1] if isinstance(source, io.BytesIO) else _head(path)
    if head.startswith(_UTF16_BOMS):
        source = io.BytesIO(_utf16_as_utf8(path, source))
        head = source.getvalue()[:_HEAD_BYTES + 1]
    if problem := _head_problem(head) or _header_problem(head, separator):
        raise SourceError(f"{path}: cannot read as csv: {problem}")
    return source


def _head(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(_HEAD_BYTES + 1)


def _gunzipped(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise SourceError(f"{path}: cannot read as gzip: {exc}") from exc


def _header_problem(head: bytes, separator: str) -> str | None:
    """A column name written twice: polars would rename the second copy and read the first, so
    which column a feature reads would depend on the order of the header, silently."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace").lstrip("\ufeff")
    names = next(csv.reader([line], delimiter=separator), [])
    first: dict[str, int] = {}
    for number, name in enumerate(names, 1):
        if name in first:
            return (f"column {name!r} appears twice in the header (columns {first[name]} and {number}): "
                    "which one is meant cannot be told; rename or remove one")
        first[name] = number
    return None


def _utf16_as_utf8(path: Path, source: Path | io.BytesIO) -> bytes:
    data = source.getvalue() if isinstance(source, io.BytesIO) else source.read_bytes()
    try:
        return data.decode("utf-16").encode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: cannot read as csv: UTF-16 byte-order mark, but invalid UTF-16 at byte {exc.start}") from exc


def _head_problem(head: bytes) -> str | None:
    """Why the file's first bytes cannot start a CSV (another format, binary, no usable header line)."""
    if kind := _what_it_is(head):
        return f"this is {kind}, not CSV text"
    if (nul := head.find(b"\0")) >= 0:
        return f"binary data, not text (NUL byte at offset {nul}; UTF-16 without a byte-order mark?)"
    if b"\n" not in head and b"\r" in head:
        return "line breaks are CR only (old Mac style): save with LF or CRLF line breaks"
    if b"\n" not in head and len(head) > _HEAD_BYTES:
        return f"no line break in the first {_HEAD_BYTES // 1024} KiB: that is no header line (line breaks lost?)"
    return None


def _not_parquet(head: bytes) -> str:
    if kind := _what_it_is(head):
        return f"this is {kind}, not Parquet"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "it starts with text, not the PAR1 signature (a CSV named .parquet?)"
    return "no PAR1 signature at the start"


def _what_it_is(head: bytes) -> str | None:
    """The format a file's first bytes announce, for files dropped in the landing folder by mistake."""
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def _csv_problem(lines: BinaryIO, separator: str) -> str | None:
    """The first line that breaks CSV: invalid UTF-8, absurd length, more fields than the header, or a
    quote that never closes. Runs only after polars failed, so the happy path never pays for it."""
    header: list[bytes] = []
    for number, line in enumerate(lines, 1):
        if len(line) > _LONG_LINE_BYTES:
            return f"line {number} is {len(line):,} bytes long"
        header = header or line.rstrip(b"\r\n").split(separator.encode())
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            field = line[:exc.start].count(separator.encode())  # ignores quoting: good enough to point at it
            column = header[field].decode("utf-8", "replace") if field < len(header) else f"#{field + 1}"
            return (f"line {number}, column {column!r}: not valid UTF-8 (byte 0x{line[exc.start]:02x}); "
                    "save the file as UTF-8 (latin-1 / cp1252 are not guessed)")
    lines.seek(0)
    return _field_problem(io.TextIOWrapper(lines, encoding="utf-8", newline=""), separator)


def _field_problem(text: Iterable[str], separator: str) -> str | None:
    reader = csv.reader(text, delimiter=separator, strict=True)
    start, width = 1, None
    try:
        for record in reader:
            width = len(record) if width is None else width
            if len(record) > width:
                return f"line {start} has {len(record)} fields, the header has {width}"
            start = reader.line_num + 1
    except csv.Error as exc:
        hint = " (a quote that is never closed?)" if "end of data" in str(exc) else ""
        return f"line {start}: {exc}{hint}"
    return None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def read_landing_day(landing_dir: Path, day: dt.date, required: list[str], csv_separator: str = ",") -> pl.DataFrame:
    """Every landing file of ``day``, stacked (``stage_landing_day`` streams the same rows to Parquet)."""
    reads = _day_reads(landing_dir, day, required, csv_separator)
    frames = [read.run(pl.LazyFrame.collect) for read in reads]
    _require_rows(reads, [frame.height for frame in frames], day)
    return pl.concat(frames, how="diagonal_relaxed")


def stage_landing_day(landing_dir: Path, day: dt.date, required: list[str], csv_separator: str, folder: Path) -> pl.LazyFrame:
    """The rows ``read_landing_day`` gives, streamed file by file into Parquet parts in ``folder``
    and scanned from there: memory follows polars' streaming batches, not the day. Each part has the
    day's columns (those of every file, as ``diagonal_relaxed`` stacking gives them), so the parts
    scan as one frame."""
    reads = _day_reads(landing_dir, day, required, csv_separator)
    layout = pl.concat([pl.LazyFrame(schema=read.schema()) for read in reads], how="diagonal_relaxed")
    parts = [folder / f"part-{number:05d}.parquet" for number in range(len(reads))]
    for read, part in zip(reads, parts):
        read.run(functools.partial(_sink, layout, part))
    _require_rows(reads, [pl.scan_parquet(part).select(pl.len()).collect().item() for part in parts], day)
    return pl.scan_parquet(parts)


def _sink(layout: pl.LazyFrame, part: Path, frame: pl.LazyFrame) -> None:
    pl.concat([layout, frame], how="diagonal_relaxed").sink_parquet(part)


def _day_reads(landing_dir: Path, day: dt.date, required: list[str], csv_separator: str) -> list[_LandingRead]:
    """The landing files of ``day``, opened. Each must have the ``required`` columns on its own:
    stacking first would fill a file's missing column with nulls that look like gaps."""
    inventory = landing_inventory(landing_dir)
    files = [f for f in inventory.files if f.day == day]
    if not files:
        skipped = "".join(f"; skipped {entry}" for entry in inventory.skipped_on(day))
        raise SourceError(f"{landing_dir}: no landing file for {day.isoformat()} (expected a name with that date){skipped}")
    reads = [_LandingRead.open(f.path, csv_separator) for f in files]
    for read in reads:
        _check_columns(read.path, read.schema(), required, csv_separator)
    return reads


def _require_rows(reads: list[_LandingRead], heights: list[int], day: dt.date) -> None:
    """A file with a header and no rows is fine beside others (a site that sent nothing); a day of
    only such files is an error, as a day without files is."""
    if not any(heights):
        raise SourceError(f"{', '.join(str(read.path) for read in reads)}: no data rows (header only) for {day.isoformat()}")


def _check_columns(path: Path, schema: pl.Schema, required: list[str], separator: str) -> None:
    """Each required column is there and holds scalars (a list or binary column would fail later,
    in a cast, without naming the file)."""
    if missing := [c for c in required if c not in schema]:
        raise SourceError(f"{path}: {_missing_columns(path, schema, missing, separator)}")
    for name in required:
        dtype = schema[name]
        if dtype.is_nested() or dtype in (pl.Binary, pl.Object):
            raise SourceError(f"{path}: column {name!r} holds {dtype}, not text, numbers or timestamps")


def _missing_columns(path: Path, schema: pl.Schema, missing: list[str], separator: str) -> str:
    """Which columns are missing, and why when the header splits on another separator (then every
    column is "missing" and listing them would hide the cause); else what the header was."""
    names = [c for c in schema if c not in (SOURCE_FILE, SOURCE_ROW)]
    header = separator.join(names)
    for other in _SEPARATORS if landing_suffix(path) != ".parquet" else ():
        if other != separator and set(missing) & {h.strip() for h in header.split(other)}:
            return (f"missing required column(s): read with separator {separator!r}, but the header looks "
                    f"{other!r}-separated (set source.csv_separator or export with {separator!r})")
    shown = header if len(header) <= 200 else f"{header[:200]}... ({len(header):,} characters)"
    return f"missing required column(s) {missing}; the header has {len(names)} column(s): {shown!r}"


def read_raw_day(config: DatasetConfig, day: dt.date) -> pl.DataFrame:
    """The raw rows of one day from the dataset's source, with their provenance columns."""
    if config.source.kind == "simulator":
        return _simulated_day(config, day)
    return read_landing_day(_landing_dir(config), day, config.required_source_columns, config.source.csv_separator)


def stage_raw_day(config: DatasetConfig, day: dt.date, folder: Path) -> pl.LazyFrame:
    """The rows ``read_raw_day`` gives, lazily: landing files are streamed to Parquet in ``folder``
    (which must outlive the frame), the simulator's day stays in memory (it is small)."""
    if config.source.kind == "simulator":
        return _simulated_day(config, day).lazy()
    return stage_landing_day(_landing_dir(config), day, config.required_source_columns, config.source.csv_separator, folder)


def _simulated_day(config: DatasetConfig, day: dt.date) -> pl.DataFrame:
    frame = simulate_day(config.simulator, day).drop(TRUTH)  # labels return later, via gold_labels
    return frame.with_columns(
        pl.lit(f"simulator:{day.isoformat()}").alias(SOURCE_FILE),
        pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias(SOURCE_ROW),
    )


def _landing_dir(config: DatasetConfig) -> Path:
    if config.landing_dir is None:
        raise SourceError(f"dataset {config.name!r}: source.kind is 'landing' but source.landing_dir is not set")
    return config.landing_dir


def skipped_entries(config: DatasetConfig, day: dt.date) -> list[SkippedEntry]:
    """The entries of the landing folder named for ``day`` that are not read, with their reasons."""
    if config.source.kind != "landing" or config.landing_dir is None:
        return []
    return landing_inventory(config.landing_dir).skipped_on(day)


def implicit_roles(config: DatasetConfig) -> dict[str, pl.Expr]:
    """The roles the dataset has no column for, as expressions on raw rows (which carry provenance).

    Without a site column every row belongs to the dataset's one site. Without an id column a row is
    its own entity, named by the file it came from (relative to the landing folder, so moving the
    folder keeps the names) and its row: stable across re-runs, so row ids, label answers and
    hashing work as they do for devices; such an entity simply has no history."""
    roles: dict[str, pl.Expr] = {}
    if config.columns.site is None:
        roles[SITE] = pl.lit(config.sites[0], pl.String)
    if config.columns.id is None:
        prefix = f"{config.landing_dir}/" if config.landing_dir is not None else ""
        file = pl.col(SOURCE_FILE).str.strip_prefix(prefix)
        roles[DEVICE_ID] = pl.concat_str([file, pl.col(SOURCE_ROW).cast(pl.String)], separator="#")
    return roles


def read_field_predictions(predictions_dir: Path | None, day: dt.date) -> list[str]:
    """The classes devices predicted on ``day`` and published over MQTT (landed by the collector
    under ``<predictions_dir>/<day>/``); empty when no device reported."""
    folder = None if predictions_dir is None else predictions_dir / day.isoformat()
    if folder is None or not folder.is_dir():
        return []
    predicted = []
    for path in sorted(folder.glob("*.parquet")):
        with path.open("rb") as fh:  # through Python's open, like every read of landed data
            predicted += pl.read_parquet(fh, columns=[PREDICTED_CLASS])[PREDICTED_CLASS].to_list()
    return predicted
