"""The console's progress lines (``pipeline.progress``): the time left is the mean step time so far
times the steps left."""

import pytest

from pipeline.progress import Progress, duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_estimate_is_the_mean_step_time_times_the_steps_left():
    clock = FakeClock()
    progress = Progress(total=14, clock=clock)
    clock.now += 33
    assert progress.done("ingest_job 2026-11-16: ok") == "[1/14] ingest_job 2026-11-16: ok (33 s, about 7 min left)"  # 33 s x 13
    clock.now += 47
    assert progress.done("ingest_job 2026-11-17: ok") == "[2/14] ingest_job 2026-11-17: ok (47 s, about 8 min left)"  # 40 s x 12
    assert progress.seconds_left(80) == 480
    assert progress.elapsed == 80


def test_the_last_step_has_no_estimate_and_a_step_has_its_own_time():
    clock = FakeClock()
    progress = Progress(total=2, clock=clock)
    clock.now += 5
    progress.done("a")
    clock.now += 42
    assert progress.done("main_job 2026-11-18: ok") == "[2/2] main_job 2026-11-18: ok (42 s)"


def test_before_any_step_there_is_no_estimate():
    with pytest.raises(ValueError, match="no step is finished"):
        Progress(total=3, clock=FakeClock()).seconds_left(10)


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (42.4, "42 s"), (59.6, "1 min"), (89, "1 min"), (420, "7 min"),
                                               (3599, "1 h 00 min"), (3900, "1 h 05 min"), (7260, "2 h 01 min")])
def test_durations_read_as_a_person_plans_a_wait(seconds: float, text: str):
    assert duration(seconds) == text
