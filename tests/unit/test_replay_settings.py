"""The replay's and the backtest's datasets: the roll-out placed, labels delayed and settings applied as asked."""

import pytest
import yaml

from deploy.backtest import Options, apply_setting, staged_dataset
from deploy.replay import write_dataset
from examples import streams
from pipeline.dataset import load_dataset_config


def test_the_replay_dataset_carries_the_label_delay_and_the_settings(tmp_path):
    path, first = write_dataset(tmp_path, rollout_day=12, warmup=10, devices_per_site=20, canary_min_labels=50, label_delay=7,
                                settings=("feedback.estimate.acts=true", "training.tuning.teacher.trials=5"))
    config = load_dataset_config(path)
    assert config.simulator.label_return.delay_days == 7
    assert config.feedback.estimate.acts is True and config.training.tuning.teacher.trials == 5
    assert config.partitions.start_date == first
    assert (config.simulator.drift.firmware_rollout.date - first).days == 22
    assert yaml.safe_load(path.read_text())["simulator"]["devices_per_site"] == 20


def test_a_backtest_setting_overrides_the_users_yaml_for_that_backtest_only(tmp_path):
    user = streams.write_stream(streams.shortened(streams.STREAMS["stationary"], 3), tmp_path / "streams")
    options = Options(user, tmp_path / "out", warmup=2, settings=("feedback.estimate.acts=true", "feedback.policy.cooldown_days=0"))
    (tmp_path / "out").mkdir()
    staged, _ = staged_dataset(options)
    config = load_dataset_config(staged)
    assert config.feedback.estimate.acts is True and config.feedback.policy.cooldown_days == 0
    assert config.landing_dir == tmp_path / "out" / "landing"
    assert load_dataset_config(user).feedback.estimate.acts is False


def test_a_setting_without_a_value_is_refused():
    with pytest.raises(SystemExit, match="expected dotted.key=value"):
        apply_setting({}, "feedback.estimate.acts")
