"""What feature visualisation changes in a model while it renders, each a context manager that
patches module ``forward`` methods in place and restores them on exit (the model's modules,
parameters and hooks stay the same objects, so hooks on the rendered layers keep working):

- :class:`RedirectedReLUs`: Lucid's redirected ReLU gradient, for channels that are 0 on the
  start image.
- :class:`FoldedBatchNorms`: each eval-mode BatchNorm2d that directly follows a Conv2d in an
  ``nn.Sequential`` is folded into the conv's weights and bias (the same affine map, one pass
  over the activations fewer, forward and backward: about a sixth of a batched CPU step of
  MobileNetV2).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class _RedirectedClamp(torch.autograd.Function):
    """``clamp(x, low, high)`` whose gradient, for a batch item that gets none through the clamp,
    also flows where x is out of range if it pushes x back towards the range (Lucid's
    redirected ReLU gradient)."""

    @staticmethod
    def forward(ctx, x, low: float, high: float):
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        # clamp's own gradient (grad where low < x < high, else 0), fused: boolean masks and a
        # where() cost 30-50x more on the CPU
        ordinary = torch.ops.aten.hardtanh_backward(grad, x, ctx.low, ctx.high)
        per_item = _rows(ordinary)
        stuck = (per_item.amax(dim=1) == 0) & (per_item.amin(dim=1) == 0)
        # Usually no item is stuck: skip the redirected gradient's passes over the tensor. On a
        # GPU this test would stall the stream once per ReLU.
        if x.device.type == "cpu" and not bool(stuck.any()):
            return ordinary, None, None
        # the loss is minimised, so a negative gradient raises x: keep it below the range and
        # a positive one above it
        redirected = torch.where(((x < ctx.low) & (grad > 0)) | ((x > ctx.high) & (grad < 0)), 0.0, grad)
        return torch.where(stuck.view(-1, *([1] * (x.dim() - 1))), redirected, ordinary), None, None


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as (batch, everything else), a view for contiguous and channels_last tensors alike
    (flattening a channels_last tensor copies it; on the CPU amax and amin over the view take a
    twentieth of the time of a norm or aminmax over the tensor)."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        t = t.permute(0, 2, 3, 1)
    return t.reshape(t.shape[0], -1)


class RedirectedReLUs:
    """While active, ``model``'s ``nn.ReLU`` and ``nn.ReLU6`` modules compute their clamp with
    the redirected gradient (out of place). Functional ``F.relu`` calls are not redirected."""

    def __init__(self, model: nn.Module):
        self.modules = [(m, 6.0 if isinstance(m, nn.ReLU6) else math.inf) for m in model.modules()
                        if isinstance(m, (nn.ReLU, nn.ReLU6))]

    def __enter__(self):
        for module, high in self.modules:
            module.forward = lambda x, high=high: _RedirectedClamp.apply(x, 0.0, high)
        return self

    def __exit__(self, *exc):
        for module, _ in self.modules:
            del module.forward  # the class's forward again
        return False


class FoldedBatchNorms:
    """While active, each eval-mode ``nn.BatchNorm2d`` (with running statistics) that follows an
    ``nn.Conv2d`` in an ``nn.Sequential`` is folded into it: the conv computes
    ``bn(conv(x))`` with weights ``w * g`` and bias ``(b - mean) * g + beta``
    (``g = gamma / sqrt(var + eps)``) and the BatchNorm passes its input through. Equal up to
    float rounding.

    Convs in ``keep`` (module names whose output someone reads, e.g. the rendered layers) are not
    folded: their output would become the BatchNorm's. A Sequential's ``forward`` may be
    overridden (e.g. to pad first, or in another order), which is why
    :func:`folding_changes_nothing` compares outputs before use.
    """

    def __init__(self, model: nn.Module, keep: set[str] = frozenset()):
        named = {id(m): name for name, m in model.named_modules()}
        self.pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []
        for sequential in model.modules():
            if not isinstance(sequential, nn.Sequential):
                continue
            children = list(sequential)
            for conv, bn in zip(children, children[1:]):
                if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and not bn.training
                        and bn.running_mean is not None and named.get(id(conv)) not in keep
                        and conv.out_channels == bn.num_features):
                    self.pairs.append((conv, bn))

    def __enter__(self):
        for conv, bn in self.pairs:
            weight, bias = _folded(conv, bn)
            conv.forward = lambda x, conv=conv, weight=weight, bias=bias: conv._conv_forward(x, weight, bias)
            bn.forward = _identity
        return self

    def __exit__(self, *exc):
        for conv, bn in self.pairs:
            del conv.forward, bn.forward
        return False


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@torch.no_grad()
def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of ``bn(conv(x))`` as one conv, in the conv's dtype."""
    gain = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(gain)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(gain)
    weight = (conv.weight * gain.view(-1, *([1] * (conv.weight.dim() - 1)))).to(conv.weight.dtype)
    # channels_last, as the rendered images are: a conv would otherwise convert its weight at every call
    return weight.contiguous(memory_format=torch.channels_last), ((bias - bn.running_mean) * gain + shift).to(weight.dtype)


def folding_changes_nothing(folded: FoldedBatchNorms, capture, x: torch.Tensor) -> bool:
    """Whether ``capture(x)`` (the rendered layers' outputs, a dict) is the same, up to float
    rounding, with ``folded`` active as without: a Sequential whose own ``forward`` does not
    apply its children in order, or a conv that is also called elsewhere, would differ."""
    if not folded.pairs:
        return True
    with torch.no_grad():
        plain = capture(x)
        with folded:
            fused = capture(x)
    return all(torch.allclose(fused[name].float(), out.float(), rtol=1e-3, atol=1e-3 * (1 + out.abs().max().item()))
               for name, out in plain.items())
