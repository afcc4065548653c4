"""Triton influence update (SPEC.md B): per conv edge, the top-k sources of every target.

Nothing of size B*C_out*C_in*H*W exists at any point:

- 1x1 convs use the exact shortcut. One kernel reduces the per-channel max and min over the
  sampled input positions (B*2*C_in floats); a second scores each target's sources as
  ``W * max`` (W >= 0) or ``W * min`` and counts the top k.
- kxk convs (``_conv_kernel``): one program per (image, block of targets of one group) walks
  the group's source channels; per source, ``M = W (targets x K) @ patches (K x positions)``
  over tiles of positions (targets on the MMA rows), keeping a running max; each source's
  maxima go to a (B, C_out, C_in/groups) float32 buffer, and ``_count_kernel`` counts the top
  k. K holds the taps (padded to 16 with zero weights); the patch's addresses are a position
  table (built in torch: no division in the kernel) plus the tap offsets, computed once.
  Zero padding is applied once in torch, and tiles past the last position repeat it, so no
  load is masked. Products run on tensor cores only where they are exact: half inputs with
  half weights; half inputs with fp32 weights (autocast) as exact half pieces of the weights
  (:func:`split_weights`; fp16 rows scaled by a power of two; rows with no exact split are
  scored in fp32 by ``_exact_rows_kernel``); fp32 inputs in IEEE fp32 (FMA, no TF32). Few
  targets per group (depthwise) take a rank-1 update per tap instead of ``tl.dot``.
- Exact bound pruning (kxk, ``prune=True``): ``_select_kernel`` bounds every score from the
  per-channel extrema of the input region the taps read (``_extrema_kernel``), marks per block
  the sources some target needs (round 1: each target's k best bounds; round 2: every source
  whose bound reaches a target's k-th exact score), and ``_conv_kernel`` scores only those.

Padding modes other than "zeros" are applied once in torch (an input-sized copy,
B*C_in*H*W), as is zero padding for kxk convs; the kernels then see an unpadded input.
"""

import weakref

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from . import common
from .common import aligned, count_top, reduction_args, spatial_extrema


# Sizes unspecialised, strides and FLAT_POS/ALIGN compile-time: see common.reduction_args.
@triton.jit(do_not_specialize=["C", "n_pos", "n_w"])
def _extrema_kernel(x_ptr, ext_ptr, C, n_pos, n_w, s_b, s_c, s_y, s_x, PAD_SAMPLED: tl.constexpr,
                    FLAT_POS: tl.constexpr, ALIGN: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """ext[b, 0, c] = max, ext[b, 1, c] = min of x[b, c] over the in-bounds sampled positions."""
    C = aligned(C, ALIGN)
    b = tl.program_id(1)
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    hi, lo = spatial_extrema(x_ptr, b, offs_c, mask_c, s_b, s_c, n_pos, n_w, s_y, s_x,
                             BLOCK_C, BLOCK_P, True, FLAT_POS, ALIGN)
    if PAD_SAMPLED:  # some sampled position lies in the zero padding: it contributes 0
        hi = tl.maximum(hi, 0.0)
        lo = tl.minimum(lo, 0.0)
    out = ext_ptr + b.to(tl.int64) * 2 * C + offs_c
    tl.store(out, hi, mask=mask_c)
    tl.store(out + C, lo, mask=mask_c)


@triton.jit(do_not_specialize=["C_in", "C_out", "cin_g", "cout_g", "n_take"])
def _pointwise_kernel(ext_ptr, w_ptr, labels_ptr, counts_ptr, C_in, C_out, cin_g, cout_g,
                      s_wo, s_wi, n_take, BLOCK_J: tl.constexpr, BLOCK_S: tl.constexpr):
    """1x1 convs: score the sources of BLOCK_J targets (any groups) and count the top n_take."""
    pid_j = tl.program_id(0)
    b = tl.program_id(1)
    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    mask_j = offs_j < C_out
    offs_s = tl.arange(0, BLOCK_S)
    m = mask_j[:, None] & (offs_s < cin_g)[None, :]
    src0 = (offs_j // cout_g) * cin_g  # first source channel of each target's group
    w = tl.load(w_ptr + offs_j[:, None] * s_wo + offs_s[None, :] * s_wi, mask=m, other=0.0).to(tl.float32)
    ext = ext_ptr + b.to(tl.int64) * 2 * C_in + src0[:, None] + offs_s[None, :]
    hi = tl.load(ext, mask=m, other=0.0)
    lo = tl.load(ext + C_in, mask=m, other=0.0)
    # Rounding is monotone, so max over positions of w*x is w*max(x) for w >= 0, w*min(x) else.
    scores = tl.where(w >= 0, w * hi, w * lo)
    label = tl.load(labels_ptr + b).to(tl.int64)
    count_top(scores, mask_j, offs_s, cin_g, n_take, counts_ptr + (label * C_out + offs_j) * cin_g)


@triton.jit(do_not_specialize=["C_out", "cin_g", "cout_g", "n_pos_pad", "n_blocks"])
def _conv_kernel(x_ptr, w_ptr, unscale_ptr, pos_ptr, need_ptr, scores_ptr, C_out, cin_g, cout_g, n_pos_pad,
                 n_blocks, s_b, s_c, tap_h, tap_w, KW: tl.constexpr, T: tl.constexpr, DOT_DTYPE: tl.constexpr,
                 USE_DOT: tl.constexpr, SEPARATE: tl.constexpr, SCALED: tl.constexpr, PRUNE: tl.constexpr,
                 BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_J: tl.constexpr):
    """kxk convs: scores[b, j, s] = max over positions of M (SPEC.md B) for BLOCK_J targets j of
    one group (the MMA rows) and every source s of the group (if PRUNE: those need[b, block, s]
    marks). Sources outer, position tiles (the MMA columns) inner, with a running max.

    No load is masked: every tap of a real output position reads a real element of x (zero
    padding was applied in torch). pos[p] is the offset of output position p's
    first tap (positions past the last repeat it: a max ignores repeats); the tap offsets are
    computed once. Weights come as prepared by :func:`_weight_operand`: (C_out, cin_g, SEPARATE,
    BLOCK_K), row r of the K axis is tap r % T (rows past the pieces are zero); SEPARATE = 3
    pieces are three products accumulated in turn, on the same patch."""
    blk = tl.program_id(0)
    b = tl.program_id(1)
    n_jblk = tl.cdiv(cout_g, BLOCK_J)
    g = blk // n_jblk
    local_j = (blk % n_jblk) * BLOCK_J + tl.arange(0, BLOCK_J)
    mask_j = local_j < cout_g
    offs_j = g * cout_g + local_j
    x_b = x_ptr + b.to(tl.int64) * s_b + (g * cin_g).to(tl.int64) * s_c
    w_rows = w_ptr + offs_j.to(tl.int64) * cin_g * (SEPARATE * BLOCK_K)
    offs_k = tl.arange(0, BLOCK_K)
    tap = offs_k % T
    tap_off = (tap // KW) * tap_h + (tap % KW) * tap_w  # once: the source loop only adds a base
    offs_p = tl.arange(0, BLOCK_P)
    out = scores_ptr + (b.to(tl.int64) * C_out + offs_j) * cin_g
    need = need_ptr + (b.to(tl.int64) * n_blocks + blk) * cin_g
    for s in range(0, cin_g):
        todo = True
        if PRUNE:
            todo = tl.load(need + s) != 0
        if todo:
            x_s = x_b + s * s_c
            run = tl.full([BLOCK_J, BLOCK_P], float("-inf"), tl.float32)
            if USE_DOT:
                w_s = w_rows[:, None] + s * (SEPARATE * BLOCK_K) + offs_k[None, :]
                w0 = tl.load(w_s, mask=mask_j[:, None], other=0.0)
                if SEPARATE == 3:
                    w1 = tl.load(w_s + BLOCK_K, mask=mask_j[:, None], other=0.0)
                    w2 = tl.load(w_s + 2 * BLOCK_K, mask=mask_j[:, None], other=0.0)
                for p0 in range(0, n_pos_pad, BLOCK_P):
                    pos = tl.load(pos_ptr + p0 + offs_p)
                    patch = tl.load(x_s + tap_off[:, None] + pos[None, :]).to(DOT_DTYPE)
                    # The weight's pieces are stacked on K (one product, one wait) or three
                    # products accumulated in turn into one accumulator.
                    m = tl.dot(w0, patch, input_precision="ieee")  # fp32: no TF32
                    if SEPARATE == 3:
                        m = tl.dot(w1, patch, acc=m)
                        m = tl.dot(w2, patch, acc=m)
                    run = tl.maximum(run, m)
            else:  # fewer than 9 targets (depthwise): one rank-1 update per tap, in float32
                for p0 in range(0, n_pos_pad, BLOCK_P):
                    pos = tl.load(pos_ptr + p0 + offs_p)
                    m = tl.zeros([BLOCK_J, BLOCK_P], tl.float32)
                    for t in tl.static_range(T):
                        wv = tl.load(w_rows + s * BLOCK_K + t, mask=mask_j, other=0.0)
                        xv = tl.load(x_s + ((t // KW) * tap_h + (t % KW) * tap_w) + pos).to(tl.float32)
                        m += wv[:, None] * xv[None, :]
                    run = tl.maximum(run, m)
            best = tl.max(run, axis=1)
            if SCALED:  # the weights were scaled by a power of two per (target, source): exact
                best = best * tl.load(unscale_ptr + offs_j * cin_g + s, mask=mask_j, other=1.0)
            tl.store(out + s, best, mask=mask_j)


@triton.jit(do_not_specialize=["C_out", "cin_g", "cout_g", "n_pos_pad", "n_blocks"])
def _exact_rows_kernel(x_ptr, w_ptr, pairs_ptr, pos_ptr, need_ptr, scores_ptr, C_out, cin_g, cout_g, n_pos_pad,
                       n_blocks, s_b, s_c, tap_h, tap_w, KW: tl.constexpr, T: tl.constexpr, PRUNE: tl.constexpr,
                       BLOCK_J: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_T: tl.constexpr):
    """scores[b, j, s] in float32 for the (target j, source s) pairs whose weights have no exact
    half split (see :func:`split_weights`), replacing what _conv_kernel stored for them; the
    arguments are _conv_kernel's, BLOCK_J its block of targets. w: the pairs' taps (n, T)."""
    pair = tl.program_id(0)
    b = tl.program_id(1)
    j = tl.load(pairs_ptr + 2 * pair)
    s = tl.load(pairs_ptr + 2 * pair + 1)
    g = j // cout_g
    todo = True
    if PRUNE:
        blk = g * tl.cdiv(cout_g, BLOCK_J) + (j % cout_g) // BLOCK_J
        todo = tl.load(need_ptr + (b.to(tl.int64) * n_blocks + blk) * cin_g + s) != 0
    if todo:
        offs_t = tl.arange(0, BLOCK_T)
        mask_t = offs_t < T
        tap_off = (offs_t // KW) * tap_h + (offs_t % KW) * tap_w
        w = tl.load(w_ptr + pair * T + offs_t, mask=mask_t, other=0.0)
        x_s = x_ptr + b.to(tl.int64) * s_b + (g * cin_g + s).to(tl.int64) * s_c
        run = tl.full([BLOCK_P], float("-inf"), tl.float32)
        for p0 in range(0, n_pos_pad, BLOCK_P):
            pos = tl.load(pos_ptr + p0 + tl.arange(0, BLOCK_P))
            patch = tl.load(x_s + tap_off[:, None] + pos[None, :], mask=mask_t[:, None], other=0.0).to(tl.float32)
            run = tl.maximum(run, tl.sum(w[:, None] * patch, axis=0))
        tl.store(scores_ptr + (b.to(tl.int64) * C_out + j) * cin_g + s, tl.max(run, axis=0))


@triton.jit(do_not_specialize=["C_in", "C_out", "cin_g", "cout_g", "n_blocks", "n_take"])
def _select_kernel(ext_ptr, coef_ptr, scores_ptr, done_ptr, need_ptr, C_in, C_out, cin_g, cout_g, n_blocks,
                   n_take, ROUND: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_R: tl.constexpr,
                   BLOCK_S: tl.constexpr):
    """Which sources _conv_kernel's block (BLOCK_J targets) must score for image b (bound pruning).

    Bound: every value a tap reads lies in [lo_s, hi_s] (the extrema of the region the grid
    reads), so M <= hi * Pos + lo * Neg, Pos (Neg) the sum of W[j, s]'s positive (negative)
    taps; coef also holds the margin terms of :func:`_bound_coefficients`, which cover every
    rounding of the computed scores and of this bound; a bound that could overflow is +inf.
    Round 1 marks each target's n_take best sources by bound. Round 2 marks, for each target,
    every source not yet scored whose bound is not below the target's n_take-th best score (a
    tie may still win on a lower index). A source is needed if any target of the block needs it.
    Unscored sources then score below n_take scored ones: the top n_take are unchanged."""
    blk = tl.program_id(0)
    b = tl.program_id(1)
    n_jblk = tl.cdiv(cout_g, BLOCK_J)
    g = blk // n_jblk
    offs_s = tl.arange(0, BLOCK_S)
    mask_s = offs_s < cin_g
    ext = ext_ptr + b.to(tl.int64) * 2 * C_in + g * cin_g + offs_s
    hi = tl.load(ext, mask=mask_s, other=0.0)
    lo = tl.load(ext + C_in, mask=mask_s, other=0.0)
    amax = tl.maximum(tl.abs(hi), tl.abs(lo))
    row = (b.to(tl.int64) * n_blocks + blk) * cin_g
    if ROUND == 2:
        done = tl.load(done_ptr + row + offs_s, mask=mask_s, other=1) != 0
    needed = tl.zeros([BLOCK_S], tl.int32)
    for r0 in range(0, BLOCK_J, BLOCK_R):
        local_j = (blk % n_jblk) * BLOCK_J + r0 + tl.arange(0, BLOCK_R)
        offs_j = g * cout_g + local_j
        m = (local_j < cout_g)[:, None] & mask_s[None, :]
        coef = coef_ptr + offs_j[:, None] * cin_g + offs_s[None, :]
        pos = tl.load(coef, mask=m, other=0.0)
        neg = tl.load(coef + C_out * cin_g, mask=m, other=0.0)
        rel = tl.load(coef + 2 * C_out * cin_g, mask=m, other=0.0)
        eta = tl.load(coef + 3 * C_out * cin_g, mask=m, other=0.0)
        margin = rel * amax[None, :]
        bound = hi[None, :] * pos + lo[None, :] * neg + (margin + eta)
        # margin = rel * A with rel > 1e-7: margin < 3e31 keeps A below max(float32) / 4, so that
        # neither this bound nor a score overflows. Beyond (huge weights or extrema, inf, NaN): +inf.
        bound = tl.where(margin < 3.0e31, bound, float("inf"))
        avail = m
        if ROUND == 1:
            key = bound
        else:
            key = tl.load(scores_ptr + (b.to(tl.int64) * C_out + offs_j[:, None]) * cin_g + offs_s[None, :],
                          mask=m, other=float("-inf"))
            nan_row = tl.max(tl.where(m & (key != key), 1, 0), axis=1) > 0
            key = tl.where(key != key, float("-inf"), key)
        take = tl.zeros([BLOCK_R, BLOCK_S], tl.int1)
        kth = tl.full([BLOCK_R], float("inf"), tl.float32)
        for _ in range(n_take):  # the n_take best of each row, ties by lower source
            kth = tl.max(tl.where(avail, key, float("-inf")), axis=1)
            pick = tl.min(tl.where(avail & (key == kth[:, None]), offs_s[None, :], BLOCK_S), axis=1)
            take = take | (offs_s[None, :] == pick[:, None])
            avail = avail & (offs_s[None, :] != pick[:, None])
        if ROUND == 2:
            kth = tl.where(nan_row, float("-inf"), kth)  # NaN scores: score every source
            take = m & (bound >= kth[:, None]) & ~done[None, :]
        needed = tl.maximum(needed, tl.max(take.to(tl.int32), axis=0))
    tl.store(need_ptr + row + offs_s, needed, mask=mask_s)


@triton.jit(do_not_specialize=["C_out", "cin_g", "n_take"])
def _count_kernel(scores_ptr, labels_ptr, counts_ptr, C_out, cin_g, n_take, BLOCK_J: tl.constexpr,
                  BLOCK_S: tl.constexpr):
    """counts[labels[b], j, s] += 1 for the top n_take of scores[b, j, :] (unscored: -inf)."""
    b = tl.program_id(1)
    offs_j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    mask_j = offs_j < C_out
    offs_s = tl.arange(0, BLOCK_S)
    m = mask_j[:, None] & (offs_s < cin_g)[None, :]
    scores = tl.load(scores_ptr + (b.to(tl.int64) * C_out + offs_j[:, None]) * cin_g + offs_s[None, :],
                     mask=m, other=float("-inf"))
    label = tl.load(labels_ptr + b).to(tl.int64)
    count_top(scores, mask_j, offs_s, cin_g, n_take, counts_ptr + (label * C_out + offs_j) * cin_g)


def _in_bounds(n_out: int, step: int, pad: int, size: int) -> tuple[int, int]:
    """(first input index, count) of the sampled 1x1 positions n*step - pad inside [0, size).
    An empty range starts at 0, so that a view of it keeps a valid data pointer."""
    first = -(-pad // step)
    count = max(0, min(n_out - 1, (size - 1 + pad) // step) - first + 1)
    return (first * step - pad if count else 0), count


_HALF = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def split_weights(w: torch.Tensor, dtype: torch.dtype):
    """Weights w (..., T) as three pieces of ``dtype`` (float16 or bfloat16) whose sum is
    w * 2**e, with one power of two per row of T taps: (pieces (3, ..., T), unscale 2**-e (...)
    float32, exact (...) bool). A row is exact if its pieces sum to w * 2**e exactly and 2**-e
    is a float32; the others (fp16: taps below 2**-15 of the row's largest, whose last bits lie
    below fp16's smallest subnormal 2**-24; non-finite weights) must be computed otherwise.

    For fp16 the scale puts each row's largest tap in [2**14, 2**15): unscaled, the small pieces
    of ordinary weights (N(0, 0.02)) fall below fp16's subnormals and lose bits. bf16 has
    float32's range: e = 0. Half inputs times the pieces are exact in float32, so tensor cores
    then compute float32 sums of exact products, as float32 would from the exact weights."""
    w64 = w.double()
    if dtype == torch.float16:
        _, exponent = torch.frexp(w64.abs().amax(-1, keepdim=True))  # max = m * 2**exponent, m in [0.5, 1)
        scale = torch.ldexp(torch.ones_like(w64[..., :1]), 15 - exponent)
    else:
        scale = torch.ones_like(w64[..., :1])
    scaled = w64 * scale
    hi = scaled.to(dtype)
    rest = scaled - hi.double()
    mid = rest.to(dtype)
    lo = (rest - mid.double()).to(dtype)
    pieces = torch.stack([hi, mid, lo])
    unscale = (1.0 / scale).squeeze(-1).float()
    exact = ((pieces.double().sum(0) == scaled).all(-1) & torch.isfinite(scaled).all(-1)
             & (unscale.double() * scale.squeeze(-1) == 1))
    return pieces, unscale, exact


def _weight_operand(x: torch.Tensor, weight: torch.Tensor, dot: bool):
    """_conv_kernel's weights: (operand (C_out, C_in/groups, SEPARATE * BLOCK_K), unscale or
    None, tl.dot operand type or None for the rank-1 path, products per tap, SEPARATE, the
    (target, source) pairs the split leaves inexact as (pairs (n, 2) int32, their taps (n, T)
    float32) or None).

    With ``dot``, half inputs go to tensor cores with weights of their type, else as the pieces
    of :func:`split_weights`: stacked on K (3x3: 27 rows in 32) or, where that would pad K more
    (5x5: 75 rows in 128), as SEPARATE = 3 blocks of K rows; other inputs in float32 (FMA).
    Without ``dot`` (few targets), the rank-1 path computes in float32."""
    c_out, cin_g, kh, kw = weight.shape
    taps = weight.reshape(c_out, cin_g, 1, kh * kw)
    operand, unscale, dot_dtype, inexact = taps.float(), None, None, None
    if dot and x.dtype in _HALF and weight.dtype == x.dtype:
        operand, dot_dtype = taps, _HALF[x.dtype]
    elif dot and x.dtype in _HALF:
        pieces, unscale, exact = split_weights(taps, x.dtype)
        operand, dot_dtype = torch.cat(tuple(pieces), dim=2), _HALF[x.dtype]
        if triton.next_power_of_2(3 * kh * kw) <= 3 * triton.next_power_of_2(kh * kw):
            operand = operand.reshape(c_out, cin_g, 1, 3 * kh * kw)
        unscale = None if bool((unscale == 1).all()) else unscale.reshape(c_out, cin_g).contiguous()
        if not bool(exact.all()):
            pairs = (~exact.reshape(c_out, cin_g)).nonzero()
            inexact = pairs.to(torch.int32).contiguous(), taps.float()[pairs[:, 0], pairs[:, 1], 0].contiguous()
    elif dot:
        dot_dtype = tl.float32  # float32 (and wider) inputs in IEEE fp32 (FMA), as the reference needs
    separate, rows = operand.shape[2:]
    block_k = triton.next_power_of_2(rows)
    if dot_dtype is not None:
        block_k = max(16, block_k)
    padded = torch.zeros((c_out, cin_g, separate, block_k), dtype=operand.dtype, device=weight.device)
    padded[..., :rows] = operand
    return padded.view(c_out, cin_g, -1), unscale, dot_dtype, separate * rows // (kh * kw), separate, inexact


_PREPARED: dict = {}  # id(weight) -> (weak reference to it, its version, {key: value})


def _prepared(weight: torch.Tensor, key, make):
    """make(), computed once per weight tensor, in-place version and key. A model's weights are
    the same tensors batch after batch, and preparing them (the split and its checks, which
    wait for the GPU) would otherwise run for every batch."""
    entry = _PREPARED.get(id(weight))
    if entry is None or entry[0]() is not weight or entry[1] != weight._version:
        def forget(ref, i=id(weight)):
            if _PREPARED.get(i, (None,))[0] is ref:
                del _PREPARED[i]

        entry = _PREPARED[id(weight)] = (weakref.ref(weight, forget), weight._version, {})
    if key not in entry[2]:
        entry[2][key] = make()
    return entry[2][key]


def _bound_coefficients(weight: torch.Tensor, products: int, unscale) -> torch.Tensor:
    """(4, C_out, C_in/groups) float32 for _select_kernel: per (target, source) the sums of the
    positive and of the negative taps, rel * A's coefficient and eta, where the margin
    rel * A + eta, A = sum |w| * max(|hi|, |lo|), exceeds every rounding error.

    A computed score is a float32 sum of n = taps * products exact or once-rounded products,
    so it is within gamma_n A + n eta of the real sum (u = 2**-24, eta = 2**-126: tensor cores
    and FTZ may flush subnormals; the split's unscaling multiplies that by 2**-e); the bound's
    own float32 arithmetic adds below 8 u A. 4 (n + 3) (u A + eta) covers both with room, even
    if tensor cores round each addition twice as coarsely (as in the CPU backend's pruning)."""
    w = weight.double().flatten(2)
    n = 4.0 * (w.shape[2] * products + 3)
    eta = n * 2.0 ** -126 * (1.0 if unscale is None else unscale.double().clamp(min=1.0))
    coef = torch.stack([w.clamp(min=0).sum(2), w.clamp(max=0).sum(2), n * 2.0 ** -24 * w.abs().sum(2),
                        torch.broadcast_to(torch.as_tensor(eta, dtype=torch.float64, device=w.device), w.shape[:2])])
    return coef.float().contiguous()


def _positions(n_h: int, n_w: int, step_h: int, step_w: int, s_h: int, s_w: int, block_p: int, device):
    """Offsets of the output positions' first taps, row-major, padded to a multiple of block_p by
    repeating the last position (a real one: its M is a real value, so a max ignores it)."""
    rows = torch.arange(n_h, device=device) * (step_h * s_h)
    cols = torch.arange(n_w, device=device) * (step_w * s_w)
    offsets = (rows[:, None] + cols[None, :]).flatten()
    n_pad = triton.cdiv(offsets.numel(), block_p) * block_p
    return torch.cat([offsets, offsets[-1:].expand(n_pad - offsets.numel())]).to(torch.int32)


def _extrema(view: torch.Tensor, pad_sampled: bool) -> torch.Tensor:
    """(B, 2, C) float32: per image and channel of view, its max and min over the positions
    (with 0 if pad_sampled: the positions include zero padding)."""
    reduction = reduction_args(view)
    ext = torch.empty((view.shape[0], 2, view.shape[1]), dtype=torch.float32, device=view.device)
    _extrema_kernel[(triton.cdiv(view.shape[1], reduction["BLOCK_C"]), view.shape[0])](
        view, ext, PAD_SAMPLED=pad_sampled, num_warps=common.TILES.num_warps, **reduction)
    return ext


def influence_update(x: torch.Tensor, weight: torch.Tensor, conv, labels: torch.Tensor,
                     counts: torch.Tensor, k: int, spatial_stride: int, prune: bool = True,
                     stats: bool = False):
    """counts[labels[b], j, s] += 1 for the top-k sources s of every target j (SPEC.md B); s
    indexes j's group (source channel group(j) * C_in/groups + s).

    x (B, C_in, H, W) and weight (C_out, C_in/groups, kh, kw) in any strides; conv a
    ``summit_fast.ConvSpec``; counts (K, C_out, C_in/groups) int32, contiguous. kxk convs
    score only the sources whose bound can reach the top k if ``prune`` (the counts are the
    same). With ``stats``, returns (scores computed, scores in all), which waits for the GPU."""
    b, c_in, h, w = x.shape
    c_out, cin_g, kh, kw = weight.shape
    if k >= cin_g:
        # Every target keeps all of its sources (depthwise convs, for one): the scores cannot
        # change the counts, so none are computed.
        one = torch.ones((), dtype=counts.dtype, device=counts.device)
        counts.index_add_(0, labels.long(), one.expand(b, c_out, cin_g))
        return (0, b * c_out * cin_g) if stats else None
    g = conv.groups
    cout_g = c_out // g
    n_h, n_w = conv.output_size(h, w, kh, kw, spatial_stride)
    step_h, step_w = conv.stride[0] * spatial_stride, conv.stride[1] * spatial_stride
    left, _, top, _ = conv.pad
    if conv.padding_mode != "zeros" and any(conv.pad):
        x = F.pad(x, conv.pad, mode=conv.padding_mode)
        h, w = x.shape[2:]
        left = top = 0
    n_take = min(k, cin_g)
    labels = labels.contiguous()
    n_s = triton.next_power_of_2(cin_g)
    tiles = common.TILES

    if kh == 1 and kw == 1:
        r0, n_rows = _in_bounds(n_h, step_h, top, h)
        c0, n_cols = _in_bounds(n_w, step_w, left, w)
        view = x[:, :, r0::step_h, c0::step_w][:, :, :n_rows, :n_cols]  # the in-bounds sampled grid
        ext = _extrema(view, pad_sampled=n_rows < n_h or n_cols < n_w)
        block_j = max(1, min(triton.next_power_of_2(c_out), tiles.score_tile // n_s))
        _pointwise_kernel[(triton.cdiv(c_out, block_j), b)](
            ext, weight, labels, counts, c_in, c_out, cin_g, cout_g, weight.stride(0), weight.stride(1),
            n_take, BLOCK_J=block_j, BLOCK_S=n_s, num_warps=tiles.num_warps)
        return (b * c_out * cin_g,) * 2 if stats else None

    if conv.padding_mode == "zeros" and any(conv.pad):
        # Once, input-sized: the kernels then read no padding, and need no masks for it.
        x = F.pad(x, conv.pad)
    use_dot = cout_g > 8  # tl.dot needs 16 rows; fewer targets (depthwise) take the rank-1 path
    operand, unscale, dot_dtype, products, separate, inexact = _prepared(
        weight, ("operand", x.dtype, use_dot), lambda: _weight_operand(x, weight, use_dot))
    use_dot = dot_dtype is not None
    n_pos = n_h * n_w
    if use_dot:
        block_j = max(16, min(tiles.dot_targets, triton.next_power_of_2(cout_g)))
        if separate > 1:  # fewer rows leave the three products' operands too little work per warp
            block_j = max(block_j, min(64, tiles.dot_targets))
        if dot_dtype == tl.float32:  # the FMA product keeps BLOCK_J x BLOCK_K weights per thread group
            block_j = max(16, min(block_j, 1024 // operand.shape[2]))
        block_p = tiles.dot_positions
        if block_j < tiles.dot_targets and dot_dtype != tl.float32:
            # Half-precision blocks of fewer targets take twice the positions, so that each warp
            # keeps enough of M to amortise its operands (32 targets x 64 positions took 3-6x
            # more instructions per max step on sm_90).
            block_p *= 2
        block_p = max(16, min(block_p, triton.next_power_of_2(n_pos)))
    else:
        block_j = min(triton.next_power_of_2(cout_g), tiles.dot_targets)
        block_p = max(1, min(triton.next_power_of_2(n_pos), tiles.product_tile // block_j))
    _, _, s_h, s_w = x.stride()
    positions = _positions(n_h, n_w, step_h, step_w, s_h, s_w, block_p, x.device)
    n_blocks = g * triton.cdiv(cout_g, block_j)
    scores = torch.full((b, c_out, cin_g), float("-inf"), dtype=torch.float32, device=x.device)

    def conv_kernel(need):
        _conv_kernel[(n_blocks, b)](
            x, operand, scores if unscale is None else unscale, positions, scores if need is None else need, scores,
            c_out, cin_g, cout_g, positions.numel(), n_blocks, x.stride(0), x.stride(1),
            conv.dilation[0] * s_h, conv.dilation[1] * s_w, KW=kw, T=kh * kw, DOT_DTYPE=dot_dtype or tl.float32,
            USE_DOT=use_dot, SEPARATE=separate, SCALED=unscale is not None, PRUNE=need is not None,
            BLOCK_P=block_p, BLOCK_K=operand.shape[2] // separate, BLOCK_J=block_j, num_warps=tiles.num_warps)
        if inexact is not None:
            pairs, pair_taps = inexact
            _exact_rows_kernel[(pairs.shape[0], b)](
                x, pair_taps, pairs, positions, scores if need is None else need, scores, c_out, cin_g, cout_g,
                positions.numel(), n_blocks, x.stride(0), x.stride(1), conv.dilation[0] * s_h,
                conv.dilation[1] * s_w, KW=kw, T=kh * kw, PRUNE=need is not None, BLOCK_J=block_j, BLOCK_P=block_p,
                BLOCK_T=triton.next_power_of_2(kh * kw), num_warps=tiles.num_warps)

    if prune:
        used_h = (n_h - 1) * step_h + (kh - 1) * conv.dilation[0] + 1
        used_w = (n_w - 1) * step_w + (kw - 1) * conv.dilation[1] + 1
        ext = _extrema(x[:, :, :used_h, :used_w], pad_sampled=False)  # every value a tap reads
        coef = _prepared(weight, ("bounds", x.dtype, use_dot), lambda: _bound_coefficients(weight, products, unscale))
        block_r = max(1, min(block_j, tiles.score_tile // (4 * n_s)))  # eight (targets x sources) tensors live
        need = [torch.zeros((b, n_blocks, cin_g), dtype=torch.int32, device=x.device) for _ in range(2)]
        for round_, (done, todo) in enumerate(((need[0], need[0]), (need[0], need[1])), start=1):
            _select_kernel[(n_blocks, b)](
                ext, coef, scores, done, todo, c_in, c_out, cin_g, cout_g, n_blocks, n_take, ROUND=round_,
                BLOCK_J=block_j, BLOCK_R=block_r, BLOCK_S=n_s, num_warps=tiles.num_warps)
            conv_kernel(todo)
    else:
        conv_kernel(None)
    block_c = max(1, min(triton.next_power_of_2(c_out), tiles.score_tile // (4 * n_s)))
    _count_kernel[(triton.cdiv(c_out, block_c), b)](
        scores, labels, counts, c_out, cin_g, n_take, BLOCK_J=block_c, BLOCK_S=n_s, num_warps=tiles.num_warps)
    if not stats:
        return None
    total = b * c_out * cin_g
    if not prune:
        return total, total
    # Each needed (image, block, source) scored the block's real targets.
    targets = torch.full((n_blocks,), block_j, device=x.device).view(g, -1)
    targets[:, -1] = cout_g - block_j * (targets.shape[1] - 1)
    return int(((need[0] + need[1]) * targets.view(1, -1, 1)).sum()), total
