import pytest

from bfclab.config import RunConfig, set_key


def tiny_config(**over) -> RunConfig:
    """A run small enough for a unit test (seconds on 2 cores)."""
    cfg = RunConfig()
    base = {
        "target.d": 8, "target.L": 4, "target.widths": [2], "target.mc_samples": 4000,
        "data.n_train": 512, "data.n_test": 512, "train.steps_per_stage": 40,
        "train.batch_size": 64, "train.log_every": 20,
    }
    base.update(over)
    for k, v in base.items():
        set_key(cfg, k, v)
    return cfg


@pytest.fixture
def tiny():
    return tiny_config
