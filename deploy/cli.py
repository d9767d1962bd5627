"""How Evergreen's command-line tools report a bad dataset config: a plain message on stderr that
names the file and the field, and exit status 2, instead of a Python traceback.

The message is already complete (``pipeline.dataset`` builds it); the stack under it only buries
that line for a user who mistyped a column name.
"""

import functools
import sys
from collections.abc import Callable

from pipeline.dataset import DatasetConfigError

CONFIG_ERROR_STATUS = 2
"""As argparse exits on bad arguments: the command was wrong, not the run."""


def config_errors_are_plain(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a tool's ``main``: a ``DatasetConfigError`` raised while it runs (reading the YAML itself,
    or importing the definitions, which read it) prints ``error: <message>`` and returns 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except DatasetConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return CONFIG_ERROR_STATUS

    return wrapped
