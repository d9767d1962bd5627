"""The suite's own rule: a test that starts a process is marked ``slow`` (``tests/conftest.py``), so
``make test-fast`` is the in-process suite a person runs while working."""

import multiprocessing
import subprocess
import sys

import pytest


def test_an_unmarked_test_cannot_start_a_command():
    with pytest.raises(AssertionError, match="starts a process: mark it @pytest.mark.slow"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_an_unmarked_test_cannot_start_a_pool_worker():
    with pytest.raises(AssertionError, match="starts a process: mark it @pytest.mark.slow"):
        multiprocessing.get_context("spawn").Process(target=print).start()


@pytest.mark.slow
def test_a_slow_test_can():
    assert subprocess.run([sys.executable, "-c", "pass"]).returncode == 0
