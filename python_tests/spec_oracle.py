"""An independent, deliberately naive implementation of SPEC.md A and B, one image at a time
in plain Python loops, to check the engine against (it shares no code with summit_fast)."""

import torch
import torch.nn.functional as F


def oracle_select(z, rule: dict, excluded=()) -> set[int]:
    """Channels selected for one image; ``z`` is a list of per-channel maxima, ``rule`` a rule's JSON."""
    z = [0.0 if c in excluded else float(v) for c, v in enumerate(z)]
    if rule["rule"] == "topk":
        order = sorted(range(len(z)), key=lambda c: (-z[c], c))
        return set(order[:rule["k"]])
    q = [max(v, 0.0) for v in z]
    total = sum(q)
    if total == 0:
        return set()
    chosen, before = set(), 0.0
    for c in sorted(range(len(q)), key=lambda c: (-q[c], c)):
        if before < rule["tau"] * total:
            chosen.add(c)
        before += q[c]
    return chosen


def oracle_scores(x, w, pad=(0, 0, 0, 0), stride=(1, 1), dilation=(1, 1), groups=1, padding_mode="zeros", r=1):
    """L[b, j, s] from SPEC.md B.1-2, one output position at a time, in float64."""
    mode = "constant" if padding_mode == "zeros" else padding_mode
    xp = F.pad(x.double(), pad, mode=mode)
    b, _, hp, wp = xp.shape
    c_out, cin_g, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    out = torch.full((b, c_out, cin_g), float("-inf"), dtype=torch.float64)
    for j in range(c_out):
        for s in range(cin_g):
            i = (j // (c_out // groups)) * cin_g + s
            for y in range(0, ho, r):
                for xx in range(0, wo, r):
                    patch = xp[:, i, y * sh:y * sh + dh * (kh - 1) + 1:dh, xx * sw:xx * sw + dw * (kw - 1) + 1:dw]
                    out[:, j, s] = torch.maximum(out[:, j, s], (patch * w[j, s].double()).sum(dim=(1, 2)))
    return out


def oracle_top(scores_row, k: int) -> list[int]:
    """The k largest entries of one target's score list, ties by lower index."""
    return sorted(range(len(scores_row)), key=lambda s: (-float(scores_row[s]), s))[:k]
