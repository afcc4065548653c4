"""The Triton backend: fused GPU kernels from ``summit_fast.kernels`` (see activation.py
and influence.py there).

Runs on CUDA tensors, and on CPU tensors through the Triton interpreter
(``TRITON_INTERPRET=1``, how the tests run without a GPU). Triton is imported lazily, so the
package imports without it.
"""

from __future__ import annotations

import contextlib
import os

import torch

from ..rules import Mass, TopK
from .base import Backend


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
        from ..kernels.influence import influence_update

        with _on_device(x.device):
            influence_update(x, weight, conv, labels, counts, k, spatial_stride)
