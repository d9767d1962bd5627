"""The simulator replay's dataset: the roll-out placed, labels delayed and settings applied as asked."""

import yaml

from deploy.replay import write_dataset
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
