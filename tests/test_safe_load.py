"""Loading a user's files never runs code from them (issue 15; docs/RELIABILITY.md "Security").

* the restricted unpickler admits what the CIFAR format needs and nothing else;
* a crafted CIFAR file whose pickle would run a shell command is rejected with a one-line error,
  through the loader and through the CLI (exit status 2), and the command never runs;
* the source tree has no ``torch.load`` without ``weights_only=True`` and no bare
  ``pickle.load``/``pickle.loads``.
"""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bfclab.config import ConfigError
from bfclab.images.config import ImageDataConfig
from bfclab.images.data import load, load_cifar
from bfclab.safe_pickle import UnsafePickleError, loads_data_pickle

from test_images import write_cifar

ROOT = Path(__file__).resolve().parents[1]


class _Evil:
    """Unpickling this runs ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _evil_batch(marker: Path) -> bytes:
    obj = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"batch_label": _Evil(f"touch '{marker}'")}
    return pickle.dumps(obj)


def test_plain_pickle_would_run_the_command(tmp_path):
    """The fabricated attack is real: the ordinary unpickler runs it (so the tests below mean something)."""
    marker = tmp_path / "pwned"
    pickle.loads(_evil_batch(marker))
    assert marker.exists()


def test_crafted_cifar_file_is_rejected_by_the_loader(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "data_batch_2").write_bytes(_evil_batch(marker))
    with pytest.raises(ConfigError) as e:
        load(ImageDataConfig(name="cifar10", data_dir=str(tmp_path)))
    msg = str(e.value)
    assert "\n" not in msg and "data_batch_2" in msg and "system" in msg and "not loaded" in msg
    assert not marker.exists()


def test_crafted_cifar_file_through_the_cli_exits_2(tmp_path):
    data = tmp_path / "cifar"
    data.mkdir()
    write_cifar(data)
    marker = tmp_path / "pwned"
    (data / "test_batch").write_bytes(_evil_batch(marker))
    out = tmp_path / "runs"
    p = subprocess.run([sys.executable, "-m", "bfclab.cli", "images", "--dataset", "cifar10", "--data-dir", str(data),
                        "--out", str(out), "--methods", "bfc", "--seeds", "0"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "test_batch" in lines[0] and "Traceback" not in p.stderr
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_real_format_files_load_byte_identical(tmp_path, protocol):
    """The fabricated CIFAR files load, with every pickle protocol, to the very bytes written."""
    xtr, ytr, xte, yte = write_cifar(tmp_path)
    for f in tmp_path.iterdir():  # rewrite each file with this protocol
        obj = pickle.loads(f.read_bytes(), encoding="bytes")
        f.write_bytes(pickle.dumps(obj, protocol=protocol))
    a, b, c, d = load_cifar("cifar10", str(tmp_path))
    assert np.array_equal(np.rint(a * 255).astype(np.uint8), xtr) and np.array_equal(b, ytr)
    assert np.array_equal(np.rint(c * 255).astype(np.uint8), xte) and np.array_equal(d, yte)
    obj = loads_data_pickle((tmp_path / "data_batch_1").read_bytes())
    assert obj[b"data"].tobytes() == xtr[:12].reshape(12, 3072).tobytes() and obj[b"data"].dtype == np.uint8


def test_python2_numpy_module_path_is_accepted():
    """The real CIFAR files were written by Python 2 / old numpy: ``numpy.core.multiarray``."""
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw = pickle.dumps({b"data": arr}, protocol=2)
    old = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n_reconstruct" in old
    assert np.array_equal(loads_data_pickle(old)[b"data"], arr)


@pytest.mark.parametrize("payload", [
    np.array([object()], dtype=object),                   # object arrays unpickle arbitrary objects
    np.array(["a", "b"]),                                  # strings: not numeric
    np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]),         # structured dtype
    np.ma.masked_array([1, 2]),                            # an ndarray subclass
    {1, 2},                                                # a set needs builtins.set
    Path("/etc/passwd"),                                   # any other class
    _Evil("true"),
])
def test_unpickler_rejects_everything_else(payload):
    for protocol in (2, 4, 5):
        with pytest.raises(UnsafePickleError):
            loads_data_pickle(pickle.dumps({b"x": payload}, protocol=protocol))


def test_unpickler_admits_plain_containers_and_numeric_arrays():
    obj = {b"a": [1, 2.5, True, None, b"x", "y", (3, 4)], b"f": np.linspace(0, 1, 5), b"i": np.int64(7),
           b"b": np.array([True, False]), b"u": np.arange(4, dtype=np.uint16)}
    for protocol in (2, 4, 5):
        got = loads_data_pickle(pickle.dumps(obj, protocol=protocol))
        assert got[b"a"] == obj[b"a"] and got[b"i"] == 7
        for k in (b"f", b"b", b"u"):
            assert got[k].dtype == obj[k].dtype and np.array_equal(got[k], obj[k])


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            yield node, f"{node.func.value.id}.{node.func.attr}"


def _offences(source: str) -> list[str]:
    bad = []
    for node, name in _calls(ast.parse(source)):
        if name in ("pickle.load", "pickle.loads", "pickle.Unpickler"):
            bad.append(f"line {node.lineno}: {name}")
        if name in ("np.load", "numpy.load") and any(  # numpy's default is allow_pickle=False
                k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                for k in node.keywords):
            bad.append(f"line {node.lineno}: {name} with allow_pickle")
        if name == "torch.load" and not any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords):
            bad.append(f"line {node.lineno}: torch.load without weights_only=True")
    return bad


def test_the_source_walker_catches_unsafe_loads():
    """The walker below is not vacuous: it flags each unsafe form and passes the safe ones."""
    src = ("torch.load(p)\ntorch.load(p, weights_only=False)\npickle.load(f)\npickle.loads(b)\n"
           "np.load(p, allow_pickle=True)\ntorch.load(p, map_location='cpu', weights_only=True)\n"
           "np.load(p)\nnp.load(p, allow_pickle=False)\n")
    assert [o.split(":")[0] for o in _offences(src)] == ["line 1", "line 2", "line 3", "line 4", "line 5"]


def test_no_unsafe_load_in_the_source_tree():
    files = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "bench").rglob("*.py")) + \
        sorted((ROOT / "examples").rglob("*.py"))
    assert len(files) > 20
    found = [f"{f.relative_to(ROOT)} {o}" for f in files for o in _offences(f.read_text())]
    assert not found, found
