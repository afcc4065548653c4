"""Triton influence update (SPEC.md B): per conv edge, the top-k sources of every target.

Nothing of size B*C_out*C_in*H*W exists at any point:

- 1x1 convs use the exact shortcut. One kernel reduces the per-channel max and min over the
  sampled input positions (B*2*C_in floats); a second scores each target's sources as
  ``W * max`` (W >= 0) or ``W * min`` and counts the top k.
- kxk convs: one program per (image, block of targets of one group) walks the group's source
  channels; per source, ``M = patches (positions x K) @ W (K x targets)`` with K = kh*kw
  padded (``tl.dot``) over tiles of positions, keeping a running max. The per-source maxima of
  the block (targets x sources) stay in registers, then the top k are counted.
  Products run on tensor cores only where that is exact enough to reproduce the reference: half
  inputs with half weights (exact products, fp32 sums); half inputs with fp32 weights (autocast)
  as three half products, weights split as hi + mid + lo; fp32 inputs in IEEE fp32 (no TF32).

Padding modes other than "zeros" are applied once in torch (an input-sized copy,
B*C_in*H*W); the kernels then see an unpadded input.
"""

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


@triton.jit(do_not_specialize=["C_out", "cin_g", "cout_g", "H", "W", "n_pos", "n_w", "pad_t", "pad_l", "n_take"])
def _conv_kernel(x_ptr, w_ptr, labels_ptr, counts_ptr, C_out, cin_g, cout_g,
                 H, W, n_pos, n_w, s_b, s_c, s_h, s_w, step_h, step_w, pad_t, pad_l, dil_h, dil_w,
                 s_wo, s_wi, s_wh, s_ww, KW, KK, n_take,
                 DOT_DTYPE: tl.constexpr, SPLIT_W: tl.constexpr, USE_DOT: tl.constexpr, BLOCK_P: tl.constexpr,
                 BLOCK_K: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_S: tl.constexpr):
    """kxk convs: BLOCK_J targets of one group against all of the group's sources."""
    n_jblk = tl.cdiv(cout_g, BLOCK_J)
    g = tl.program_id(0) // n_jblk
    b = tl.program_id(1)
    local_j = (tl.program_id(0) % n_jblk) * BLOCK_J + tl.arange(0, BLOCK_J)
    mask_j = local_j < cout_g
    offs_j = g * cout_g + local_j
    offs_t = tl.arange(0, BLOCK_K)  # kernel taps (u, v), padded to BLOCK_K
    mask_t = offs_t < KK
    tap_u = offs_t // KW
    tap_v = offs_t % KW
    w_taps = w_ptr + tap_u[:, None] * s_wh + tap_v[:, None] * s_ww + offs_j[None, :] * s_wo
    w_mask = mask_t[:, None] & mask_j[None, :]
    x_b = x_ptr + b.to(tl.int64) * s_b + (g * cin_g).to(tl.int64) * s_c
    offs_s = tl.arange(0, BLOCK_S)
    scores = tl.full([BLOCK_J, BLOCK_S], float("-inf"), tl.float32)
    for s in range(0, cin_g):
        wt = tl.load(w_taps + s * s_wi, mask=w_mask, other=0.0)  # (K, targets)
        w_hi = wt.to(DOT_DTYPE)
        if SPLIT_W:  # the remainders are exact in fp32; hi + mid + lo carries all 24 bits
            rest = wt.to(tl.float32) - w_hi.to(tl.float32)
            w_mid = rest.to(DOT_DTYPE)
            w_lo = (rest - w_mid.to(tl.float32)).to(DOT_DTYPE)
        run = tl.full([BLOCK_P, BLOCK_J], float("-inf"), tl.float32)
        for p0 in range(0, n_pos, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            mask_p = p < n_pos
            yy = ((p // n_w) * step_h - pad_t)[:, None] + (tap_u * dil_h)[None, :]
            xx = ((p % n_w) * step_w - pad_l)[:, None] + (tap_v * dil_w)[None, :]
            inside = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)  # else: zero padding
            patches = tl.load(x_b + s * s_c + yy * s_h + xx * s_w,
                              mask=mask_p[:, None] & mask_t[None, :] & inside, other=0.0).to(DOT_DTYPE)
            if USE_DOT:
                # "ieee": fp32 products must not go through TF32, or scores drift from the reference.
                m = tl.dot(patches, w_hi, input_precision="ieee")
                if SPLIT_W:
                    m = tl.dot(patches, w_mid, acc=m, input_precision="ieee")
                    m = tl.dot(patches, w_lo, acc=m, input_precision="ieee")
            else:  # fewer than 16 targets (e.g. depthwise): tl.dot needs all dims >= 16
                m = tl.sum(patches.to(tl.float32)[:, :, None] * wt.to(tl.float32)[None, :, :], axis=1)
            run = tl.maximum(run, tl.where(mask_p[:, None], m, float("-inf")))
        scores = tl.where(offs_s[None, :] == s, tl.max(run, axis=0)[:, None], scores)
    label = tl.load(labels_ptr + b).to(tl.int64)
    count_top(scores, mask_j, offs_s, cin_g, n_take, counts_ptr + (label * C_out + offs_j) * cin_g)


def _in_bounds(n_out: int, step: int, pad: int, size: int) -> tuple[int, int]:
    """(first input index, count) of the sampled 1x1 positions n*step - pad inside [0, size).
    An empty range starts at 0, so that a view of it keeps a valid data pointer."""
    first = -(-pad // step)
    count = max(0, min(n_out - 1, (size - 1 + pad) // step) - first + 1)
    return (first * step - pad if count else 0), count


def _dot_operands(x: torch.Tensor, weight: torch.Tensor):
    """(tl.dot operand type, whether to split the weights): half inputs stay half, with the
    weights split into three half parts unless they have the inputs' type; else fp32."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return (tl.float16 if x.dtype == torch.float16 else tl.bfloat16), weight.dtype != x.dtype
    return tl.float32, False


def influence_update(x: torch.Tensor, weight: torch.Tensor, conv, labels: torch.Tensor,
                     counts: torch.Tensor, k: int, spatial_stride: int) -> None:
    """counts[labels[b], j, s] += 1 for the top-k sources s of every target j (SPEC.md B); s
    indexes j's group (source channel group(j) * C_in/groups + s).

    x (B, C_in, H, W) and weight (C_out, C_in/groups, kh, kw) in any strides; conv a
    ``summit_fast.ConvSpec``; counts (K, C_out, C_in/groups) int32, contiguous."""
    b, c_in, h, w = x.shape
    c_out, cin_g, kh, kw = weight.shape
    if k >= cin_g:
        # Every target keeps all of its sources (depthwise convs, for one): the scores cannot
        # change the counts, so none are computed.
        one = torch.ones((), dtype=counts.dtype, device=counts.device)
        counts.index_add_(0, labels.long(), one.expand(b, c_out, cin_g))
        return
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
        reduction = reduction_args(view)
        ext = torch.empty((b, 2, c_in), dtype=torch.float32, device=x.device)
        _extrema_kernel[(triton.cdiv(c_in, reduction["BLOCK_C"]), b)](
            view, ext, PAD_SAMPLED=n_rows < n_h or n_cols < n_w, num_warps=tiles.num_warps, **reduction)
        block_j = max(1, min(triton.next_power_of_2(c_out), tiles.score_tile // n_s))
        _pointwise_kernel[(triton.cdiv(c_out, block_j), b)](
            ext, weight, labels, counts, c_in, c_out, cin_g, cout_g, weight.stride(0), weight.stride(1),
            n_take, BLOCK_J=block_j, BLOCK_S=n_s, num_warps=tiles.num_warps)
        return

    n_pos = n_h * n_w
    block_k = max(16, triton.next_power_of_2(kh * kw))
    use_dot = cout_g > 8
    if use_dot:
        block_j = max(16, min(tiles.dot_targets, triton.next_power_of_2(cout_g), tiles.score_tile // n_s))
        block_p = max(16, min(tiles.dot_positions, triton.next_power_of_2(n_pos)))
    else:
        block_j = triton.next_power_of_2(cout_g)
        block_p = max(1, min(triton.next_power_of_2(n_pos), tiles.product_tile // (block_k * block_j)))
    dot_dtype, split_w = _dot_operands(x, weight)
    _conv_kernel[(g * triton.cdiv(cout_g, block_j), b)](
        x, weight, labels, counts, c_out, cin_g, cout_g, h, w, n_pos, n_w, *x.stride(),
        step_h, step_w, top, left, *conv.dilation, *weight.stride(), kw, kh * kw, n_take,
        DOT_DTYPE=dot_dtype, SPLIT_W=split_w, USE_DOT=use_dot, BLOCK_P=block_p, BLOCK_K=block_k,
        BLOCK_J=block_j, BLOCK_S=n_s, num_warps=tiles.num_warps)
