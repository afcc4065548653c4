"""The torch reference twin: SPEC.md A and B in plain, readable PyTorch.

Every other backend is tested against this one, with exact integer equality. It runs on CPU
and CUDA tensors. ``compute_dtype=torch.float64`` is the float64 mode the tests use.
Memory stays bounded: influence is computed over chunks of source channels, never as a
B*C_out*C_in*H*W tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..convspec import ConvSpec
from ..rules import Mass, SelectionRule, TopK
from .base import Backend

# Elements of one chunk of per-source conv outputs (B * S * C_out/g * H_out * W_out).
_CHUNK_ELEMENTS = 1 << 24


# ---------------------------------------------------------------- activation (SPEC.md A)
def channel_max(acts: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """z[b, c] = max over (h, w) of acts[b, c], in ``dtype`` (exact: max needs no rounding)."""
    return acts.amax(dim=(2, 3)).to(dtype)


def select_channels(z: torch.Tensor, rule: SelectionRule, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean (B, C) mask of the channels each image selects under ``rule``."""
    if excluded is not None:
        z = z.masked_fill(excluded, 0.0)
    b, c = z.shape
    if isinstance(rule, TopK):
        order = torch.sort(z, dim=1, descending=True, stable=True).indices  # ties: lower index first
        mask = torch.zeros_like(z, dtype=torch.bool)
        return mask.scatter_(1, order[:, : min(rule.k, c)], True)
    if isinstance(rule, Mass):
        q = z.clamp(min=0).to(torch.float64)
        total = q.sum(dim=1, keepdim=True)
        q_sorted, order = torch.sort(q, dim=1, descending=True, stable=True)
        before = torch.cumsum(q_sorted, dim=1) - q_sorted  # sum of q over channels earlier in the order
        keep_sorted = (before < rule.tau * total) & (total > 0)
        return torch.zeros_like(keep_sorted).scatter_(1, order, keep_sorted)
    raise TypeError(f"rule must be summit_fast.mass(...) or summit_fast.topk(...), got {rule!r}")


def add_activation_counts(counts: torch.Tensor, labels: torch.Tensor, selected: torch.Tensor) -> None:
    """counts[labels[b], c] += 1 for every selected (b, c)."""
    counts.index_add_(0, labels.long(), selected.to(counts.dtype))


# ---------------------------------------------------------------- influence (SPEC.md B)
def _pad_input(x: torch.Tensor, conv: ConvSpec) -> torch.Tensor:
    if not any(conv.pad):
        return x
    if conv.padding_mode == "zeros":
        return F.pad(x, conv.pad)
    return F.pad(x, conv.pad, mode=conv.padding_mode)


def influence_scores(x: torch.Tensor, weight: torch.Tensor, conv: ConvSpec, spatial_stride: int = 1,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """L[b, j, s]: the max over sampled output positions of source ``s``'s contribution to
    target ``j``, where ``s`` indexes the sources of j's group (global index
    ``group(j) * C_in/groups + s``). Shape (B, C_out, C_in/groups)."""
    x = _pad_input(x.to(dtype), conv)
    weight = weight.to(dtype)
    b, c_in = x.shape[:2]
    c_out, cin_g, kh, kw = weight.shape
    g = conv.groups
    cout_g = c_out // g
    sh, sw = conv.stride[0] * spatial_stride, conv.stride[1] * spatial_stride
    if kh == 1 and kw == 1:
        return _scores_1x1(x, weight, g, sh, sw)
    # Source i (local s in group gi) feeds targets gi*cout_g + jl; as a depthwise conv with
    # cout_g outputs per input channel, output channel i*cout_g + jl carries M[b, j, i, :, :].
    w_per_source = weight.reshape(g, cout_g, cin_g, kh, kw).permute(0, 2, 1, 3, 4).reshape(c_in * cout_g, 1, kh, kw)
    ho = (x.shape[2] - conv.dilation[0] * (kh - 1) - 1) // sh + 1
    wo = (x.shape[3] - conv.dilation[1] * (kw - 1) - 1) // sw + 1
    chunk = max(1, _CHUNK_ELEMENTS // max(1, b * cout_g * ho * wo))
    per_source = []
    for s0 in range(0, c_in, chunk):
        s1 = min(c_in, s0 + chunk)
        m = F.conv2d(x[:, s0:s1], w_per_source[s0 * cout_g:s1 * cout_g], stride=(sh, sw),
                     dilation=conv.dilation, groups=s1 - s0)
        per_source.append(m.amax(dim=(2, 3)).view(b, s1 - s0, cout_g))
    l_src = torch.cat(per_source, dim=1)  # (B, C_in, cout_g)
    return l_src.view(b, g, cin_g, cout_g).permute(0, 1, 3, 2).reshape(b, c_out, cin_g)


def _scores_1x1(x: torch.Tensor, weight: torch.Tensor, groups: int, sh: int, sw: int) -> torch.Tensor:
    """The exact 1x1 shortcut: W*max(x) for W >= 0, W*min(x) otherwise (rounding is monotone)."""
    sampled = x[:, :, ::sh, ::sw]
    b, c_in = x.shape[:2]
    c_out, cin_g = weight.shape[:2]
    cout_g = c_out // groups

    def per_target(v):  # (B, C_in) -> (B, C_out, cin_g): each target sees its group's sources
        return v.view(b, groups, 1, cin_g).expand(b, groups, cout_g, cin_g).reshape(b, c_out, cin_g)

    w = weight.view(1, c_out, cin_g)
    return torch.where(w >= 0, w * per_target(sampled.amax(dim=(2, 3))), w * per_target(sampled.amin(dim=(2, 3))))


# ---------------------------------------------------------------- exact bound pruning (kxk)
# The readable twin of the cpu backend's pruning (csrc/cpu/influence.cpp explains the bound and
# its margin at length). Every value a tap of source i reads lies in [lo_i, hi_i], so a score is
# at most hi_i * Pos + lo_i * Neg (the sums of W[j, s]'s positive and negative taps) plus the
# rounding of the computed sum. Only sources whose bound can reach the k-th best exact score
# are scored; the counts are those of scoring every source with the same score function.
def _sampled_taps(x_padded: torch.Tensor, kh: int, kw: int, dilation, step) -> list[torch.Tensor]:
    """Per tap (u, v), the (B, C_in, H_out, W_out) view of the values it reads on the sampled grid."""
    h, w = x_padded.shape[2:]
    n_h = (h - dilation[0] * (kh - 1) - 1) // step[0] + 1
    n_w = (w - dilation[1] * (kw - 1) - 1) // step[1] + 1
    return [x_padded[:, :, u * dilation[0]:u * dilation[0] + (n_h - 1) * step[0] + 1:step[0],
                     v * dilation[1]:v * dilation[1] + (n_w - 1) * step[1] + 1:step[1]]
            for u in range(kh) for v in range(kw)]


def pair_scores(taps: list[torch.Tensor], weight: torch.Tensor, b: torch.Tensor, j: torch.Tensor,
                s: torch.Tensor, cin_g: int, cout_g: int) -> torch.Tensor:
    """L[b, j, s] for the given index triples only. The sum over taps runs in one fixed order,
    one elementwise operation at a time, so a score does not depend on which other pairs are
    computed with it (a convolution's summation order may depend on its shape)."""
    i = j // cout_g * cin_g + s
    w = weight.reshape(weight.shape[0], cin_g, -1)[j, s]  # (N, taps)
    acc = w[:, 0, None, None] * taps[0][b, i]
    for t in range(1, len(taps)):
        acc = acc + w[:, t, None, None] * taps[t][b, i]
    return acc.amax(dim=(1, 2))


def score_bounds(taps: list[torch.Tensor], weight: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, C_out, C_in/groups) float64 upper bounds of every score :func:`pair_scores` can give."""
    reads = torch.stack([t.amax(dim=(2, 3)) for t in taps] + [t.amin(dim=(2, 3)) for t in taps])
    hi, lo = reads[:len(taps)].amax(0).double(), reads[len(taps):].amin(0).double()  # (B, C_in)
    b, c_in = hi.shape
    c_out, cin_g = weight.shape[:2]
    w = weight.double().reshape(c_out, cin_g, -1)
    pos, neg, total = w.clamp(min=0).sum(2), w.clamp(max=0).sum(2), w.abs().sum(2)

    def per_target(v):  # (B, C_in) -> (B, C_out, cin_g): each target sees its group's sources
        return v.view(b, groups, 1, cin_g).expand(b, groups, c_out // groups, cin_g).reshape(b, c_out, cin_g)

    hi, lo = per_target(hi), per_target(lo)
    magnitude = total * torch.maximum(hi.abs(), lo.abs())
    info = torch.finfo(dtype)
    n = 4.0 * (len(taps) + 3)  # the cpu backend's margin: 4 (T + 3) (u A + eta)
    bound = hi * pos + lo * neg + n * (info.eps / 2) * magnitude + n * info.tiny * info.eps
    usable = (magnitude < info.max / 4) & torch.isfinite(magnitude) & ((len(taps) + 3) * info.eps / 2 < 0.01)
    return torch.where(usable, bound, torch.inf)


def pruned_scores(x: torch.Tensor, weight: torch.Tensor, conv: ConvSpec, k: int, spatial_stride: int,
                  dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """Scores (B, C_out, C_in/groups) whose top k are those of all scores by :func:`pair_scores`,
    with -inf where a score was not computed; and how many were computed. Round 1 scores each
    target's 2k best sources by bound; its k-th best exact score t is at most the final k-th
    best, so round 2 scores every other source whose bound is not below t (a tie may still win
    on its lower index)."""
    c_out, cin_g, kh, kw = weight.shape
    cout_g = c_out // conv.groups
    taps = _sampled_taps(_pad_input(x.to(dtype), conv), kh, kw, conv.dilation,
                         (conv.stride[0] * spatial_stride, conv.stride[1] * spatial_stride))
    weight = weight.to(dtype)
    bound = score_bounds(taps, weight, conv.groups, dtype)
    scores = torch.full(bound.shape, -torch.inf, dtype=dtype, device=x.device)
    computed = torch.zeros(bound.shape, dtype=torch.bool, device=x.device)

    def score(needed: torch.Tensor) -> None:
        rows = needed.nonzero()
        per_chunk = max(1, _CHUNK_ELEMENTS // max(1, taps[0].shape[2] * taps[0].shape[3]))
        for r in rows.split(per_chunk):
            b, j, s = r.unbind(1)
            scores[b, j, s] = pair_scores(taps, weight, b, j, s, cin_g, cout_g)
        computed.logical_or_(needed)

    m = min(2 * k, cin_g)
    score(bound >= torch.topk(bound, m, dim=2).values[..., -1:])
    kth = torch.topk(scores, k, dim=2).values[..., -1:]
    kth = kth.masked_fill(scores.isnan().any(dim=2, keepdim=True), -torch.inf)  # NaN: score the whole row
    score(~computed & (bound >= kth))
    return scores, int(computed.sum())


def top_sources(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Local indices (B, C_out, min(k, n)) of the k largest scores per target, ties by lower index."""
    order = torch.sort(scores, dim=2, descending=True, stable=True).indices
    return order[:, :, : min(k, scores.shape[2])]


def add_influence_counts(counts: torch.Tensor, labels: torch.Tensor, local_sources: torch.Tensor) -> None:
    """counts[labels[b], j, s] += 1 for every kept source s (indexed within j's group)."""
    _, c_out, cin_g = counts.shape
    b = local_sources.shape[0]
    j = torch.arange(c_out, device=counts.device).view(1, c_out, 1)
    flat = (labels.long().view(b, 1, 1) * c_out + j) * cin_g + local_sources
    counts.view(-1).index_put_((flat.reshape(-1),), torch.ones(flat.numel(), dtype=counts.dtype, device=counts.device),
                               accumulate=True)


class TorchBackend(Backend):
    """Pure PyTorch; the reference twin and the fallback on any device.

    prune: kxk influence scores only the sources whose exact upper bound can reach a target's
    top k (:func:`pruned_scores`; the same counts, fewer products). Off by default: the
    reference computes every score. After each influence update, ``last_influence_stats`` is
    (scores computed, B * C_out * C_in/groups scores in all)."""

    name = "torch"
    activation_count_dtypes = influence_count_dtypes = (torch.int32, torch.int16)

    def __init__(self, compute_dtype: torch.dtype = torch.float32, prune: bool = False):
        if compute_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"compute_dtype must be torch.float32 or torch.float64, got {compute_dtype}")
        self.compute_dtype = compute_dtype
        self.prune = bool(prune)
        self.last_influence_stats: tuple[int, int] | None = None

    @classmethod
    def unavailable_reason(cls, device: torch.device) -> str | None:
        return None

    def _activation_update(self, acts, labels, counts, rule, excluded):
        selected = select_channels(channel_max(acts, self.compute_dtype), rule, excluded)
        add_activation_counts(counts, labels, selected)

    def _influence_update(self, x, weight, conv, labels, counts, k, spatial_stride):
        b, total = x.shape[0], x.shape[0] * weight.shape[0] * weight.shape[1]
        if k >= weight.shape[1]:  # every source is kept (depthwise convs, for one): no score is needed
            add_influence_counts(counts, labels, torch.arange(weight.shape[1], device=x.device).expand(b, weight.shape[0], -1))
            self.last_influence_stats = (0, total)
            return
        if self.prune and weight.shape[2] * weight.shape[3] > 1:
            scores, computed = pruned_scores(x, weight, conv, k, spatial_stride, self.compute_dtype)
        else:
            scores, computed = influence_scores(x, weight, conv, spatial_stride, self.compute_dtype), total
        add_influence_counts(counts, labels, top_sources(scores, k))
        self.last_influence_stats = (computed, total)
