"""The backtest benchmark: the loop against the baselines on the simulator and generated streams.

    python -m benchmarks.backtest [--streams sudden,gradual,...] [--held-out] [--simulator] [--record]
                                  [--river-python "$(bash benchmarks/river_env.sh)"]

Each stream (``examples/streams.py``: known drift days, no site, no id, integer classes) is written
to a temporary folder and replayed by ``python -m deploy.backtest`` in its own process, as a user
would run it; the simulator by ``python -m deploy.replay`` (``make demo``, shortened). The table
gives Evergreen's mean daily accuracy beside every baseline, per drift event the days to the first
alarm and to recovery, false alarms on the days before the first event, retrains, and the wall
time per replayed day. ``--held-out`` runs the streams kept aside from tuning instead.
``--river-python`` adds River's ARF on every stream (``benchmarks/river_arf.py``: prequential, same
rows and warm-up) as the online-learning reference; River needs numpy 2, the project numpy < 2, so
it runs under the python of a separate venv.
"""

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import emit_report, machine
from examples import streams

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ("static", "retrain_1d", "retrain_3d", "retrain_7d", "daily_retrain", "no_change")
"""``daily_retrain`` retrains on the dataset's ``window_days`` (14 by default) every night."""
BATCH = BASELINES[:-1]
RIVER_ARF = ROOT / "benchmarks" / "river_arf.py"


def backtest_stream(spec: streams.StreamSpec, work: Path, warmup: int, river_python: str | None = None) -> dict:
    dataset = streams.write_stream(spec, work / "streams")
    out = work / "out" / spec.name
    command = [sys.executable, "-m", "deploy.backtest", "--dataset", str(dataset), "--warmup", str(warmup),
               "--out", str(out), "--retrain-windows", "1,3,7", *(f"--event={d.isoformat()}" for d in spec.events)]
    result = _run(command, out, spec.name)
    if river_python and "error" not in result:
        result["river_arf"] = river_arf(river_python, dataset, warmup, work / "out" / f"{spec.name}.river_arf.json")
        result["mean_accuracy"]["river_arf"] = result["river_arf"].get("mean_accuracy", "failed")
    return result


def river_arf(python: str, dataset: Path, warmup: int, out: Path) -> dict:
    """River's ARF on the stream's days, under ``python`` (a separate venv: River needs numpy 2)."""
    command = [python, str(RIVER_ARF), "--dataset", str(dataset), "--warmup", str(warmup), "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        print(f"river_arf failed on {dataset}: {output[-1500:]}", file=sys.stderr, flush=True)
        return {"error": output[-1500:]}
    print(output, flush=True)
    return json.loads(out.read_text())


def backtest_simulator(work: Path, days: int) -> dict:
    out = work / "out" / "simulator"
    command = [sys.executable, "-m", "deploy.replay", "--days", str(days), "--rollout-day", str(days // 2),
               "--warmup", "7", "--devices-per-site", "20", "--canary-min-labels", "50", "--retrain-windows", "1,3,14",
               "--out", str(out)]
    return _run(command, out, "simulator")


def _run(command: list[str], out: Path, name: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return {"name": name, "error": (done.stdout[-1500:] + done.stderr[-1500:]).strip()}
    summary = json.loads((out / "summary.json").read_text())
    print(f"{name}: {time.perf_counter() - started:.0f}s, mean accuracy {summary['mean_accuracy']}", flush=True)
    return {"name": name, "wall_s": time.perf_counter() - started, **summary}


def _cell(value) -> str:
    return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def report(results: list[dict], command: str) -> str:
    columns = (*BASELINES, *(("river_arf",) if any("river_arf" in r for r in results) else ()))
    lines = [
        f"## {dt.date.today().isoformat()}: backtest of the loop against the baselines",
        f"Machine: {machine()}. Command: `{command}`. Mean daily accuracy of the model serving that morning, "
        "scored on each day's labelled rows before anything learned from them; labels returned the same day.",
        "",
        "| stream | days | Evergreen | " + " | ".join(columns) + " | Evergreen - best batch | events: days to alarm / "
        "to recovery | false alarms (stationary days) | retrains | s per day (of it retraining) |",
        "|---|---|---|" + "---|" * len(columns) + "---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error'].splitlines()[-1][:150]} |")
            continue
        means = r["mean_accuracy"]
        events = "; ".join(f"{e['day']}: {_cell(_first_alarm(e))} / {_cell(e['days_to_recovery'])}" for e in r["events"]) or "none"
        best = max(means[b] for b in BATCH if means.get(b) is not None)
        lines.append(f"| {r['name']} | {r['days']} | **{_cell(means['evergreen'])}** | "
                     + " | ".join(_cell(means.get(b)) for b in columns)
                     + f" | {means['evergreen'] - best:+.3f} | {events} | {r['false_alarm_days']} ({r['stationary_days']}) | "
                     f"{len(r['retrains'])} | {r['seconds_per_day']:.1f} ({r['retrain_seconds_per_day']:.1f}) |")
    return "\n".join(lines) + "\n"


def _first_alarm(event: dict) -> int | None:
    hits = [d for d in (event["days_to_data_alarm"], event["days_to_concept_alarm"]) if d is not None]
    return min(hits) if hits else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", help="comma-separated stream names (default: every development stream)")
    parser.add_argument("--held-out", action="store_true", help="the streams kept aside from tuning")
    parser.add_argument("--simulator", action="store_true", help="also the simulator's roll-out (make demo, shortened)")
    parser.add_argument("--simulator-days", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=14)
    parser.add_argument("--days", type=int, help="shorten every stream to this many days (warm-up included)")
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    parser.add_argument("--river-python", help="python of a venv with river 0.26 (bash benchmarks/river_env.sh prints it): "
                        "adds River's ARF, prequential on the same rows, as a river_arf column")
    args = parser.parse_args(argv)
    chosen = streams.HELD_OUT if args.held_out else streams.DEVELOPMENT
    if args.streams:
        chosen = tuple(streams.STREAMS[n] for n in args.streams.split(","))
    if args.days:
        chosen = tuple(streams.shortened(s, args.days) for s in chosen)
    results = []
    with tempfile.TemporaryDirectory(prefix="evergreen-backtest-") as tmp:
        work = Path(tmp)
        if args.simulator:
            results.append(backtest_simulator(work, args.simulator_days))
        results += [backtest_stream(spec, work, args.warmup, args.river_python) for spec in chosen]
    emit_report(report(results, "python -m benchmarks.backtest " + " ".join(argv if argv is not None else sys.argv[1:])),
                args.record)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
