"""``make bench`` (``benchmarks/all.py``): every benchmark in turn with a progress line; a failure stops
it loudly with the benchmark's exit code."""

import subprocess

from benchmarks import all as bench_all


def _runner(failing: str | None, calls: list):
    def run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 3 if command[2] == f"benchmarks.{failing}" else 0)

    return run


def test_every_benchmark_runs_in_order_with_progress(monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(bench_all.subprocess, "run", _runner(None, calls))
    assert bench_all.main(["--record"]) == 0
    assert [c[2] for c in calls] == [f"benchmarks.{n}" for n in bench_all.BENCHMARKS]
    assert all(c[3:] == ["--record"] for c in calls)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[1/5] benchmarks.run_all: ok (") and "left)" in lines[0]
    assert lines[4].startswith("[5/5] benchmarks.scale: ok (") and lines[5].startswith("5 benchmarks in ")


def test_a_failing_benchmark_stops_the_run_with_its_exit_code(monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(bench_all.subprocess, "run", _runner("federated", calls))
    assert bench_all.main([]) == 3
    assert [c[2] for c in calls] == ["benchmarks.run_all", "benchmarks.labelling", "benchmarks.federated"]
    assert "benchmarks.federated failed (exit 3)" in capsys.readouterr().err
