"""Regenerate the example landing files (run once; the CSVs are committed).

    .venv/bin/python -m examples.byod.generate

Simulated telemetry renamed to an ISP export's column names, a naive timestamp format, 40% of rows
labelled, and a few rows that cleaning must quarantine (a unit typo and a reading of another day).
"""

import datetime as dt
from pathlib import Path

import polars as pl

from pipeline.dataset import SimulatorSpec
from pipeline.simulator import TRUTH, simulate_day

HERE = Path(__file__).resolve().parent
RENAMES = {
    "ts": "Timestamp", "device_id": "Serial", "site": "Exchange", "rx_power_dbm": "RxPower",
    "tx_power_dbm": "TxPower", "temperature_c": "TempC", "uptime_h": "UptimeHours", "crc_errors": "CRC",
    "packet_loss_pct": "LossPct", "latency_ms": "LatencyMs", "jitter_ms": "JitterMs",
    "throughput_mbps": "Mbps", "reboots_24h": "Reboots", "line_length_m": "LineMeters",
    "device_model": "Model", "firmware_version": "Firmware", TRUTH: "Diagnosis",
}
SPEC = SimulatorSpec(seed=2026, sites=("ex-a", "ex-b"), devices_per_site=25)
DAYS = [dt.date(2026, 6, 1) + dt.timedelta(days=i) for i in range(3)]


def export_day(day: dt.date) -> pl.DataFrame:
    frame = simulate_day(SPEC, day).with_row_index("__i")
    labelled = (pl.col("__i") * 7919 % 100) < 40
    frame = frame.with_columns(
        pl.when(labelled).then(pl.col(TRUTH)).otherwise(None).alias(TRUTH),
        pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S"),
        pl.col("rx_power_dbm").round(2), pl.col("temperature_c").round(1), pl.col("uptime_h").round(1),
        pl.col("packet_loss_pct").round(3), pl.col("latency_ms").round(1), pl.col("jitter_ms").round(2),
        pl.col("throughput_mbps").round(1), pl.col("line_length_m").round(0), pl.col("tx_power_dbm").round(2),
    ).drop("__i").rename(RENAMES)
    broken = frame.head(2).with_columns(
        pl.Series("TempC", ["41,5", "40.2"]),  # a decimal comma: not a number
        pl.Series("Timestamp", [frame["Timestamp"][0], (day - dt.timedelta(days=1)).isoformat() + " 23:59:00"]),
    )
    return pl.concat([frame.cast(pl.String), broken.cast(pl.String)])


if __name__ == "__main__":
    for day in DAYS:
        export_day(day).write_csv(HERE / "landing" / f"isp_export_{day.isoformat()}.csv")
