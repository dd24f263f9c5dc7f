"""Run-directory I/O: atomic writes, the JSONL metrics series and result files.

Every run directory holds ``config.json`` (resolved), ``metrics.jsonl`` (one record per log
event) and ``result.json`` (final; :class:`Result`).  Whole files are written to a temporary name and
renamed, so an interrupted run never leaves a truncated file behind.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else "nan")
    if hasattr(obj, "item") and callable(obj.item):
        return _jsonable(obj.item())
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """JSON text with non-finite floats written as strings ("inf"), so any reader can parse it."""
    return json.dumps(_jsonable(obj), indent=indent)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (dumps(obj) + "\n").encode())


_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _restore(obj: Any) -> Any:
    """Undo ``_jsonable``'s spelling of non-finite floats as strings."""
    if isinstance(obj, dict):
        return {k: _restore(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v) for v in obj]
    if isinstance(obj, str) and obj in _NONFINITE:
        return _NONFINITE[obj]
    return obj


def read_json(path: Path) -> Any:
    return _restore(json.loads(Path(path).read_text()))


def read_json_mapping(path: Path, what: str, remedy: str) -> dict:
    """A JSON file that must hold a mapping, or a one-line :class:`ConfigError` naming it as
    ``what`` ('run file', 'cell file', ...) and what to do about it (``remedy``)."""
    try:
        data = read_json(path)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"{what} '{path}': unreadable ({type(e).__name__}); {remedy}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} '{path}': expected a mapping; {remedy}")
    return data


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record as a line; the line is written whole with a single write call."""
    with open(path, "a") as f:
        f.write(dumps(record, indent=None) + "\n")
        f.flush()


def load_torch_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` of a file ``torch.save`` wrote, after checking it whole:
    torch's zip container stores a CRC-32 of every member, which ``torch.load`` does not verify, so a
    flipped bit in a tensor would load silently.  Raises ValueError on any damage; torch's warnings
    about odd input are not shown (the file is refused or accepted on its own merits)."""
    import torch

    data = Path(path).read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            bad = z.testzip()
    except Exception as e:  # BadZipFile, or struct/zlib/EOF errors on a mangled container
        raise ValueError(f"not a zip container ({type(e).__name__})") from None
    if bad is not None:
        raise ValueError(f"member '{bad}' fails its CRC check")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def read_jsonl(path: Path) -> list[dict]:
    """Read a metrics series, skipping lines that are not whole UTF-8 JSON records (a final partial line
    left by a killed process, a damaged line)."""
    out = []
    for line in Path(path).read_bytes().splitlines():
        try:
            out.append(_restore(json.loads(line.decode("utf-8"))))
        except (UnicodeDecodeError, json.JSONDecodeError):  # a cut or damaged line: not a record
            continue
    return out


# ---- typed results ------------------------------------------------------------------------------

#: the per-level measurements of a record or result (level -> value; int keys in Python)
LEVEL_KEYS = ("feature_error", "procrustes_error", "term_error", "weight_change", "scales")
#: the headline error of a task, in order of preference
ERROR_NAMES = ("test_error", "test_nmse")


def int_levels(per_level: Any) -> dict[int, Any]:
    """``{"2": v, ...}`` (after a JSON round trip) or ``{2: v}`` -> ``{2: v}``."""
    return {int(k): v for k, v in (per_level or {}).items()}


def record_of(rec: dict) -> dict:
    """A metrics record (a ``metrics.jsonl`` line) with int level keys."""
    return {k: int_levels(v) if k in LEVEL_KEYS and isinstance(v, dict) else v for k, v in rec.items()}


def read_records(path: Path) -> list[dict]:
    """``metrics.jsonl`` as records with int level keys (see :func:`read_jsonl`)."""
    return [record_of(r) for r in read_jsonl(path)]


def error_names(task: str) -> tuple[str, str]:
    """(test, train) error names of a task: ``test_error``/``train_error`` for classification
    (the 0-1 error), ``test_nmse``/``train_nmse`` for regression."""
    return ("test_error", "train_error") if task == "classification" else ("test_nmse", "train_nmse")


def error_name(obj: dict) -> str:
    """The headline error a result or record carries: ``test_error`` (classification: the 0-1
    error) if present, else ``test_nmse`` (regression)."""
    return next((k for k in ERROR_NAMES if k in obj), ERROR_NAMES[-1])


@dataclass
class Result:
    """The final result of one synthetic run, deep or baseline (``result.json``; PAPER_NOTES §7.3).

    ``metrics``: the task's errors (``test_nmse``/``train_nmse`` for regression;
    ``test_error``/``train_error``/``test_loss``/``train_loss`` for classification; nan when the
    run diverged).  Per-level dicts have int keys: ``feature_error[l]`` (§5.2's per-level error of
    S_l against S*_l at the end), ``procrustes_error``, ``weight_change``; ``stage_end[s]`` is what
    was measured at the end of stage s (its ``feature_error``, ``weight_change`` and the error).
    ``term_error[l]``: the error of level l's contribution to the output (issue 11).  ``intervals``:
    95 % confidence intervals of the test errors (``intervals["test_nmse"] = [lo, hi]``, over
    independent blocks of the test set).  ``extra`` keeps everything else a result file holds (``diverged``, a baseline's ``baseline``
    options, ``chosen``, ``info``, ...), so that ``from_json(to_json())`` loses nothing.
    """

    method: str
    seed: int
    config: dict
    seconds: float
    metrics: dict[str, float]
    feature_error: dict[int, float] = field(default_factory=dict)
    procrustes_error: dict[int, float] = field(default_factory=dict)
    weight_change: dict[int, float] = field(default_factory=dict)
    stage_end: dict[int, dict] = field(default_factory=dict)
    steps: int | None = None
    term_error: dict[int, float] = field(default_factory=dict)
    intervals: dict[str, list[float]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def error_name(self) -> str:
        return error_name(self.metrics)

    @property
    def error(self) -> float:
        """The headline test error (``test_error`` for classification, ``test_nmse`` otherwise)."""
        return self.metrics.get(self.error_name, math.nan)

    @property
    def diverged(self) -> str | None:
        return self.extra.get("diverged")

    def stage_value(self, stage: int, key: str, level: int | None = None) -> float:
        """``stage_end[stage][key]`` (``[level]`` for a per-level key); nan where not measured."""
        rec = self.stage_end.get(int(stage))
        if rec is None or key not in rec:
            return math.nan
        return rec[key].get(int(level), math.nan) if level is not None else rec[key]

    def to_json(self) -> dict:
        """The ``result.json`` mapping (flat: the metrics at the top level, as bfclab has always
        written it)."""
        out: dict = {"method": self.method, "seed": self.seed}
        if self.steps is not None:
            out["steps"] = self.steps
        out.update(seconds=self.seconds, feature_error=self.feature_error, procrustes_error=self.procrustes_error,
                   weight_change=self.weight_change, stage_end=self.stage_end, config=self.config)
        if self.term_error:
            out["term_error"] = self.term_error
        if self.intervals:
            out["intervals"] = self.intervals
        out.update(self.metrics)
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Result":
        """A result mapping (from :meth:`to_json` or a stored ``result.json``) -> Result.
        Raises ValueError naming the first malformed field."""
        problem = _result_problem(data)
        if problem:
            raise ValueError(problem)
        d = dict(data)
        core = {k: d.pop(k) for k in ("method", "seed", "config", "seconds") if k in d}
        metrics = {k: d.pop(k) for k in METRIC_NAMES if k in d}
        levels = {k: int_levels(d.pop(k, None)) for k in ("feature_error", "procrustes_error", "weight_change",
                                                           "term_error")}
        intervals = d.pop("intervals", None) or {}
        stage_end = {int(s): record_of(r) for s, r in (d.pop("stage_end", None) or {}).items()}
        steps = d.pop("steps", None)
        return cls(method=core.get("method", ""), seed=core.get("seed", 0), config=core.get("config") or {},
                   seconds=core.get("seconds", math.nan), metrics=metrics, stage_end=stage_end, steps=steps,
                   intervals=intervals, extra=d, **levels)

    @classmethod
    def read(cls, path: Path) -> "Result":
        """``Result.from_json(read_json(path))``."""
        return cls.from_json(read_json(path))


METRIC_NAMES = ("test_nmse", "train_nmse", "test_error", "train_error", "test_loss", "train_loss")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _levels_ok(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, (int, str)) and str(k).isdecimal() and str(k).isascii()
                                       for k in v)


def _result_problem(d: Any) -> str | None:
    """The first field of a result mapping :meth:`Result.from_json` cannot use, as a sentence."""
    if not isinstance(d, dict):
        return "expected a mapping of results"
    if not isinstance(d.get("method", ""), str):
        return "field 'method' must be a string"
    if not (isinstance(d.get("seed", 0), int) and not isinstance(d.get("seed", 0), bool)):
        return "field 'seed' must be an integer"
    if not isinstance(d.get("config", {}), dict):
        return "field 'config' must be a mapping"
    for k in ("seconds", *METRIC_NAMES):
        if k in d and not _number(d[k]):
            return f"field '{k}' must be a number"
    for k in ("feature_error", "procrustes_error", "weight_change", "term_error"):
        if d.get(k) is not None and not (_levels_ok(d[k]) and all(_number(v) for v in d[k].values())):
            return f"field '{k}' must map levels to numbers"
    iv = d.get("intervals")
    if iv is not None and not (isinstance(iv, dict) and all(
            isinstance(v, list) and len(v) == 2 and all(_number(x) for x in v) for v in iv.values())):
        return "field 'intervals' must map error names to [low, high]"
    se = d.get("stage_end")
    if se is not None and not (_levels_ok(se) and all(
            isinstance(r, dict) and all(_levels_ok(v) for k, v in r.items() if k in LEVEL_KEYS) for r in se.values())):
        return "field 'stage_end' must map stages to records"
    if d.get("steps") is not None and not (isinstance(d["steps"], int) and not isinstance(d["steps"], bool)):
        return "field 'steps' must be an integer"
    return None
