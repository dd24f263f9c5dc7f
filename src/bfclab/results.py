"""Run-directory I/O: atomic writes, the JSONL metrics series and result files.

Every run directory holds ``config.json`` (resolved), ``metrics.jsonl`` (one record per log
event), ``result.json`` (final) and figures.  Whole files are written to a temporary name and
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
from pathlib import Path
from typing import Any


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
    import torch  # here, not at the top: the JSON readers of this module need no torch

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
    """Read a metrics series, skipping a final partial line left by a killed process."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(_restore(json.loads(line)))
        except json.JSONDecodeError:
            continue
    return out
