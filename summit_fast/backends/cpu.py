"""The native CPU backend: both per-batch ops in C++ (OpenMP + SIMD) through ``summit_fast._C``.

Activations and conv inputs are passed as raw pointers with their element strides and dtype,
so NCHW and channels_last tensors in float32/float16/bfloat16/float64 are read in place (the
conversion happens in the kernel). Only small tensors are normalised here: labels (int64),
the excluded mask and the conv weight (contiguous float32, or float64 when either the input
or the weight is float64, so that nothing is rounded).
"""

from __future__ import annotations

import torch

from .._native import import_error, native
from ..rules import Mass, TopK
from .base import Backend


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _require_cpu(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.device.type != "cpu":
            raise ValueError(f"the cpu backend runs on CPU tensors; got a tensor on {t.device}")


class CpuBackend(Backend):
    """C++ kernels with OpenMP threads; the default for CPU tensors when the extension is built.

    prune: kxk influence skips the scores L[b, j, i] that an exact upper bound shows cannot
    reach a target's top k (the counts are the same; False computes every score, for tests and
    benchmarks). After each influence update, ``last_influence_stats`` is (scores computed,
    B * C_out * C_in/groups scores in all).
    """

    name = "cpu"
    influence_count_dtypes = (torch.int32, torch.int16)
    checks_label_values = True  # cpu_ops.cpp checks them before releasing the GIL

    def __init__(self, prune: bool = True):
        self.prune = bool(prune)
        self.last_influence_stats: tuple[int, int] | None = None

    @classmethod
    def unavailable_reason(cls, device: torch.device) -> str | None:
        device = torch.device(device)
        if device.type != "cpu":
            return f"the cpu backend runs on CPU tensors; got {device}"
        if native is None:
            return import_error
        if not hasattr(native, "cpu_activation_update"):
            return "summit_fast._C was built without the CPU ops; reinstall the package with pip"
        return None

    def _activation_update(self, acts, labels, counts, rule, excluded, maxima=None):
        _require_cpu(acts, counts)
        if acts.shape[2] * acts.shape[3] == 0:
            raise ValueError(f"activations have an empty spatial grid: shape {tuple(acts.shape)}")
        if isinstance(rule, Mass):
            kind, tau, k = "mass", float(rule.tau), 0
        elif isinstance(rule, TopK):
            kind, tau, k = "topk", 0.0, int(rule.k)
        else:
            raise TypeError(f"rule must be summit_fast.mass(...) or summit_fast.topk(...), got {rule!r}")
        if labels.dtype != torch.int64 or not labels.is_contiguous():  # usually neither: no copies
            labels = labels.to(torch.int64).contiguous()
        excluded = None if excluded is None else excluded.contiguous()
        native.cpu_activation_update(
            acts.data_ptr(), _dtype_name(acts), tuple(acts.shape), tuple(acts.stride()),
            labels.data_ptr(), counts.data_ptr(), counts.shape[0], kind, tau, k,
            0 if excluded is None else excluded.data_ptr(),
            *((0, 0) if maxima is None else (maxima[0].data_ptr(), maxima[1].data_ptr())))

    def _activation_update_maxima(self, acts, labels, counts, rule, excluded, maxima):
        self._activation_update(acts, labels, counts, rule, excluded, maxima)  # fused: one pass

    def _influence_update(self, x, weight, conv, labels, counts, k, spatial_stride):
        _require_cpu(x, weight, counts)
        if x.shape[2] * x.shape[3] == 0:
            raise ValueError(f"conv input has an empty spatial grid: shape {tuple(x.shape)}")
        wide = torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32
        weight = weight.to(wide).contiguous()
        labels = labels.to(torch.int64).contiguous()
        self.last_influence_stats = native.cpu_influence_update(
            x.data_ptr(), _dtype_name(x), tuple(x.shape), tuple(x.stride()),
            weight.data_ptr(), _dtype_name(weight), tuple(weight.shape),
            tuple(conv.stride), tuple(conv.pad), tuple(conv.dilation), conv.groups, conv.padding_mode,
            spatial_stride, labels.data_ptr(), counts.data_ptr(), _dtype_name(counts), counts.shape[0], k, self.prune)
