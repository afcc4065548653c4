"""Triton activation update (SPEC.md A) in one pass over the activations.

One launch, grid (channel blocks, images). Each program reduces the spatial max of a block of
channels of one image in registers and writes it to a small (B, C) float32 buffer. The last
program of an image to finish (a per-image completion counter) then selects that image's
channels -- mass rule or top-k -- and adds them to the int32 counts with atomics. So the
activations are read exactly once and only B*C floats travel besides them.

The mass rule sorts the image's C values once (C up to a few thousand fits one program): each
channel becomes a unique int64 key (value bits, then the inverted channel index), so one
descending sort gives the order of SPEC.md A (ties by ascending channel), and the selected
channels are exactly those whose key is >= the last kept key. Top-k needs no sort: k rounds of
(max, lowest channel holding it), shared with the influence kernels.
"""

import torch
import triton
import triton.language as tl

from . import common
from .common import aligned, count_top, reduction_args, spatial_extrema

# Kept across calls: completion counters per (device, stream), zeroed once and reset to 0 by
# the kernel itself; tau per device as a float64 scalar (exact, and a runtime value, so a new
# tau compiles nothing).
_done_counters: dict = {}
_tau_scalars: dict = {}


@triton.jit
def _mass_key(q, idx):
    """int64 keys, all distinct, whose descending order is q (>= +0.0) descending, ties by
    ascending idx: a non-negative float's bits order like the float."""
    return (q.to(tl.int32, bitcast=True).to(tl.int64) << 32) + (2147483647 - idx).to(tl.int64)


# Sizes unspecialised, strides and FLAT_POS/ALIGN compile-time: see common.reduction_args.
@triton.jit(do_not_specialize=["C", "n_pos", "n_w", "n_top"])
def _activation_kernel(x_ptr, labels_ptr, counts_ptr, excluded_ptr, z_ptr, done_ptr, tau_ptr,
                       C, n_pos, n_w, s_b, s_c, s_y, s_x, n_top,
                       HAS_EXCLUDED: tl.constexpr, MASS: tl.constexpr, FLAT_POS: tl.constexpr,
                       ALIGN: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
                       BLOCK_ALL: tl.constexpr):
    C = aligned(C, ALIGN)
    b = tl.program_id(1)
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    z, _ = spatial_extrema(x_ptr, b, offs_c, mask_c, s_b, s_c, n_pos, n_w, s_y, s_x,
                           BLOCK_C, BLOCK_P, False, FLAT_POS, ALIGN)
    if HAS_EXCLUDED:
        z = tl.where(tl.load(excluded_ptr + offs_c, mask=mask_c, other=0) != 0, 0.0, z)
    z_row = z_ptr + b.to(tl.int64) * C
    tl.store(z_row + offs_c, z, mask=mask_c)

    # Every thread's z store precedes the release of the count; the last program's acquire
    # then sees all of them (the classic "last block" pattern).
    tl.debug_barrier()
    if tl.atomic_add(done_ptr + b, 1, sem="acq_rel", scope="gpu") == tl.num_programs(0) - 1:
        tl.store(done_ptr + b, 0)  # ready for the next launch
        offs = tl.arange(0, BLOCK_ALL)
        valid = offs < C
        z_all = tl.load(z_row + offs, mask=valid, other=0.0, cache_modifier=".cg")  # L2, not a stale L1
        label = tl.load(labels_ptr + b).to(tl.int64)
        if MASS:
            # Padding loads q = 0 and sorts after every channel (higher index).
            key = _mass_key(tl.where(z_all > 0, z_all, 0.0), offs)
            ordered = tl.sort(key, descending=True)
            q = (ordered >> 32).to(tl.int32).to(tl.float32, bitcast=True).to(tl.float64)
            before = tl.cumsum(q, axis=0) - q
            # q > 0: a zero channel is never needed to reach tau * T (and T = 0 selects nothing).
            keep = (before < tl.load(tau_ptr) * tl.sum(q, axis=0)) & (q > 0)
            last_kept = tl.min(tl.where(keep, ordered, 9223372036854775807), axis=0)
            tl.atomic_add(counts_ptr + label * C + offs, 1, mask=valid & (key >= last_kept), sem="relaxed")
        else:
            one = tl.arange(0, 1)
            count_top(z_all[None, :], one == 0, offs, C, n_top, counts_ptr + label * C + one)


def _done_counter(device: torch.device, n: int) -> torch.Tensor:
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    buf = _done_counters.get((device, stream))
    if buf is None or buf.numel() < n:
        buf = _done_counters[(device, stream)] = torch.zeros(max(n, 256), dtype=torch.int32, device=device)
    return buf


def _tau_scalar(device: torch.device, tau: float) -> torch.Tensor:
    if (device, tau) not in _tau_scalars:
        _tau_scalars[(device, tau)] = torch.full((1,), tau, dtype=torch.float64, device=device)
    return _tau_scalars[(device, tau)]


def activation_update(acts: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor, *,
                      tau: float | None = None, topk: int | None = None,
                      excluded: torch.Tensor | None = None) -> None:
    """counts[labels[b], c] += 1 for the channels image b selects: the mass rule with ``tau``,
    or the ``topk`` largest. acts (B, C, H, W) in any strides (NCHW and channels_last read in
    place); counts (K, C) int32, contiguous; excluded an optional (C,) bool mask."""
    if (tau is None) == (topk is None):
        raise ValueError("give exactly one of tau (mass rule) or topk")
    b, c = acts.shape[:2]
    reduction = reduction_args(acts)
    z = torch.empty((b, c), dtype=torch.float32, device=acts.device)
    _activation_kernel[(triton.cdiv(c, reduction["BLOCK_C"]), b)](
        acts, labels.contiguous(), counts, z if excluded is None else excluded.contiguous().view(torch.uint8), z,
        _done_counter(acts.device, b), z if tau is None else _tau_scalar(acts.device, float(tau)),
        n_top=min(topk or 0, c), HAS_EXCLUDED=excluded is not None, MASS=tau is not None,
        BLOCK_ALL=max(16, triton.next_power_of_2(c)), num_warps=common.TILES.num_warps, **reduction)
