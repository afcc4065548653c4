"""The native CPU backend: both per-batch ops in C++ (OpenMP + SIMD) through ``summit_fast._C``
(csrc/cpu), called with raw pointers as native_args.py describes."""

from __future__ import annotations

import torch

from .._native import import_error, native
from .base import Backend
from .native_args import activation_args, influence_args


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
    checks_label_values = True  # bind_args.cpp checks them before releasing the GIL

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
        _keep, args = activation_args(acts, labels, counts, rule, excluded, maxima)
        native.cpu_activation_update(*args)

    def _activation_update_maxima(self, acts, labels, counts, rule, excluded, maxima):
        self._activation_update(acts, labels, counts, rule, excluded, maxima)  # fused: one pass

    def _influence_update(self, x, weight, conv, labels, counts, k, spatial_stride):
        _require_cpu(x, weight, counts)
        _keep, args = influence_args(x, weight, conv, labels, counts, k, spatial_stride)
        self.last_influence_stats = native.cpu_influence_update(*args, self.prune)
