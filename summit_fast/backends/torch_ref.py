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
    """Pure PyTorch; the reference twin and the fallback on any device."""

    name = "torch"
    activation_count_dtypes = influence_count_dtypes = (torch.int32, torch.int16)

    def __init__(self, compute_dtype: torch.dtype = torch.float32):
        if compute_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"compute_dtype must be torch.float32 or torch.float64, got {compute_dtype}")
        self.compute_dtype = compute_dtype

    @classmethod
    def unavailable_reason(cls, device: torch.device) -> str | None:
        return None

    def _activation_update(self, acts, labels, counts, rule, excluded):
        selected = select_channels(channel_max(acts, self.compute_dtype), rule, excluded)
        add_activation_counts(counts, labels, selected)

    def _influence_update(self, x, weight, conv, labels, counts, k, spatial_stride):
        scores = influence_scores(x, weight, conv, spatial_stride, self.compute_dtype)
        add_influence_counts(counts, labels, top_sources(scores, k))
