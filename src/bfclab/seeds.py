"""Named random streams: every seeded draw of bfclab's own comes from one of these (PAPER_NOTES §9).

A stream maps a user-facing seed (the run's ``seed``, or the target's ``target.seed``) to the
integer that seeds one ``torch.Generator`` / ``numpy`` generator, as ``multiplier * seed +
offset (+ index)``.  Every consumer gets a generator of its own, so changing how many numbers one
consumer draws (a wider learner, more training samples) leaves every other draw unchanged.
Functions that take an integer ``seed`` argument (``Target.sample``, ``ridge.split``) are given
a stream's value by their callers.  Draws outside bfclab's control are not streams:
scikit-learn's digits split (``random_state=0``) and mnist1d's own generator.

The values are the ones bfclab has always used, so stored results reproduce; they are not all
distinct.  The run's main streams (train_data, learner_init, batches, image_batches) have distinct
large multipliers, but several secondary streams give the same integer as another stream of the
same seed (``target``, ``image_init``, ``probe_revert``, ``ridge_split``, ``baseline_init`` and
``seqkernel_split`` at index 0 are all ``seed``; ``entk_init``, ``krr_select`` and ``rf_split``
are ``seed + 1``; ``seqkernel_split(s, l)`` equals ``seqkernel_split(s + 1, l - 1)``).  Two such
streams draw the same numbers: e.g. the first random-feature weights of seed 0 equal the first
draw of the target of seed 0, before its orthonormalisation.  Each coincidence pairs draws of
unrelated objects (a target and a baseline, two splits of different estimators), which leaves the
experiments' statistics sound; distinct values would change every stored baseline result.

==================  ============  ======================================================
stream              seeded by     draws
==================  ============  ======================================================
target              target.seed   the target's weights, then its Monte-Carlo normalisation
train_data          run seed      the training inputs x ~ N(0, I_d) and label noise
test_data           target.seed   the test inputs (shared by every run on one target)
target_variance     target.seed   the sample that estimates the population Var(G*) once
learner_init        run seed      the learner's fixed random lifts R_j
batches             run seed      new-level initialisation and the SGD mini-batches
image_init          run seed      the ResNet's initial weights (images experiment)
image_batches       run seed      epoch permutations and augmentation (images experiment)
image_subset        (fixed)       which examples of a data set are kept (``data.n_train``)
image_probe         (fixed)       the training subset the linear probes are fitted on
probe_revert        run seed      the random perturbations of the probe's "revert" measurement
probe_heads         run seed      heads a probe spec gives as a factory (``bfclab.probe``)
probe_batches       run seed      ``bfclab.probe.TensorBatches``' permutations and transforms
entk_init           run seed      the learner at init whose empirical NTK is a baseline
krr_select          run seed      the sub-sample on which KRR selects its ridge
nystrom_centres     run seed      the Nyström KRR's centres (selection fit, then the final fit)
ridge_split         run seed      a ridge solver's fit/validation split
rf_split            run seed      the random-feature ridge's fit/validation split
baseline_init       run seed      random features, two-layer network weights and batches
seqkernel_split     run seed      the sequential kernel's split at each level (index = level)
sample_reference    (fixed)       the sample on which the sample-complexity study measures
floors              seed          the Gaussian pairs of a target's error floors (index 1: top level)
rhm_rules           target.seed   the Random Hierarchy Model's production rules (``bfclab.targets.rhm``)
staircase_support   target.seed   the staircase's coordinates, when shuffled (``bfclab.targets.staircase``)
user_target         target.seed   the seed a user's own target factory is given (``python:`` targets)
net_init            run seed      a generic deep net's initial weights (``bfclab.nets``)
net_batches         run seed      a generic deep net's mini-batches (``bfclab.nets``)
tune_split          run seed      a tuned baseline's fit/validation split (``bfclab.baselines.tuning``)
validation_data     target.seed   independent validation draws (index = draw) on which defaults are chosen (``bench/defaults.py``)
==================  ============  ======================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Stream:
    multiplier: int
    offset: int
    doc: str

    def __call__(self, seed: int = 0, index: int = 0) -> int:
        return self.multiplier * int(seed) + self.offset + int(index)


STREAMS: dict[str, Stream] = {
    "target": Stream(1, 0, "target weights and Monte-Carlo normalisation"),
    "train_data": Stream(7919, 11, "training inputs and label noise"),
    "test_data": Stream(1, 2_000_000_011, "test inputs (of the target's seed)"),
    "target_variance": Stream(1, 3_000_000_019, "the population-variance sample (of the target's seed)"),
    "learner_init": Stream(10_007, 17, "the learner's lifts"),
    "batches": Stream(1_000_003, 1, "new-level initialisation and mini-batches"),
    "image_init": Stream(1, 0, "ResNet initial weights"),
    "image_batches": Stream(1_000_003, 7, "epoch permutations and augmentation"),
    "image_subset": Stream(0, 0, "the kept examples of a data set"),
    "image_probe": Stream(0, 12345, "the linear probes' training subset"),
    "probe_revert": Stream(1, 0, "the revert measurement's random perturbations"),
    "probe_heads": Stream(1_000_033, 29, "heads made by a probe spec's factory"),
    "probe_batches": Stream(1_000_037, 31, "TensorBatches' permutations and transforms"),
    "entk_init": Stream(1, 1, "the learner whose empirical NTK is a baseline"),
    "krr_select": Stream(1, 1, "KRR's ridge-selection sub-sample"),
    "nystrom_centres": Stream(1_000_039, 37, "the Nyström KRR's centres"),
    "ridge_split": Stream(1, 0, "a ridge solver's fit/validation split"),
    "rf_split": Stream(1, 1, "the random-feature ridge's fit/validation split"),
    "baseline_init": Stream(1, 0, "random features, two-layer weights and batches"),
    "seqkernel_split": Stream(1, 0, "the sequential kernel's fit/validation split of level `index`"),
    "sample_reference": Stream(0, 123, "the sample-complexity study's reference sample"),
    "floors": Stream(1_000_043, 43, "the Gaussian pairs of bfclab.floors"),
    "rhm_rules": Stream(1_000_051, 47, "the Random Hierarchy Model's production rules"),
    "staircase_support": Stream(1_000_061, 53, "the staircase's shuffled coordinates"),
    "user_target": Stream(1, 0, "the seed a user's own target factory is given"),
    "net_init": Stream(1_000_067, 59, "a generic deep net's initial weights"),
    "net_batches": Stream(1_000_069, 61, "a generic deep net's mini-batches"),
    "tune_split": Stream(1_000_079, 67, "a tuned baseline's fit/validation split"),
    "validation_data": Stream(1_000_000, 4_000_000_007, "validation draws of a target (index = draw)"),
}


def seed_of(stream: str, seed: int = 0, index: int = 0) -> int:
    """The integer that seeds ``stream`` for the user-facing ``seed`` (``index``: one of several
    draws of a stream, e.g. a level)."""
    return STREAMS[stream](seed, index)


def generator(stream: str, seed: int = 0, index: int = 0) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` for ``stream`` (never the global generator)."""
    return torch.Generator().manual_seed(seed_of(stream, seed, index))


def numpy_rng(stream: str, seed: int = 0) -> np.random.Generator:
    """A fresh ``numpy`` generator for ``stream``."""
    return np.random.default_rng(seed_of(stream, seed))
