"""Loading a function from a user's own Python file (``FILE.py:FUNC``): the probe's spec files and
``python:`` targets (issue 16).  One-line :class:`~bfclab.config.ConfigError` for a missing file, a
file that fails to load, or a missing function."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

from .config import ConfigError


def load_function(path: str, func: str, what: str, expected: str) -> Callable:
    """The function ``func`` of the Python file ``path``; messages start with ``what`` (e.g.
    ``SPEC``) and say what the function should be (``expected``).

    The module is registered in ``sys.modules`` (under a name unique to its resolved path) before
    it runs, as an import would: dataclasses with string annotations and pickling (a sweep's
    worker processes) look their module up there."""
    f = Path(path)
    if f.suffix != ".py" or not f.is_file():
        raise ConfigError(f"{what}: expected FILE.py[:FUNC] naming a Python file, got {path!r}")
    tag = hashlib.sha1(str(f.resolve()).encode()).hexdigest()[:8]
    mod_spec = importlib.util.spec_from_file_location(f"bfclab_user_{f.stem}_{tag}", f)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[mod_spec.name] = module
    try:
        mod_spec.loader.exec_module(module)
    except Exception as e:  # the user's file: say which and why, in one line
        sys.modules.pop(mod_spec.name, None)
        raise ConfigError(f"{what}: '{f}' failed to load: {type(e).__name__}: {e}") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ConfigError(f"{what}: '{f}' defines no function {func!r} (expected {expected})")
    return fn
