"""The Triton backend: fused GPU kernels from ``summit_fast.kernels`` (see activation.py
and influence.py there).

Runs on CUDA tensors, and on CPU tensors through the Triton interpreter
(``TRITON_INTERPRET=1``, how the tests run without a GPU). Triton is imported lazily, so the
package imports without it.

The kernels compute in float32 (half inputs exactly so). SPEC.md keeps float64 exact, so an op
whose input or weight is float64 runs the torch reference in float64 instead, on the same
device (:data:`FLOAT64_NOTE`, which ``summit-fast info`` prints).
"""

from __future__ import annotations

import contextlib
import os

import torch

from ..rules import Mass, TopK
from .base import Backend
from .torch_ref import TorchBackend

FLOAT64_NOTE = ("an op with a float64 input or weight runs the torch backend in float64 on the same device "
                "(exact; the kernels compute in float32)")
_FLOAT64 = TorchBackend(compute_dtype=torch.float64)


def _on_device(device: torch.device):
    """Triton launches on the current CUDA device: make it the tensors' device."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


class TritonBackend(Backend):
    """Triton kernels: one pass over the activations per summary layer, and a fused influence
    update per conv edge (never a B*C_out*C_in*H*W tensor)."""

    name = "triton"

    @classmethod
    def unavailable_reason(cls, device: torch.device) -> str | None:
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed: pip install triton"
        if device.type == "cuda":
            return None
        if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
            return None
        return f"triton needs a CUDA device; got {device.type}"

    def _activation_update(self, acts, labels, counts, rule, excluded):
        if acts.dtype == torch.float64:
            _FLOAT64._activation_update(acts, labels, counts, rule, excluded)
            return
        from ..kernels.activation import activation_update

        if isinstance(rule, Mass):
            options = {"tau": rule.tau}
        elif isinstance(rule, TopK):
            options = {"topk": rule.k}
        else:
            raise TypeError(f"rule must be summit_fast.mass(...) or summit_fast.topk(...), got {rule!r}")
        with _on_device(acts.device):
            activation_update(acts, labels, counts, excluded=excluded, **options)

    def _influence_update(self, x, weight, conv, labels, counts, k, spatial_stride):
        if torch.float64 in (x.dtype, weight.dtype):
            _FLOAT64._influence_update(x, weight, conv, labels, counts, k, spatial_stride)
            return
        from ..kernels.influence import influence_update

        with _on_device(x.device):
            influence_update(x, weight, conv, labels, counts, k, spatial_stride)
