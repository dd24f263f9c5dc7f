"""A restricted unpickler for data files that arrive in Python's pickle format.

The CIFAR-10/100 "python version" files (PAPER_NOTES §7.2) are pickles, and a pickle is a
program: an ordinary ``pickle.load`` runs whatever callable the file names (``os.system`` through
``__reduce__``, for instance).  bfclab reads such files from wherever the user got them, so it
never uses ``pickle.load``.  :func:`load_data_pickle` admits exactly what a numeric data file
needs and nothing else:

* the pickle machine's own containers and scalars (dict, list, tuple, bytes, str, int, float,
  bool, None: these need no import at all);
* numpy's array reconstruction path (``_reconstruct`` with ``numpy.ndarray`` as the class,
  ``_frombuffer`` for protocol 5, ``numpy.dtype`` and numpy scalars) with plain numeric dtypes
  only (bool, signed/unsigned integers, floats; no object, string, void or structured dtypes);
* ``_codecs.encode``, which Python 3 pickles of protocol <= 2 use to spell ``bytes``.

Any other global the file asks for stops the load with :class:`UnsafePickleError`, whose
message names the global; the loaded object is then walked once more and anything outside the
list above is rejected too.  Why not a library: the well-kept scanners (e.g. fickling,
picklescan) are static analysers that warn; what bfclab needs is a loader that cannot execute
code, which is this short ``find_class`` allow-list (the approach of the Python docs'
"Restricting Globals" section and of ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

#: dtype kinds a data file may hold: bool, signed int, unsigned int, float.
NUMERIC_KINDS = "biuf"


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for something a plain numeric data file never needs."""


def _numpy_attr(modules: tuple[str, ...], name: str):
    for mod in modules:
        try:
            obj = __import__(mod, fromlist=[name])
            return getattr(obj, name)
        except (ImportError, AttributeError):
            continue
    raise UnsafePickleError(f"numpy has no {name} here")  # pragma: no cover - numpy layout changed


def _check_dtype(dt: Any) -> np.dtype:
    dt = np.dtype(dt) if not isinstance(dt, np.dtype) else dt
    if dt.kind not in NUMERIC_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise UnsafePickleError(f"dtype {dt.str!r} is not a plain numeric dtype")
    return dt


def _safe_dtype(spec: Any, *args: Any) -> np.dtype:
    """``numpy.dtype(spec, align, copy)`` restricted to numeric dtypes."""
    if isinstance(spec, bytes):
        spec = spec.decode("ascii")
    if not isinstance(spec, str):
        raise UnsafePickleError(f"numpy.dtype called with {type(spec).__name__}, expected a type code")
    return _check_dtype(np.dtype(spec, *args))


def _safe_reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
    """``numpy ... _reconstruct(ndarray, shape, typecode)``: only plain ndarrays."""
    if cls is not np.ndarray:
        raise UnsafePickleError("_reconstruct asked for a class other than numpy.ndarray")
    real = _numpy_attr(("numpy._core.multiarray", "numpy.core.multiarray"), "_reconstruct")
    return real(cls, shape, typecode)


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    real = _numpy_attr(("numpy._core.numeric", "numpy.core.numeric"), "_frombuffer")
    return real(buf, _check_dtype(dtype), shape, order)


def _safe_scalar(dtype: Any, data: Any = None) -> Any:
    real = _numpy_attr(("numpy._core.multiarray", "numpy.core.multiarray"), "scalar")
    return real(_check_dtype(dtype), data)


def _safe_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if not isinstance(obj, str):
        raise UnsafePickleError("_codecs.encode called on a non-string")
    import codecs

    return codecs.encode(obj, encoding, errors)


_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy.core.multiarray", "scalar"): _safe_scalar,
    ("numpy._core.multiarray", "scalar"): _safe_scalar,
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    ("_codecs", "encode"): _safe_encode,
}


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"it asks for {module}.{name}, which a data file never needs") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("it uses persistent ids, which a data file never needs")


_PLAIN = (bytes, str, int, float, bool, type(None))


def _check_tree(obj: Any, depth: int = 0) -> None:
    """Everything reachable is a container, a plain scalar or a numeric ndarray."""
    if depth > 64:
        raise UnsafePickleError("it nests deeper than 64 levels")
    if isinstance(obj, np.ndarray):
        if type(obj) is not np.ndarray:
            raise UnsafePickleError(f"it holds a {type(obj).__name__}, not a plain ndarray")
        _check_dtype(obj.dtype)
    elif isinstance(obj, np.generic):
        _check_dtype(obj.dtype)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_tree(k, depth + 1)
            _check_tree(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_tree(v, depth + 1)
    elif not isinstance(obj, _PLAIN):
        raise UnsafePickleError(f"it holds a {type(obj).__name__}")


def loads_data_pickle(data: bytes, encoding: str = "bytes") -> Any:
    """Unpickle ``data`` admitting only containers, plain scalars and numeric numpy arrays.

    Raises :class:`UnsafePickleError` for anything else, ``pickle.UnpicklingError`` (or
    EOFError, ValueError, ...) for a damaged stream.  ``encoding`` is passed to the unpickler
    ("bytes" keeps Python 2 ``str`` objects as bytes, as the CIFAR files need).
    """
    obj = _Restricted(io.BytesIO(data), encoding=encoding).load()
    _check_tree(obj)
    return obj


def load_data_pickle(path: str | Path, encoding: str = "bytes") -> Any:
    """:func:`loads_data_pickle` of a file's bytes."""
    return loads_data_pickle(Path(path).read_bytes(), encoding=encoding)
