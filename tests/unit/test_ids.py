"""Keyed hashing: stable ids, and one key even when processes race to create it."""

import multiprocessing as mp
from pathlib import Path

import polars as pl
import pytest

from pipeline import ids

TRIALS, RACERS = 10, 8
UNSET = "EVERGREEN_TEST_UNSET_KEY"


def _race(root: str, start, racer: int) -> None:
    """One process of the race: on each trial, wait for all, then load or create that trial's key."""
    for trial in range(TRIALS):
        start.wait(timeout=120)
        key = ids.load_or_create_key(UNSET, Path(root) / "keys" / str(trial) / "hash_key")
        (Path(root) / "seen" / f"{trial}-{racer}").write_bytes(key)


@pytest.mark.slow
def test_processes_racing_on_a_fresh_machine_share_one_key(tmp_path: Path):
    # spawn, not fork: this test process has threads by now (Dagster, torch, polars), and a forked
    # child can inherit a lock another thread held, and hang. Plain processes, not a Pool: a Pool's
    # terminate() joins the workers its handler thread may be starting at that moment and can wait
    # forever (seen in a full-suite run); here a process that dies or hangs is named with its exit code.
    (tmp_path / "seen").mkdir()
    context = mp.get_context("spawn")
    start = context.Barrier(RACERS)
    racers = [context.Process(target=_race, args=(str(tmp_path), start, i)) for i in range(RACERS)]
    for racer in racers:
        racer.start()
    for i, racer in enumerate(racers):
        racer.join(timeout=300)
        if racer.is_alive():
            racer.kill()
            racer.join()
        assert racer.exitcode == 0, f"racer {i} ended with exit code {racer.exitcode}"
    for trial in range(TRIALS):
        keys = {(tmp_path / "seen" / f"{trial}-{i}").read_bytes() for i in range(RACERS)}
        assert len(keys) == 1
        path = tmp_path / "keys" / str(trial) / "hash_key"
        assert [p.name for p in path.parent.iterdir()] == ["hash_key"]
        assert path.stat().st_mode & 0o777 == 0o600


def test_the_environment_variable_wins(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("EVERGREEN_TEST_KEY", "from-env")
    assert ids.load_or_create_key("EVERGREEN_TEST_KEY", tmp_path / "k") == b"from-env"
    assert not (tmp_path / "k").exists()


def test_hashes_are_keyed_and_stable():
    frame = pl.DataFrame({"id": ["CPE-1", "CPE-1", "CPE-2", None]})
    a = frame.select(ids.keyed_hash(pl.col("id"), b"k1")).to_series().to_list()
    b = frame.select(ids.keyed_hash(pl.col("id"), b"k2")).to_series().to_list()
    assert a[0] == a[1] != a[2] and a[3] is None and len(a[0]) == 16
    assert a[0] != b[0]
