"""One line per step of a long command (``make run``, ``make demo``, ``make backtest``), with an
estimate of the time left, so a person at the terminal knows whether to wait or come back later.

    progress = Progress(total=14)
    ...  # the step's work
    print(progress.done("main_job 2026-11-18: ok"))  # [3/14] main_job 2026-11-18: ok (42 s, about 7 min left)

The estimate is the mean time of the steps done so far times the steps left: the steps of these
commands are days of similar size, and the mean settles within a few of them.
"""

import time
from collections.abc import Callable


class Progress:
    def __init__(self, total: int, clock: Callable[[], float] = time.perf_counter):
        self.total = total
        self.finished = 0
        self._clock = clock
        self._started = self._step_started = clock()

    def done(self, text: str) -> str:
        """Count a step as done and describe it: its position, ``text``, its time and the time left."""
        now = self._clock()
        step, self._step_started = now - self._step_started, now
        self.finished += 1
        left = self.seconds_left(now - self._started)
        estimate = f", about {duration(left)} left" if left else ""
        return f"[{self.finished}/{self.total}] {text} ({duration(step)}{estimate})"

    def seconds_left(self, elapsed: float) -> float:
        """The mean step time of the ``finished`` steps, over ``elapsed`` seconds, times the steps left."""
        if not self.finished:
            raise ValueError("no step is finished yet: there is no mean step time")
        return elapsed / self.finished * max(0, self.total - self.finished)

    @property
    def elapsed(self) -> float:
        """Seconds since the progress began."""
        return self._clock() - self._started


def duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``1 h 05 min``: as precise as a person planning their wait needs."""
    if round(seconds) < 60:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
