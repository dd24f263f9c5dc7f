"""Image data sets, all local (PAPER_NOTES §7.3 B "Data in CI"; CIFAR per §7.2).

* ``mnist1d``: ``mnist1d.data.make_dataset`` with its default arguments (4000 train / 1000 test
  sequences of length 40, 10 classes), generated on the spot; nothing is downloaded.
* ``digits``: scikit-learn's bundled ``load_digits`` (1797 8x8 images), split once with a fixed
  seed, stratified, so that every run is scored on the same test images.
* ``cifar10`` / ``cifar100``: the user's local copy in the python-pickle format
  (``data_batch_1..5`` + ``test_batch`` with ``b'labels'``; ``train`` + ``test`` with
  ``b'fine_labels'``; ``b'data'`` is uint8 N x 3072, channel-major 3x32x32).  A missing or
  malformed file stops with a one-line :class:`ConfigError` naming the file and the field.

Images are returned as float32 tensors (N, C, *spatial), normalised per channel with the
training set's mean and standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import seeds
from ..config import ConfigError
from ..safe_pickle import UnsafePickleError, load_data_pickle
from .config import ImageDataConfig

CIFAR_FILES = {
    "cifar10": (["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"],
                ["test_batch"], b"labels", 10, "cifar-10-batches-py"),
    "cifar100": (["train"], ["test"], b"fine_labels", 100, "cifar-100-python"),
}


@dataclass
class ImageData:
    """A normalised train/test split.  ``dim`` is the number of spatial axes (1 or 2)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def dim(self) -> int:
        return self.x_train.dim() - 2

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]


def normalise(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel standardisation with the training set's statistics."""
    axes = [0] + list(range(2, x_train.dim()))
    mean = x_train.mean(dim=axes, keepdim=True)
    std = x_train.std(dim=axes, keepdim=True).clamp_min(1e-8)
    return (x_train - mean) / std, (x_test - mean) / std


def load_mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mnist1d with its default arguments, generated locally.  ``make_dataset`` seeds numpy's
    global generator; its previous state is restored afterwards."""
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    return d["x"][:, None, :], d["y"], d["x_test"][:, None, :], d["y_test"]


def load_digits(test_frac: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits, one fixed stratified split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = d.images[:, None, :, :] / 16.0
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=test_frac, random_state=0, stratify=d.target)
    return xtr, ytr, xte, yte


def _read_pickle(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR pickle file -> (uint8 N x 3 x 32 x 32, int64 N); one-line errors."""
    if not path.is_file():
        raise ConfigError(f"data.data_dir: CIFAR file '{path}' not found")
    try:  # never pickle.load: a crafted file could run code (bfclab.safe_pickle)
        obj = load_data_pickle(path, encoding="bytes")
    except UnsafePickleError as e:
        raise ConfigError(f"data.data_dir: '{path}' is not a CIFAR python pickle and was not loaded: {e}") from None
    except Exception as e:  # the unpickler raises many kinds of error on a corrupt file
        raise ConfigError(f"data.data_dir: '{path}' is not a CIFAR python pickle ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"data.data_dir: '{path}' holds a {type(obj).__name__}, expected a dict")
    for key in (b"data", label_key):
        if key not in obj:
            raise ConfigError(f"data.data_dir: '{path}' has no field {key!r}")
    data = obj[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {tuple(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ConfigError(f"data.data_dir: field b'data' in '{path}' must be a uint8 N x 3072 array, got {got}")
    lab = obj[label_key]
    if isinstance(lab, np.ndarray):
        ints = lab.dtype.kind in "iu"
    else:
        ints = isinstance(lab, (list, tuple)) and all(type(v) is int or isinstance(v, np.integer) for v in lab)
    if not ints:
        raise ConfigError(f"data.data_dir: field {label_key!r} in '{path}' is not a list of integers")
    try:
        labels = np.asarray(lab, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"data.data_dir: field {label_key!r} in '{path}' is not a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise ConfigError(f"data.data_dir: field {label_key!r} in '{path}' has {labels.size} entries "
                          f"for {data.shape[0]} images")
    if labels.size and not (0 <= labels.min() and labels.max() < num_classes):
        raise ConfigError(f"data.data_dir: field {label_key!r} in '{path}' has labels outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(name: str, data_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10/100 from ``data_dir`` (or its standard sub-folder, e.g. ``cifar-10-batches-py``)."""
    train_files, test_files, label_key, num_classes, sub = CIFAR_FILES[name]
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.data_dir: directory '{root}' not found")
    if not (root / train_files[0]).exists() and (root / sub).is_dir():
        root = root / sub

    def read(files):
        parts = [_read_pickle(root / f, label_key, num_classes) for f in files]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    xtr, ytr = read(train_files)
    xte, yte = read(test_files)
    return xtr.astype(np.float32) / 255, ytr, xte.astype(np.float32) / 255, yte


def _subset(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` of a fixed permutation (seed 0), the same for every run; 0 = all."""
    if n <= 0 or n >= len(y):
        return x, y
    idx = seeds.numpy_rng("image_subset").permutation(len(y))[:n]
    return x[idx], y[idx]


NUM_CLASSES = {"mnist1d": 10, "digits": 10, "cifar10": 10, "cifar100": 100}


def load(cfg: ImageDataConfig) -> ImageData:
    """The data set named by ``cfg.name``, subset and normalised."""
    if cfg.name == "mnist1d":
        xtr, ytr, xte, yte = load_mnist1d()
    elif cfg.name == "digits":
        xtr, ytr, xte, yte = load_digits(cfg.test_frac)
    elif cfg.name in CIFAR_FILES:
        xtr, ytr, xte, yte = load_cifar(cfg.name, cfg.data_dir)
    else:
        raise ConfigError(f"config key 'data.name': unknown {cfg.name!r}; accepted: {', '.join(NUM_CLASSES)}")
    xtr, ytr = _subset(xtr, ytr, cfg.n_train)
    xte, yte = _subset(xte, yte, cfg.n_test)
    x_train, x_test = normalise(torch.as_tensor(xtr, dtype=torch.float32), torch.as_tensor(xte, dtype=torch.float32))
    return ImageData(cfg.name, x_train, torch.as_tensor(ytr, dtype=torch.long), x_test,
                     torch.as_tensor(yte, dtype=torch.long), NUM_CLASSES[cfg.name])
