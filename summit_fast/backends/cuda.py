"""The CUDA backend: the kernels of csrc/cuda, compiled by nvcc into ``summit_fast._C`` and
launched on the caller's stream (torch's current stream for the tensors' device; inside
:func:`summit_fast.arrays.caller_stream`, for CuPy arrays, CuPy's), with raw device pointers as
native_args.py describes.

``CudaBackend(emulate=True)`` runs the very same kernel sources on the CPU, on CPU tensors
(csrc/cuda/emulation.h: every CUDA thread a fiber, barriers and warp operations exact). It
is how the tests execute the CUDA kernels without a GPU; it is slow, and never chosen by
``auto``.
"""

from __future__ import annotations

import torch

from .._native import import_error, native
from .base import Backend
from .native_args import activation_args, influence_args


class CudaBackend(Backend):
    """CUDA C++ kernels through pybind11: one fused pass per summary layer for the activation
    counts and one fused update per conv edge for influence.

    prune: kxk influence skips the scores L[b, j, i] that an exact upper bound shows cannot
    reach a target's top k, as the cpu backend does (the same counts), per tile of targets. Off
    by default: it adds launches and a host synchronisation per call (for its statistics), and
    no GPU has measured whether it pays yet. emulate: see the module's docstring. After each
    influence update, ``last_influence_stats`` is (scores computed, B * C_out * C_in/groups
    scores in all), as for the cpu backend."""

    name = "cuda"
    influence_count_dtypes = (torch.int32, torch.int16)  # the influence kernels add to int16 counts in place

    def __init__(self, emulate: bool = False, prune: bool = False):
        self.emulate = bool(emulate)
        self.prune = bool(prune)
        self.last_influence_stats: tuple[int, int] | None = None

    @classmethod
    def unavailable_reason(cls, device: torch.device) -> str | None:
        device = torch.device(device)
        if native is None:
            return import_error
        if device.type != "cuda":
            return f"the cuda backend runs on CUDA tensors; got {device.type}"
        if not native.with_cuda:
            return ("summit_fast._C was built without CUDA (no nvcc was found, or SUMMIT_CUDA=OFF); "
                    "reinstall with a CUDA toolkit on PATH")
        if not native.cuda_available():
            return native.cuda_status()
        return None

    def _ops(self, *tensors: torch.Tensor):
        """The native functions to call and the stream argument, for tensors on one device."""
        device = tensors[0].device
        for t in tensors:
            if t.device != device:
                raise ValueError(f"the cuda backend needs all tensors on one device; got {device} and {t.device}")
        if self.emulate:
            if device.type != "cpu":
                raise ValueError(f"CudaBackend(emulate=True) runs the CUDA kernels on CPU tensors; got {device}")
            return native.cuda_emulated_activation_update, native.cuda_emulated_influence_update, 0
        if device.type != "cuda":
            raise ValueError(f"the cuda backend runs on CUDA tensors; got a tensor on {device}")
        return (native.cuda_activation_update, native.cuda_influence_update,
                torch.cuda.current_stream(device).cuda_stream)

    def _activation_update(self, acts, labels, counts, rule, excluded, maxima=None):
        activation, _, stream = self._ops(acts, counts)
        _keep, args = activation_args(acts, labels, counts, rule, excluded, maxima)
        activation(*args, stream=stream)

    def _activation_update_maxima(self, acts, labels, counts, rule, excluded, maxima):
        self._activation_update(acts, labels, counts, rule, excluded, maxima)  # fused: one pass

    def _influence_update(self, x, weight, conv, labels, counts, k, spatial_stride):
        _, influence, stream = self._ops(x, weight, counts)
        _keep, args = influence_args(x, weight, conv, labels, counts, k, spatial_stride)
        self.last_influence_stats = influence(*args, prune=self.prune, stream=stream)
