"""Simulated home-broadband CPE telemetry: the embedded default source of the dataset contract.

Hourly rows per optical modem across sites, with a true ``fault`` and a timeline of drift events:
line ageing (received power drifts down, more fibre faults), a firmware roll-out whose new fault
signature looks like congestion (concept drift: same inputs, new label), a new device model (an
unseen category), and evening congestion (seasonality). A firmware bug is never mild: its faults
have a floor of severity, so a model that knows the new firmware can tell them apart again. A
Sites are not alike (non-IID): each may have its own device mix, share of old firmware, roll-out reach and line lengths. A
little dirt (duplicates, sensor glitches, gaps) is injected so cleaning and quarantine have real work. Every (day, site) draws from its own
seeded generator, so a partition is the same bytes whatever else was generated before it.
"""

import datetime as dt
import hashlib
from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.dataset import DriftTimeline, SimulatorSpec, SiteProfile

FAULTS = ("none", "fiber", "firmware", "power", "congestion")
DEVICE_MODELS = ("HG8145", "F670L", "ZXHN-F660")
BASE_FIRMWARE = ("3.0.9", "3.1.4")
RAW_COLUMNS = (
    "ts", "device_id", "site", "rx_power_dbm", "tx_power_dbm", "temperature_c", "uptime_h",
    "crc_errors", "packet_loss_pct", "latency_ms", "jitter_ms", "throughput_mbps", "reboots_24h",
    "line_length_m", "device_model", "firmware_version",
)
TRUTH = "fault"
DUPLICATE_FRACTION, GLITCH_FRACTION, GAP_FRACTION = 0.004, 0.002, 0.004


def _rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator keyed by its purpose, so draws for one (day, site) never shift another's."""
    digest = hashlib.sha256("/".join(str(p) for p in (seed, *parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class _Fleet:
    """The devices of one site on one day: the state that the drift timeline moves."""

    device_id: np.ndarray
    model: np.ndarray
    firmware: np.ndarray
    line_length_m: np.ndarray
    base_rx_dbm: np.ndarray
    new_firmware: np.ndarray  # bool: runs the rolled-out version


def _fleet(spec: SimulatorSpec, site: str, day: dt.date) -> _Fleet:
    n = spec.devices_per_site
    profile = spec.site_profiles.get(site, SiteProfile())
    rng = _rng(spec.seed, "fleet", site)  # devices are fixed per site, independent of the day
    device_id = np.array([f"CPE-{site.upper()}-{i:05d}" for i in range(n)])
    model = rng.choice(DEVICE_MODELS, size=n, p=_model_mix(profile, site))
    old_share = 0.4 if profile.old_firmware_share is None else profile.old_firmware_share
    firmware = rng.choice(BASE_FIRMWARE, size=n, p=[old_share, 1 - old_share])
    line_length = rng.uniform(*(profile.line_length_m or (200.0, 6000.0)), size=n)
    ageing_rate = rng.uniform(0.5, 1.5, size=n)
    rollout_draw, model_draw = rng.uniform(size=n), rng.uniform(size=n)

    drift = spec.drift
    base_rx = -14.0 - line_length * 0.0016
    if drift.ageing_start is not None and day > drift.ageing_start:
        base_rx = base_rx - drift.line_ageing_db_per_day * ageing_rate * (day - drift.ageing_start).days
    new_firmware = np.zeros(n, dtype=bool)
    if (ro := drift.firmware_rollout) is not None:
        share = ro.share if profile.rollout_share is None else profile.rollout_share
        upgrade_day = np.floor(rollout_draw / max(share, 1e-9) * ro.ramp_days)
        new_firmware = (rollout_draw < share) & ((day - ro.date).days >= upgrade_day)
        firmware = np.where(new_firmware, ro.version, firmware)
    if (nm := drift.new_device_model) is not None and day >= nm.date:
        model = np.where(model_draw < nm.share, nm.name, model)
    return _Fleet(device_id, model, firmware, line_length, base_rx, new_firmware)


def _model_mix(profile: SiteProfile, site: str) -> list[float] | None:
    """The site's device-model probabilities (None: uniform)."""
    if profile.device_models is None:
        return None
    unknown = set(profile.device_models) - set(DEVICE_MODELS)
    if unknown:
        raise ValueError(f"simulator.site_profiles.{site}.device_models: unknown models {sorted(unknown)}; known: {list(DEVICE_MODELS)}")
    weights = np.array([profile.device_models.get(m, 0.0) for m in DEVICE_MODELS])
    return list(weights / weights.sum())


@dataclass(frozen=True)
class _Rows:
    """Row layout of one site-day: device-major, hour-minor (row i is device dev[i] at hour[i])."""

    dev: np.ndarray
    hour: np.ndarray
    evening: np.ndarray

    @classmethod
    def of(cls, n_devices: int, hours: np.ndarray, drift: DriftTimeline) -> "_Rows":
        hour = np.tile(hours, n_devices)
        lo, hi = drift.evening_hours
        return cls(np.repeat(np.arange(n_devices), len(hours)), hour, (hour >= lo) & (hour <= hi))

    def __len__(self) -> int:
        return len(self.dev)


def _fault_probabilities(fleet: _Fleet, r: _Rows, drift: DriftTimeline, rollout_rate: float) -> np.ndarray:
    """Per-row probabilities over FAULTS."""
    dev, evening = r.dev, r.evening
    p = np.zeros((len(r), len(FAULTS)))
    p[:, 1] = 0.05 + 0.35 / (1 + np.exp(-2.0 * (-26.5 - fleet.base_rx_dbm[dev])))  # fibre: weak light
    p[:, 2] = np.where(fleet.firmware[dev] == "3.0.9", 0.09, 0.02)
    p[:, 2] = np.where(fleet.new_firmware[dev], rollout_rate, p[:, 2])
    p[:, 3] = 0.05
    p[:, 4] = 0.05 * np.where(evening, drift.evening_congestion_factor, 1.0)
    p[:, 0] = np.clip(1 - p[:, 1:].sum(axis=1), 0.05, None)
    return p / p.sum(axis=1, keepdims=True)


def _telemetry(fleet: _Fleet, r: _Rows, fault: np.ndarray, rng: np.random.Generator, new_fault_floor: float) -> dict:
    """Sensor readings given each row's fault; ``sev`` (severity) makes mild faults hard to tell apart."""
    dev, hour, evening, rows = r.dev, r.hour, r.evening, len(r)
    sev = rng.uniform(0.0, 1.0, size=rows) ** 2
    new_model = ~np.isin(fleet.model[dev], DEVICE_MODELS)
    is_ = {name: fault == i for i, name in enumerate(FAULTS)}
    new_fw_fault = is_["firmware"] & fleet.new_firmware[dev]
    old_fw_fault = is_["firmware"] & ~fleet.new_firmware[dev]
    sev = np.where(new_fw_fault, new_fault_floor + (1 - new_fault_floor) * sev, sev)

    rx = fleet.base_rx_dbm[dev] + rng.normal(0, 0.6, rows) - is_["fiber"] * sev * rng.uniform(3, 8, rows)
    tx = 2.2 + rng.normal(0, 0.3, rows) - 0.6 * new_model - is_["power"] * sev * 0.9
    temp = (46 + 3 * np.sin((hour - 9) / 24 * 2 * np.pi) + rng.normal(0, 3, rows) + 7 * new_model
            + is_["power"] * sev * 5 + old_fw_fault * sev * 3 + new_fw_fault * sev * rng.uniform(4, 9, rows))
    uptime = np.where(is_["power"], rng.uniform(0, 8, rows) * (2 - sev), rng.uniform(8, 2500, rows))
    crc = rng.poisson(2 + is_["fiber"] * sev * 60 + old_fw_fault * sev * 25)
    loss = np.abs(rng.normal(0.1, 0.1, rows)) + (is_["fiber"] * rng.uniform(0.5, 4, rows)
            + is_["congestion"] * rng.uniform(0.3, 2, rows) + old_fw_fault * rng.uniform(0.5, 2, rows)) * sev
    congested_like = is_["congestion"] | new_fw_fault
    latency = 12 + fleet.line_length_m[dev] / 800 + rng.normal(0, 3, rows) + 5 * evening \
        + congested_like * sev * rng.uniform(25, 70, rows)
    jitter = 2 + np.abs(rng.normal(0, 1.2, rows)) + congested_like * sev * rng.uniform(6, 25, rows)
    throughput = (320 * (1 - 0.15 * evening) + rng.normal(0, 25, rows)) * np.where(
        congested_like, 1 - sev * rng.uniform(0.4, 0.8, rows), 1.0) * np.where(is_["fiber"], 1 - 0.4 * sev, 1.0)
    reboots = rng.poisson(0.1 + is_["power"] * sev * 4 + old_fw_fault * sev * 1.5)
    return {
        "rx_power_dbm": rx, "tx_power_dbm": tx, "temperature_c": temp, "uptime_h": uptime,
        "crc_errors": crc, "packet_loss_pct": loss, "latency_ms": latency, "jitter_ms": jitter,
        "throughput_mbps": np.clip(throughput, 1, None), "reboots_24h": reboots,
        "line_length_m": fleet.line_length_m[dev], "device_model": fleet.model[dev],
        "firmware_version": fleet.firmware[dev],
    }


def simulate_site_day(spec: SimulatorSpec, site: str, day: dt.date, dirty: bool = True) -> pl.DataFrame:
    """Telemetry of one site for one day, with the true fault in column ``fault``.

    ``dirty`` injects exact duplicates, out-of-range glitches and gaps at small rates, as a real feed
    has; turn it off to study the clean signal.
    """
    fleet = _fleet(spec, site, day)
    hours = np.asarray(spec.hours)
    rng = _rng(spec.seed, "day", site, day.isoformat())
    ro = spec.drift.firmware_rollout
    rows = _Rows.of(len(fleet.device_id), hours, spec.drift)
    probs = _fault_probabilities(fleet, rows, spec.drift, ro.fault_rate if ro else 0.0)
    fault = (probs.cumsum(axis=1) > rng.uniform(size=(len(probs), 1))).argmax(axis=1)
    readings = _telemetry(fleet, rows, fault, rng, ro.min_severity if ro else 0.0)
    minute = rng.integers(0, 60, size=len(rows))
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    ts = [start + dt.timedelta(hours=int(h), minutes=int(m)) for h, m in zip(rows.hour, minute)]
    frame = pl.DataFrame({
        "ts": ts,
        "device_id": fleet.device_id[rows.dev],
        "site": [site] * len(ts),
        **readings,
        TRUTH: np.asarray(FAULTS)[fault],
    }).with_columns(pl.col("crc_errors", "reboots_24h").cast(pl.Int64))
    return _add_dirt(frame, rng) if dirty else frame


def _add_dirt(frame: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    n = frame.height
    glitch = rng.uniform(size=n) < GLITCH_FRACTION
    gap = rng.uniform(size=n) < GAP_FRACTION
    frame = frame.with_columns(
        pl.when(pl.Series(glitch)).then(pl.lit(99.0)).otherwise(pl.col("rx_power_dbm")).alias("rx_power_dbm"),
        pl.when(pl.Series(gap)).then(None).otherwise(pl.col("temperature_c")).alias("temperature_c"),
    )
    dupes = frame.filter(pl.Series(rng.uniform(size=n) < DUPLICATE_FRACTION))
    return pl.concat([frame, dupes]).sort("ts", "device_id")


def simulate_day(spec: SimulatorSpec, day: dt.date, dirty: bool = True) -> pl.DataFrame:
    """All sites of one day, truth included."""
    return pl.concat([simulate_site_day(spec, site, day, dirty) for site in spec.sites])


def returned_labels(spec: SimulatorSpec, day: dt.date) -> pl.DataFrame:
    """The labels the ticket system hands back on ``day``: a fraction of past rows, after a lag.

    Each observed row (day d) is returned with probability ``fraction`` after ``delay_days`` plus
    ``lag`` days, ``lag`` drawn uniformly from 0..max_lag, deterministically per (site, d); so the
    labels arriving on ``day`` come from rows of days ``day - delay - max_lag .. day - delay``.
    Columns: ts, device_id, fault.
    """
    lr = spec.label_return
    parts = []
    for lag in range(lr.max_lag_days + 1):
        observed = day - dt.timedelta(days=lr.delay_days + lag)
        for site in spec.sites:
            rows = simulate_site_day(spec, site, observed).unique(subset=["ts", "device_id"], keep="first", maintain_order=True)
            rng = _rng(spec.seed, "labels", site, observed.isoformat())
            returned = rng.uniform(size=rows.height) < lr.fraction
            row_lag = rng.integers(0, lr.max_lag_days + 1, size=rows.height)
            parts.append(rows.filter(pl.Series(returned & (row_lag == lag))).select("ts", "device_id", TRUTH))
    return pl.concat(parts)
