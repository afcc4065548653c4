"""The argument lists of the native ops in ``summit_fast._C`` (``cpu_*``, ``cuda_*`` and
``cuda_emulated_*`` take the same ones): tensors become raw pointers with their shape,
element strides and dtype name, read in place by the kernels (NCHW or channels_last, any float
dtype). Only small tensors are normalised: labels (int64), the excluded mask, and the conv
weight (contiguous float32, or float64 when the input or the weight is float64, so that
nothing is rounded)."""

from __future__ import annotations

import torch

from ..rules import Mass, TopK


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _rule(rule) -> tuple[str, float, int]:
    if isinstance(rule, Mass):
        return "mass", float(rule.tau), 0
    if isinstance(rule, TopK):
        return "topk", 0.0, int(rule.k)
    raise TypeError(f"rule must be summit_fast.mass(...) or summit_fast.topk(...), got {rule!r}")


def _labels(labels: torch.Tensor) -> torch.Tensor:
    if labels.dtype != torch.int64 or not labels.is_contiguous():  # usually neither: no copy
        labels = labels.to(torch.int64).contiguous()
    return labels


def activation_args(acts, labels, counts, rule, excluded, maxima) -> tuple:
    """The positional arguments of ``*_activation_update``; the tensors they point into are
    kept alive by the caller's references plus the returned ``keep`` tuple (first element)."""
    if acts.shape[2] * acts.shape[3] == 0:
        raise ValueError(f"activations have an empty spatial grid: shape {tuple(acts.shape)}")
    kind, tau, k = _rule(rule)
    labels = _labels(labels)
    excluded = None if excluded is None else excluded.contiguous()
    keep = (labels, excluded)
    return keep, (acts.data_ptr(), dtype_name(acts), tuple(acts.shape), tuple(acts.stride()),
                  labels.data_ptr(), counts.data_ptr(), counts.shape[0], kind, tau, k,
                  0 if excluded is None else excluded.data_ptr(),
                  *((0, 0) if maxima is None else (maxima[0].data_ptr(), maxima[1].data_ptr())))


def influence_args(x, weight, conv, labels, counts, k, spatial_stride) -> tuple:
    """The positional arguments of ``*_influence_update`` (all but ``prune``), as
    :func:`activation_args` returns them."""
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"conv input has an empty spatial grid: shape {tuple(x.shape)}")
    wide = torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32
    weight = weight.to(wide).contiguous()
    labels = labels.to(torch.int64).contiguous()
    keep = (weight, labels)
    return keep, (x.data_ptr(), dtype_name(x), tuple(x.shape), tuple(x.stride()),
                  weight.data_ptr(), dtype_name(weight), tuple(weight.shape),
                  tuple(conv.stride), tuple(conv.pad), tuple(conv.dilation), conv.groups, conv.padding_mode,
                  spatial_stride, labels.data_ptr(), counts.data_ptr(), dtype_name(counts), counts.shape[0], k)
