"""Imported by every Python process of a crash test's run (it is on their ``PYTHONPATH``): when
``EVERGREEN_CRASH_AT`` is set, the run's whole process group is SIGKILLed the moment a temporary
file or folder matching that glob has been written and flushed but not yet renamed into place,
the worst moment for an atomic write. Nothing of Evergreen's own code knows about it."""

import os

if _PATTERN := os.environ.get("EVERGREEN_CRASH_AT"):
    import fnmatch
    import signal

    from pipeline import atomic

    _fsync = atomic._fsync

    def _fsync_then_die(path) -> None:
        _fsync(path)
        if fnmatch.fnmatch(str(path), _PATTERN):
            os.killpg(os.getpgrp(), signal.SIGKILL)

    atomic._fsync = _fsync_then_die
