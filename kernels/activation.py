"""Triton activation update (SPEC.md A) in one pass over the activations.

One launch, grid (programs per image, images). Each program walks a run of channel blocks of
one image, reduces each block's spatial max in registers and writes it to a small (B, C)
float32 buffer; then one barrier. An image split over several programs has a completion
counter: the last of its programs to finish (one acquire-release atomic per program, not per
block) selects the image's channels -- mass rule or top-k -- and adds them to the int32 counts
with atomics; an image with a single program selects without it. So the activations are read
exactly once and only B*C floats travel besides them. Programs per image: enough to fill the
GPU a few times over (``_grid``), and no more, so that large batches use one program per image.

Selection compares unique int64 keys, one per channel (value bits in an order-preserving form,
then the inverted channel index): their descending order is SPEC.md A's order (value
descending, ties by ascending channel), and the selected channels are exactly those whose key
is >= the last selected key. That key is found by extracting maxima one at a time while few
channels are needed -- the mass rule at tau = 0.01 selects a handful, top-k a small k -- and
by one sort of the image's keys only when more than _EXTRACT_ROUNDS are needed.
"""

import functools

import torch
import triton
import triton.language as tl

from . import common
from .common import aligned, reduction_args, spatial_extrema

# Kept across calls: completion counters per (device, stream), zeroed once and reset to 0 by
# the kernel itself; tau per device as a float64 scalar (exact, and a runtime value, so a new
# tau compiles nothing).
_done_counters: dict = {}
_tau_scalars: dict = {}

# Maxima extracted one at a time before the selection falls back to sorting the keys: each
# round is one reduction over the image's channels, a sort of 1,024 keys about 55 exchange steps.
_EXTRACT_ROUNDS = tl.constexpr(16)
# Keys: every channel's lies strictly between these two (see _order_key).
_BELOW_ALL = tl.constexpr(-9223372036854775807)
_ABOVE_ALL = tl.constexpr(9223372036854775807)
# Programs per streaming multiprocessor that a launch aims at (untuned; counts never depend on it).
_PROGRAMS_PER_SM = 8


@triton.jit
def _order_key(z, idx):
    """int64 keys, all distinct, whose descending order is z descending, ties by ascending idx
    (-0.0 counts as +0.0). A float's bits order like the float once the negative ones have their
    magnitude bits flipped; the low 32 bits hold 2^31 - 1 - idx."""
    bits = tl.where(z == 0.0, 0.0, z).to(tl.int32, bitcast=True)
    bits = tl.where(bits < 0, bits ^ 2147483647, bits)
    return (bits.to(tl.int64) << 32) + (2147483647 - idx).to(tl.int64)


@triton.jit
def _key_value(key):
    """The float64 value of a non-negative float's key (the inverse of _order_key for z >= 0)."""
    return (key >> 32).to(tl.int32).to(tl.float32, bitcast=True).to(tl.float64)


@triton.jit
def _sorted_keys(key):
    """The keys in descending order: the one sort of both rules (the tests count its calls)."""
    return tl.sort(key, descending=True)


@triton.jit
def _mass_last_key(key, limit):
    """The smallest key the mass rule selects (those above it are selected too), or _ABOVE_ALL
    when nothing is. key: the keys of q = max(z, 0); limit: tau * T (0 when T = 0)."""
    last = tl.full((), _ABOVE_ALL, tl.int64)
    before = tl.zeros((), tl.float64)  # the sum of q over the channels selected so far
    rest = key
    more = before < limit
    rounds = 0
    while more & (rounds < _EXTRACT_ROUNDS):
        best = tl.max(rest, axis=0)
        q = _key_value(best)
        # q > 0: a zero channel is never needed to reach tau * T.
        taken = q > 0
        last = tl.where(taken, best, last)
        before += q
        rest = tl.where(rest == best, _BELOW_ALL, rest)
        rounds += 1
        more = taken & (before < limit)
    if more:  # more channels needed than rounds allowed: one sort
        ordered = _sorted_keys(key)
        q = _key_value(ordered)
        keep = (tl.cumsum(q, axis=0) - q < limit) & (q > 0)
        last = tl.min(tl.where(keep, ordered, _ABOVE_ALL), axis=0)
    return last


@triton.jit
def _top_last_key(key, offs, n_top):
    """The n_top-th largest key (n_top >= 1): rounds of extraction for a small n_top, else a sort."""
    last = tl.full((), _ABOVE_ALL, tl.int64)
    if n_top <= _EXTRACT_ROUNDS:
        rest = key
        for _ in range(n_top):
            last = tl.max(rest, axis=0)
            rest = tl.where(rest == last, _BELOW_ALL, rest)
    else:
        last = tl.min(tl.where(offs < n_top, _sorted_keys(key), _ABOVE_ALL), axis=0)
    return last


# Sizes unspecialised, strides and FLAT_POS/ALIGN compile-time: see common.reduction_args.
@triton.jit(do_not_specialize=["C", "n_pos", "n_w", "n_top", "blocks_per_program"])
def _activation_kernel(x_ptr, labels_ptr, counts_ptr, excluded_ptr, z_ptr, done_ptr, tau_ptr,
                       C, n_pos, n_w, s_b, s_c, s_y, s_x, n_top, blocks_per_program,
                       HAS_EXCLUDED: tl.constexpr, MASS: tl.constexpr, FLAT_POS: tl.constexpr,
                       ALIGN: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
                       BLOCK_ALL: tl.constexpr):
    C = aligned(C, ALIGN)
    b = tl.program_id(1)
    z_row = z_ptr + b.to(tl.int64) * C
    first = tl.program_id(0) * blocks_per_program
    for block in range(first, tl.minimum(first + blocks_per_program, tl.cdiv(C, BLOCK_C))):
        offs_c = block * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        z, _ = spatial_extrema(x_ptr, b, offs_c, mask_c, s_b, s_c, n_pos, n_w, s_y, s_x,
                               BLOCK_C, BLOCK_P, False, FLAT_POS, ALIGN)
        if HAS_EXCLUDED:
            z = tl.where(tl.load(excluded_ptr + offs_c, mask=mask_c, other=0) != 0, 0.0, z)
        tl.store(z_row + offs_c, z, mask=mask_c)

    # Every thread's z stores precede the barrier; with several programs per image they also
    # precede the release of the count, and the last program's acquire then sees all of them
    # (the classic "last block" pattern).
    tl.debug_barrier()
    last = tl.num_programs(0) == 1
    if tl.num_programs(0) > 1:
        last = tl.atomic_add(done_ptr + b, 1, sem="acq_rel", scope="gpu") == tl.num_programs(0) - 1
    if last:
        if tl.num_programs(0) > 1:
            tl.store(done_ptr + b, 0)  # ready for the next launch
        offs = tl.arange(0, BLOCK_ALL)
        valid = offs < C
        z_all = tl.load(z_row + offs, mask=valid, other=0.0, cache_modifier=".cg")  # L2, not a stale L1
        if MASS:
            z_all = tl.where(z_all > 0, z_all, 0.0)  # q of SPEC.md A
        key = tl.where(valid, _order_key(z_all, offs), _BELOW_ALL)
        if MASS:
            last_key = _mass_last_key(key, tl.load(tau_ptr) * tl.sum(z_all.to(tl.float64), axis=0))
        else:
            last_key = _top_last_key(key, offs, n_top)
        label = tl.load(labels_ptr + b).to(tl.int64)
        tl.atomic_add(counts_ptr + label * C + offs, 1, mask=valid & (key >= last_key), sem="relaxed")


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 1 for the interpreter, which runs programs
    one after another (fewer is faster)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _grid(n_blocks: int, batch: int, sm_count: int) -> tuple[int, int]:
    """(channel blocks per program, programs per image): programs enough for _PROGRAMS_PER_SM
    per multiprocessor over the batch, each walking a run of blocks; at least one block each."""
    wanted = min(n_blocks, max(1, triton.cdiv(_PROGRAMS_PER_SM * sm_count, batch)))
    per_program = triton.cdiv(n_blocks, wanted)
    return per_program, triton.cdiv(n_blocks, per_program)


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
    if c == 0:
        return
    reduction = reduction_args(acts)
    per_program, programs = _grid(triton.cdiv(c, reduction["BLOCK_C"]), b, _sm_count(acts.device))
    z = torch.empty((b, c), dtype=torch.float32, device=acts.device)
    _activation_kernel[(programs, b)](
        acts, labels.contiguous(), counts, z if excluded is None else excluded.contiguous().view(torch.uint8), z,
        _done_counter(acts.device, b), z if tau is None else _tau_scalar(acts.device, float(tau)),
        n_top=min(topk or 0, c), blocks_per_program=per_program, HAS_EXCLUDED=excluded is not None,
        MASS=tau is not None, BLOCK_ALL=max(16, triton.next_power_of_2(c)), num_warps=common.TILES.num_warps,
        **reduction)
