"""Cleaning with quarantine: typed, deduplicated rows out; every rejected row kept with its reason.

The books always balance: raw rows = clean rows + quarantined rows + exact duplicates. A row that
breaks a hard rule (unparseable or missing key fields, a value outside its valid range, a reading
outside the partition's day, an unknown label, a conflicting duplicate) is quarantined with every
reason it broke, naming the field and the value, plus the file and row it came from. Soft problems
(a few missing readings) are imputed with the day's median and counted.
"""

import datetime as dt
from dataclasses import dataclass

import polars as pl

from pipeline import ids
from pipeline.dataset import DEVICE_ID, LABEL, ROW_ID, SITE, TIMESTAMP, DatasetConfig
from pipeline.sources import SOURCE_FILE, SOURCE_ROW, implicit_roles

REASON = "reason"
MAX_TEXT_CHARS = 256
"""Ids, sites and categories are short names; a longer cell is a defect (often a quote that never
closed and swallowed the lines after it), so the row is quarantined rather than trained on."""
_SHOWN_CHARS = 40
_RAW_INDEX = "__raw_index"
_INDEX = pl.get_index_type()
_TIMESTAMP_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M",
)
_ISO_OR_EPOCH = "ISO 8601 (2026-06-01 13:45:00, offset optional) or epoch seconds / milliseconds"
_EPOCH_MS_FROM = 1e11
"""Epoch numbers from here on are milliseconds: 1e11 seconds is the year 5138, 1e11 ms is 1973."""


class SchemaError(ValueError):
    """The day's files lack a column the dataset config requires; names the column and files."""


@dataclass(frozen=True)
class CleaningResult:
    clean: pl.DataFrame
    quarantine: pl.DataFrame
    duplicates: int
    imputed: dict[str, int]

    @property
    def raw_rows(self) -> int:
        return self.clean.height + self.quarantine.height + self.duplicates

    @property
    def clean_fraction(self) -> float:
        """Clean rows over the rows that are not exact duplicates (1.0 for a day without rows)."""
        considered = self.clean.height + self.quarantine.height
        return self.clean.height / considered if considered else 1.0

    def top_reasons(self, n: int = 10) -> dict[str, int]:
        """Quarantined rows per field (or rule) of their first reason, most frequent first. Reasons
        quote the value, so counting whole reasons would give each row its own."""
        field = pl.col(REASON).str.extract(r"^([^:;]+)", 1).alias(REASON)
        counts = self.quarantine.group_by(field).len().sort(["len", REASON], descending=[True, False]).head(n)
        return {r[REASON]: r["len"] for r in counts.iter_rows(named=True)}

    def example(self, field: str) -> str | None:
        """The first quarantine reason that starts with ``field``."""
        found = self.quarantine.filter(pl.col(REASON).str.starts_with(f"{field}"))
        return found[REASON][0] if found.height else None


def clean_day(raw: pl.DataFrame | pl.LazyFrame, config: DatasetConfig, day: dt.date, hash_key: bytes) -> CleaningResult:
    """Split one day's raw rows into clean rows, quarantined rows and a count of exact duplicates.

    The hard rules are checked ``source.batch_rows`` rows at a time, and each batch keeps only what
    it needs: the raw text of its quarantined rows, the parsed values of the others. Deduplication
    and imputation then see the whole day's parsed values, so peak memory follows the batch for the
    text-heavy part (every cell twice, plus the reasons), not the day. Given a LazyFrame (a scan of
    the raw day's Parquet), the raw text is never whole in memory either."""
    raw = raw.lazy()
    columns = _require_columns(raw, config)
    step, quarantined, candidates = config.source.batch_rows, [], []
    for start in range(0, max(raw.select(pl.len()).collect().item(), 1), step):
        flagged = _flagged(raw.slice(start, step).collect(), config, day)
        broken = pl.col(REASON).is_not_null()
        quarantined.append(_quarantine_view(flagged.filter(broken), columns, config, hash_key))
        at = pl.int_range(start, start + pl.len(), dtype=pl.Int64).alias(_RAW_INDEX)
        candidates.append(flagged.select(SOURCE_FILE, SOURCE_ROW, pl.col("^v:.*$"), at, REASON).filter(~broken).drop(REASON))
        del flagged
    day_candidates = pl.concat(candidates)
    del candidates
    accepted_at, conflicts, duplicates = _deduplicate(day_candidates, has_ids=config.columns.id is not None)
    canonical = _canonical(day_candidates, config)
    del day_candidates  # its columns now live in ``canonical`` only, which ``_taken`` empties as it goes
    accepted = _taken(canonical, accepted_at)
    quarantined.append(_quarantine_view(_as_came(raw, conflicts, config), columns, config, hash_key))
    clean, imputed = _impute(accepted, config)
    return CleaningResult(
        clean=_hash_ids(clean, hash_key, step),
        quarantine=pl.concat(quarantined),
        duplicates=duplicates,
        imputed=imputed,
    )


def _flagged(raw: pl.DataFrame, config: DatasetConfig, day: dt.date) -> pl.DataFrame:
    """Raw rows typed (``_typed``) with the reasons they break hard rules (null: none)."""
    reasons = pl.concat_str(_reason_exprs(config, day), separator="; ", ignore_nulls=True)
    return _typed(raw, config).with_columns(pl.when(reasons == "").then(None).otherwise(reasons).alias(REASON))


def _as_came(raw: pl.LazyFrame, rows: pl.DataFrame, config: DatasetConfig) -> pl.DataFrame:
    """``rows`` (with their raw row index and a reason) typed again from their raw cells, read
    from the batches that hold them (conflicts are few: most days read none)."""
    step, at = config.source.batch_rows, rows[_RAW_INDEX]
    found = [raw.slice(start, step).with_row_index(_RAW_INDEX, offset=start).filter(pl.col(_RAW_INDEX).is_in(at.implode())).collect()
             for start in (at // step * step).unique().sort()]
    picked = pl.concat(found).with_columns(pl.col(_RAW_INDEX).cast(pl.Int64)) if found else raw.head(0).collect()
    in_order = rows.select(_RAW_INDEX).join(picked, on=_RAW_INDEX, how="left", maintain_order="left") if found else picked
    return _typed(in_order, config).with_columns(rows[REASON])


def _deduplicate(candidates: pl.DataFrame, has_ids: bool = True) -> tuple[pl.Series, pl.DataFrame, int]:
    """(positions of the accepted rows, conflicting rows, number of duplicates) among rows that
    passed the hard rules.

    A repeated reading (same values) is a duplicate; when only one copy carries a label, that copy
    is kept. Two different labels on one reading, or two different readings for one device and
    instant, are conflicts: the first row is kept and the others are quarantined with the reason.
    Without an id column the per-row ids differ by construction, so they are left out of the
    comparison: a reading is then its values, and the same values twice are still a duplicate.

    Each reading, entity and label becomes an exact integer id first (``_row_ids``), one at a time,
    and the decisions are taken on those narrow ids: comparing whole rows in wide sorted copies
    took four times the day's parsed values in memory.
    """
    ignored = {f"v:{LABEL}"} | (set() if has_ids else {f"v:{DEVICE_ID}"})
    readings = [c for c in candidates.columns if c.startswith("v:") and c not in ignored]
    label, reading_ids = candidates[f"v:{LABEL}"], _row_ids(candidates, readings)
    ids = pl.DataFrame({
        "__reading": reading_ids,
        "__entity": _row_ids(candidates, [f"v:{DEVICE_ID}", f"v:{TIMESTAMP}"]) if has_ids else reading_ids,
        "__labelled_reading": _row_ids(pl.DataFrame([reading_ids, label]), [reading_ids.name, label.name]),
        "__unlabelled": label.is_null(),
        "__order": _places(candidates[SOURCE_FILE].rank("dense"), candidates[SOURCE_ROW]),  # a file's name, once per row, as a number
        "__index": pl.int_range(candidates.height, dtype=_INDEX, eager=True),
    }).sort("__unlabelled", "__order")  # labelled copies first
    reading = pl.col("__reading")
    duplicate = ~reading.is_first_distinct() & (~pl.col("__labelled_reading").is_first_distinct() | pl.col("__unlabelled"))
    kept = ids.filter(~duplicate).with_columns(
        (~reading.is_first_distinct()).alias("__label_conflict"), (~pl.col("__entity").is_first_distinct()).alias("__conflict"),
    )
    clashes = kept.filter("__conflict")
    conflicts = candidates[clashes["__index"]].with_columns(
        pl.when(clashes["__label_conflict"])
        .then(pl.lit("conflicting label: the same reading came with another label"))
        .otherwise(pl.lit("conflicting duplicate: another row has this device and timestamp with other values"))
        .alias(REASON)
    )
    accepted = kept.filter(~pl.col("__conflict")).sort("__order")["__index"]
    return accepted, conflicts, candidates.height - kept.height


def _taken(frame: pl.DataFrame, at: pl.Series) -> pl.DataFrame:
    """The rows of ``frame`` at ``at``, taken column by column out of ``frame`` (which is left
    empty), so the day's parsed values are held once, not twice, while they are picked. Rows kept in
    their order (the usual day) are filtered piece by piece: each new piece fits where a freed one was."""
    if at.is_sorted():
        keep = pl.zeros(frame.height, pl.Boolean, eager=True).scatter(at, True)
        return pl.DataFrame([frame.drop_in_place(name).filter(keep) for name in frame.columns])
    return pl.DataFrame([frame.drop_in_place(name).gather(at) for name in frame.columns])


def _row_ids(frame: pl.DataFrame, columns: list[str]) -> pl.Series:
    """A number per row, equal exactly when the rows' ``columns`` are equal. Ranking (or hashing) the
    rows as structs encodes a copy of all their values, transiently twice the day's parsed values;
    so a hash built one column at a time decides first: a row whose hash no other row has is
    unique, and only the rows sharing a hash (repeated readings, or very rarely a collision) are
    ranked on their values."""
    hashed = pl.zeros(frame.height, pl.UInt64, eager=True)
    for seed, name in enumerate(columns):
        hashed = (hashed ^ frame[name].hash(seed=seed)).hash(seed=seed)
    shared = _repeated(hashed)
    del hashed
    ranked = frame.filter(shared).select(pl.struct(columns).rank("dense").cast(_INDEX)).to_series()
    alone = pl.int_range(1, int((~shared).sum()) + 1, dtype=_INDEX, eager=True) + ranked.n_unique()  # after the dense ranks
    return pl.zeros(frame.height, _INDEX, eager=True).scatter(shared.arg_true(), ranked).scatter((~shared).arg_true(), alone)


def _repeated(values: pl.Series) -> pl.Series:
    """Whether another row has the same value, found by sorting: ``is_duplicated``'s hash table of a
    day's rows took 150 MB for a moment, the sorted copy takes a tenth of it."""
    order = values.arg_sort()
    ordered = values.gather(order)
    same = (ordered == ordered.shift(1)).fill_null(False) | (ordered == ordered.shift(-1)).fill_null(False)
    return pl.zeros(len(values), pl.Boolean, eager=True).scatter(order, same)


def _places(*keys: pl.Series) -> pl.Series:
    """Each row's place when the rows are sorted by ``keys`` (ties in their order)."""
    frame = pl.DataFrame(list(keys))
    order = frame.select(pl.arg_sort_by(frame.columns, maintain_order=True)).to_series()
    return pl.zeros(len(order), _INDEX, eager=True).scatter(order, pl.int_range(len(order), dtype=_INDEX, eager=True))


def _require_columns(raw: pl.LazyFrame, config: DatasetConfig) -> list[str]:
    """The raw day's columns, once the dataset's required ones are known to be among them."""
    columns = raw.collect_schema().names()
    if missing := [c for c in config.required_source_columns if c not in columns]:
        files = sorted(raw.select(pl.col(SOURCE_FILE).unique()).collect().to_series().to_list()) if SOURCE_FILE in columns else ["?"]
        raise SchemaError(f"{', '.join(files)}: missing required column(s) {missing} (dataset {config.name!r})")
    return columns


def _typed(raw: pl.DataFrame, config: DatasetConfig) -> pl.DataFrame:
    """Each role and feature twice: ``r:<name>`` as it came (text) and ``v:<name>`` parsed; a role
    without a source column (site, id) takes its implicit value in both."""
    cols = [pl.col(SOURCE_FILE), pl.col(SOURCE_ROW)]
    cols += [expr.alias(f"{kind}:{name}") for name, expr in implicit_roles(config).items() for kind in "rv"]
    for source, name in config.role_renames.items():
        if source not in raw.columns:  # only the label may be absent: it usually arrives later
            cols += [pl.lit(None, pl.String).alias(f"r:{name}"), pl.lit(None, pl.String).alias(f"v:{name}")]
            continue
        cols.append(pl.col(source).cast(pl.String).alias(f"r:{name}"))
        cols.append(parse_column(pl.col(source), raw.schema[source], name, config).alias(f"v:{name}"))
    return raw.select(cols)


def parse_column(col: pl.Expr, dtype: pl.DataType, name: str, config: DatasetConfig) -> pl.Expr:
    if name == TIMESTAMP:
        return _parse_timestamp(col, dtype, config.source.timestamp_format, config.source.timezone)
    if name == LABEL:
        return _parse_label(col, config.classes)
    if name in {f.name for f in config.numeric_features}:  # " 5 " is five; "nan" and "inf" parse, then are quarantined
        text = col.str.strip_chars() if dtype == pl.String else col
        return text.cast(pl.Float64, strict=False)
    return col.cast(pl.String).str.strip_chars()


def _parse_timestamp(col: pl.Expr, dtype: pl.DataType, fmt: str | None, timezone: str) -> pl.Expr:
    """UTC instants. Without an offset a time is read in the contract's ``timezone``; the contract's
    ``timestamp_format`` is tried first, then ISO 8601, then epoch seconds or milliseconds."""
    if isinstance(dtype, pl.Datetime):
        utc = _localised(col, timezone) if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
        return utc.dt.cast_time_unit("us")
    if dtype.is_numeric():
        return _from_epoch(col.cast(pl.Float64))
    text = col.cast(pl.String).str.strip_chars().str.replace(r"Z$", "+00:00")
    forms = (fmt, *_TIMESTAMP_FORMATS) if fmt else _TIMESTAMP_FORMATS
    aware = [text.str.to_datetime(f, strict=False, time_unit="us").dt.convert_time_zone("UTC") for f in forms if "%z" in f]
    naive = pl.coalesce([text.str.to_datetime(f, strict=False, time_unit="us") for f in forms if "%z" not in f])
    epoch = pl.when(text.str.contains(r"^\d{9,13}(\.\d*)?$")).then(text.cast(pl.Float64, strict=False))
    return pl.coalesce([*aware, _localised(naive, timezone), _from_epoch(epoch)])  # a text fits one kind only


def _localised(naive: pl.Expr, timezone: str) -> pl.Expr:
    """A wall-clock time of ``timezone`` as UTC (a time the clock skips is no time: unparsed)."""
    local = naive.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    return local.dt.convert_time_zone("UTC")


def _from_epoch(number: pl.Expr) -> pl.Expr:
    micros = pl.when(number.abs() >= _EPOCH_MS_FROM).then(number * 1e3).otherwise(number * 1e6)
    return pl.from_epoch(micros.round().cast(pl.Int64, strict=False), time_unit="us").dt.replace_time_zone("UTC")


def partition_day(timestamp: pl.Expr, timezone: str) -> pl.Expr:
    """The partition a UTC instant belongs to: its calendar day in the contract's time zone."""
    return timestamp.dt.convert_time_zone(timezone).dt.date()


def _parse_label(col: pl.Expr, classes: tuple[str, ...]) -> pl.Expr:
    """The label as its class name. Classes are written as in the files ("1", "true"); a cell
    that spells the same value another way maps to it: "True" / "TRUE" (pandas writes booleans so)
    to "true", and "1.0" (an integer column with gaps, saved as floats) to "1". A blank cell is no
    label. Anything else stays as it came and is quarantined as an unknown class."""
    text = col.cast(pl.String).str.strip_chars()
    lower = text.str.to_lowercase()
    number = text.cast(pl.Float64, strict=False)
    integer = pl.when(number.is_finite() & (number == number.round())).then(number.cast(pl.Int64, strict=False).cast(pl.String))
    known = list(classes)
    return (pl.when(text == "").then(None).when(text.is_in(known)).then(text)
            .when(lower.is_in(["true", "false"]) & lower.is_in(known)).then(lower)
            .when(integer.is_in(known)).then(integer)
            .otherwise(text))


def _raw(name: str) -> pl.Expr:
    return pl.col(f"r:{name}")


def _val(name: str) -> pl.Expr:
    return pl.col(f"v:{name}")


def _shown(name: str) -> pl.Expr:
    """The raw cell for a reason, cut short: a multi-megabyte cell must not make a multi-megabyte reason."""
    raw, length = _raw(name), _raw(name).str.len_chars()
    return pl.when(length > _SHOWN_CHARS).then(
        pl.format("{}... ({} characters)", raw.str.slice(0, _SHOWN_CHARS), length)).otherwise(raw)


def _present(name: str) -> pl.Expr:
    return _raw(name).is_not_null() & (_raw(name).str.strip_chars() != "")


def _reason_exprs(config: DatasetConfig, day: dt.date) -> list[pl.Expr]:
    """One expression per hard rule: null where the row keeps the rule, else the reason."""
    return [*_role_reasons(config, day), *_numeric_reasons(config), *_text_reasons(config)]


def _text_reasons(config: DatasetConfig) -> list[pl.Expr]:
    """Categories must be there; ids, sites and categories must be short names."""
    reasons: list[pl.Expr] = [pl.when(~_present(f.name)).then(pl.lit(f"{f.name}: missing")) for f in config.categorical_features]
    for name in (DEVICE_ID, SITE, *(f.name for f in config.categorical_features)):
        length = _raw(name).str.len_chars()
        reasons.append(pl.when(length > MAX_TEXT_CHARS)
                       .then(pl.format(f"{name}: {{}} characters, over the limit of {MAX_TEXT_CHARS}", length)))
    return reasons


def _role_reasons(config: DatasetConfig, day: dt.date) -> list[pl.Expr]:
    zone, fmt = config.source.timezone, config.source.timestamp_format
    expected = (f"source.timestamp_format {fmt!r}, or {_ISO_OR_EPOCH}" if fmt
                else f"{_ISO_OR_EPOCH}; set source.timestamp_format for another form")
    local = _val(TIMESTAMP).dt.convert_time_zone(zone)
    return [
        pl.when(~_present(TIMESTAMP)).then(pl.lit("timestamp: missing"))
        .when(_val(TIMESTAMP).is_null())
        .then(pl.format(f"timestamp: cannot parse '{{}}' (expected {expected})", _shown(TIMESTAMP)))
        .when(partition_day(_val(TIMESTAMP), zone) != day)
        .then(pl.format(f"timestamp: {{}} is outside partition {{}}: it is {{}} in {zone}",
                        _shown(TIMESTAMP), pl.lit(day.isoformat()), local.dt.strftime("%Y-%m-%d %H:%M:%S"))),
        pl.when(~_present(DEVICE_ID)).then(pl.lit("device_id: missing")),
        pl.when(~_present(SITE)).then(pl.lit("site: missing")),
        pl.when(_present(LABEL) & ~_val(LABEL).is_in(list(config.classes)))
        .then(pl.format("label: '{}' is not one of the classes", _shown(LABEL))),
    ]


def _numeric_reasons(config: DatasetConfig) -> list[pl.Expr]:
    reasons: list[pl.Expr] = []
    for f in config.numeric_features:
        lo = f.min if f.min is not None else float("-inf")
        hi = f.max if f.max is not None else float("inf")
        value = _val(f.name)
        reasons.append(
            pl.when(_present(f.name) & value.is_null()).then(pl.format(f"{f.name}: not a number '{{}}'", _shown(f.name)))
            .when(value.is_nan() | value.is_infinite()).then(pl.format(f"{f.name}: not finite ({{}})", _shown(f.name)))
            .when((value < lo) | (value > hi))
            .then(pl.format(f"{f.name}: {{}} outside valid range [{f.min}, {f.max}]", _shown(f.name)))
        )
    numeric = [f.name for f in config.numeric_features]
    if numeric:
        missing = pl.sum_horizontal([_val(n).is_null().cast(pl.Int32) for n in numeric])
        reasons.append(pl.when(missing * 2 > len(numeric))
                       .then(pl.format("{} of {} readings missing", missing, pl.lit(len(numeric)))))
    return reasons


def _canonical(accepted: pl.DataFrame, config: DatasetConfig) -> pl.DataFrame:
    names = [TIMESTAMP, DEVICE_ID, SITE, *(f.name for f in config.features), LABEL]
    return accepted.select(*(pl.col(f"v:{n}").alias(n) for n in names), SOURCE_FILE, SOURCE_ROW)


def _impute(clean: pl.DataFrame, config: DatasetConfig) -> tuple[pl.DataFrame, dict[str, int]]:
    imputed = {f.name: clean[f.name].null_count() for f in config.numeric_features}
    imputed = {name: count for name, count in imputed.items() if count}
    return clean.with_columns(pl.col(name).fill_null(pl.col(name).median()) for name in imputed), imputed  # untouched columns stay shared


def _hash_ids(clean: pl.DataFrame, key: bytes, step: int) -> pl.DataFrame:
    """Row ids first, device ids hashed; made ``step`` rows at a time, since hashing goes through
    a text and a Python string per row."""
    hashed = pl.concat([
        clean.slice(start, step).select(ids.row_id(pl.col(DEVICE_ID), pl.col(TIMESTAMP), key).alias(ROW_ID),
                                        ids.keyed_hash(pl.col(DEVICE_ID), key).alias(DEVICE_ID))
        for start in range(0, max(clean.height, 1), step)
    ])
    return pl.DataFrame([hashed[ROW_ID], *(hashed[name] if name == DEVICE_ID else clean[name] for name in clean.columns)])


def _quarantine_view(quarantine: pl.DataFrame, raw_columns: list[str], config: DatasetConfig, key: bytes) -> pl.DataFrame:
    """Quarantined rows as they came (text), ids hashed, with the reason and provenance."""
    raw_names = {name: source for source, name in config.role_renames.items()}
    cols = [pl.col(f"r:{name}").alias(source) for name, source in raw_names.items() if source in raw_columns]
    view = quarantine.select(*cols, REASON, SOURCE_FILE, SOURCE_ROW)
    id_col = config.columns.id
    if id_col in view.columns:  # hashed as cleaning hashes it, so a device has one hash everywhere
        view = view.with_columns(ids.keyed_hash(pl.col(id_col).str.strip_chars(), key))
    return view
