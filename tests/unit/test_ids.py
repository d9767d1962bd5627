"""Keyed hashing: stable ids, and one key even when processes race to create it."""

import multiprocessing as mp
from pathlib import Path

import polars as pl
import pytest

from pipeline import ids


@pytest.mark.slow
def test_processes_racing_on_a_fresh_machine_share_one_key(tmp_path: Path):
    # spawn, not fork: this test process has threads by now (Dagster, torch, polars), and a
    # forked child can inherit a lock another thread held, and hang
    with mp.get_context("spawn").Pool(4) as pool:
        for trial in range(10):
            path = tmp_path / str(trial) / "hash_key"
            # with a timeout: a pool whose worker died waits forever (seen once in a full-suite run)
            keys = set(pool.starmap_async(ids.load_or_create_key, [("EVERGREEN_TEST_UNSET_KEY", path)] * 8).get(timeout=120))
            assert len(keys) == 1
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
