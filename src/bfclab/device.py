"""Which torch device a run uses (``train.device``: auto | cpu | cuda | cuda:N)."""

from __future__ import annotations

import torch

from .config import ConfigError

DEVICES = "auto, cpu, cuda, cuda:N"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; one-line ConfigError for anything unusable."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"config key 'train.device': unknown {name!r}; accepted: {DEVICES}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("config key 'train.device': cuda requested but no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError:  # 'cuda:x'
        raise ConfigError(f"config key 'train.device': unknown {name!r}; accepted: {DEVICES}") from None
