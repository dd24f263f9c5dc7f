"""Accuracy, relative weight change and the "does the small change matter" test
(PAPER_NOTES §5.5, §7.3 B "Metrics").

* :func:`accuracy`: top-1 accuracy of the network truncated after block ``depth``.
* Relative weight change of a lower block, ||W - W_ref|| / ||W_ref|| over its convolution
  weights, with W_ref its weights at the end of its own stage (``bfclab.metrics.relative_change``),
  and its scale-free part, :func:`direction_change` (batch norm makes filter norms irrelevant).
* :func:`revert_effect`: §5.5 says the lower layers change little in norm, yet the change
  matters.  For a lower block that moved after its own stage, put back its end-of-own-stage
  state (weights and batch-norm statistics) in the final network and measure the accuracy; as a
  control, add instead a random perturbation of the same norm (tensor by tensor) to its weights.
  The final network is left as it was.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..metrics import relative_change
from .resnet import ResNet


@torch.no_grad()
def accuracy(model: ResNet, x: torch.Tensor, y: torch.Tensor, depth: int, device: torch.device,
             batch: int = 1000) -> float:
    """Top-1 accuracy (eval mode; the model's mode is restored)."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], batch):
        logits = model(x[i:i + batch].to(device), depth)
        correct += int((logits.argmax(1).cpu() == y[i:i + batch]).sum())
    model.train(was_training)
    return correct / max(1, x.shape[0])


def unit_state(model: ResNet, b: int) -> list[dict]:
    """A detached copy of unit ``b``'s full state (parameters and BN buffers), module by module."""
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in model.unit(b)]


def _weight_pairs(model: ResNet, b: int, ref: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(current, reference) convolution weights of unit ``b`` (tensors with more than one axis;
    batch-norm parameters are left out), matched by name."""
    return [(p.detach(), s[name]) for m, s in zip(model.unit(b), ref)
            for name, p in m.named_parameters() if p.dim() > 1]


def weight_change(model: ResNet, b: int, ref: list[dict]) -> float:
    """||W - W_ref|| / ||W_ref|| over unit ``b``'s convolution weights."""
    pairs = _weight_pairs(model, b, ref)
    return relative_change([p for p, _ in pairs], [r for _, r in pairs])


def direction_change(model: ResNet, b: int, ref: list[dict]) -> float:
    """Scale-free change of unit ``b``'s filters: the RMS over output filters of
    ||w/||w|| - w_ref/||w_ref|||| (0 for a pure rescaling, sqrt(2) for orthogonal filters).
    Every conv here feeds a batch norm, which makes each output filter's scale irrelevant, so
    this separates turning from the shrinking that weight decay causes."""
    sq, count = 0.0, 0
    for p, r in _weight_pairs(model, b, ref):
        u = F.normalize(p.reshape(p.shape[0], -1).double(), dim=1)
        v = F.normalize(r.reshape(r.shape[0], -1).double(), dim=1)
        sq += float((u - v).pow(2).sum())
        count += p.shape[0]
    return (sq / count) ** 0.5


def _with_unit(model: ResNet, b: int, state: list[dict]) -> ResNet:
    """A copy of ``model`` with unit ``b`` set to ``state``."""
    other = copy.deepcopy(model)
    for m, s in zip(other.unit(b), state):
        m.load_state_dict(s)
    return other


def _perturbed(state_now: list[dict], state_ref: list[dict], gen: torch.Generator) -> list[dict]:
    """``state_now`` with each weight tensor moved by a random direction of the same norm as
    its actual change since ``state_ref`` (buffers and BN parameters unchanged)."""
    out = []
    for now, ref in zip(state_now, state_ref):
        new = dict(now)
        for k, v in now.items():
            if v.dim() > 1:
                noise = torch.randn(v.shape, generator=gen).to(v.device, v.dtype)
                new[k] = v + noise * ((v - ref[k]).norm() / noise.norm())
        out.append(new)
    return out


def revert_effect(model: ResNet, refs: dict[int, list[dict]], x: torch.Tensor, y: torch.Tensor,
                  device: torch.device, seed: int) -> dict[int, dict]:
    """For every lower block b < B whose weights moved: test accuracy of the final network with
    block b reverted to ``refs[b]`` and with a random perturbation of equal norm instead."""
    depth = model.num_blocks
    out: dict[int, dict] = {}
    gen = torch.Generator().manual_seed(seed)
    for b in range(1, depth):
        if weight_change(model, b, refs[b]) == 0.0:
            continue
        now = unit_state(model, b)
        out[b] = {
            "reverted_acc": accuracy(_with_unit(model, b, refs[b]), x, y, depth, device),
            "random_acc": accuracy(_with_unit(model, b, _perturbed(now, refs[b], gen)), x, y, depth, device),
        }
    return out
