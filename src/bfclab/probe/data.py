"""Batches for the probe: any re-iterable of ``(x, y)`` pairs works (a ``DataLoader``, a list);
:class:`TensorBatches` is the one bfclab uses, a shuffled, optionally transformed pass over two
tensors whose order is fixed by a seed (an explicit ``torch.Generator``, no global state).

The probe also needs the data without shuffling or augmentation (the train metric, the linear
probes' training set): :func:`plain` gives that view of a :class:`TensorBatches`, and
:func:`gather` the first ``limit`` examples of any batches as two tensors.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch

from .. import seeds


class TensorBatches:
    """Mini-batches of ``(x[idx], y[idx])``.  With ``shuffle`` every pass draws a fresh
    permutation from one generator seeded by ``seed`` (pass k of a seed is always the same);
    ``drop_last`` drops the incomplete last batch; ``transform(x, gen)`` (augmentation) gets
    the same generator.  ``x``/``y`` may live on any device.  ``steps``: a pass is that many
    batches instead of one epoch (shuffled epochs follow each other across passes, so a small data
    set gives a fixed number of optimiser steps per pass; ``bfclab.nets``)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = True,
                 drop_last: bool = True, seed: int = 0, stream: str = "probe_batches",
                 transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                 steps: int | None = None):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"TensorBatches: {x.shape[0]} inputs for {y.shape[0]} targets")
        self.x, self.y = x, y
        self.batch_size = max(1, min(int(batch_size), x.shape[0]))
        self.shuffle, self.drop_last, self.transform = shuffle, drop_last, transform
        self.gen = seeds.generator(stream, seed) if shuffle or transform is not None else None
        self.steps = steps
        self._epoch: Iterator | None = None

    def epoch_len(self) -> int:
        n = self.x.shape[0]
        return max(1, n // self.batch_size) if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        return self.steps if self.steps is not None else self.epoch_len()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.steps is None:
            yield from self._one_epoch()
            return
        for _ in range(self.steps):
            batch = next(self._epoch, None) if self._epoch is not None else None
            if batch is None:
                self._epoch = self._one_epoch()
                batch = next(self._epoch)
            yield batch

    def _one_epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, bs = self.x.shape[0], self.batch_size
        order = torch.randperm(n, generator=self.gen).to(self.x.device) if self.shuffle else None
        for i in range(self.epoch_len()):
            idx = order[i * bs:(i + 1) * bs] if order is not None else slice(i * bs, (i + 1) * bs)
            x = self.x[idx]
            if self.transform is not None:
                x = self.transform(x, self.gen)
            yield x, self.y[idx]


def plain(batches: Iterable, batch_size: int = 1000) -> Iterable | None:
    """``batches`` without shuffling, augmentation or dropped examples (a :class:`TensorBatches`
    over the same tensors), or None for any other iterable (the probe then skips what needs it)."""
    if isinstance(batches, TensorBatches):
        return TensorBatches(batches.x, batches.y, batch_size, shuffle=False, drop_last=False)
    return None


def gather(batches: Iterable, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` examples (default all) of ``batches`` as two CPU tensors."""
    xs, ys, n = [], [], 0
    for x, y in batches:
        xs.append(x.detach().cpu())
        ys.append(y.detach().cpu())
        n += x.shape[0]
        if limit is not None and n >= limit:
            break
    if not xs:
        raise ValueError("the probe got an empty set of batches")
    x, y = torch.cat(xs), torch.cat(ys)
    return (x[:limit], y[:limit]) if limit is not None else (x, y)
