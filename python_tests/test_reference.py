"""Hand-computed cases for the torch reference twin (SPEC.md A and B)."""

import pytest
import torch

from summit_fast.backends.torch_ref import TorchBackend, influence_scores, select_channels, top_sources
from summit_fast.convspec import ConvSpec
from summit_fast.rules import mass, topk

from spec_oracle import oracle_scores


def rows(mask):
    return mask.int().tolist()


# ------------------------------------------------------------------ activation: mass rule
def test_mass_rule_selects_shortest_prefix_reaching_tau():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0, 2.0]])  # q = [3,1,0,0,2], total 6
    assert rows(select_channels(z, mass(0.5))) == [[1, 0, 0, 0, 0]]  # 3 >= 3: one channel
    assert rows(select_channels(z, mass(0.6))) == [[1, 0, 0, 0, 1]]  # 3 < 3.6, then 5 >= 3.6
    assert rows(select_channels(z, mass(1.0))) == [[1, 1, 0, 0, 1]]  # zero channels add no mass


def test_mass_rule_prefix_boundary_is_strict():
    # tau * T == 4 exactly: channel 1 has 4 before it (not < 4), so only channel 0 is selected.
    z = torch.tensor([[4.0, 4.0]])
    assert rows(select_channels(z, mass(0.5))) == [[1, 0]]
    z = torch.tensor([[2.0, 2.0, 4.0]])  # order 2,0,1; 0.75*8 = 6: before(0)=4 < 6, before(1)=6 not
    assert rows(select_channels(z, mass(0.75))) == [[1, 0, 1]]


def test_mass_rule_ties_by_ascending_index():
    z = torch.tensor([[1.0, 1.0, 1.0, 1.0]])  # 0.3 * 4 = 1.2: channels 0, 1
    assert rows(select_channels(z, mass(0.3))) == [[1, 1, 0, 0]]


def test_mass_rule_all_zero_or_negative_rows_select_nothing():
    z = torch.tensor([[0.0, 0.0, 0.0], [-1.0, -2.0, -0.5]])
    assert rows(select_channels(z, mass(0.01))) == [[0, 0, 0], [0, 0, 0]]


def test_mass_rule_excluded_channels_count_as_zero():
    z = torch.tensor([[5.0, 1.0, 1.0]])
    excluded = torch.tensor([True, False, False])
    assert rows(select_channels(z, mass(0.5), excluded)) == [[0, 1, 0]]


def test_topk_ties_by_ascending_index_and_excluded():
    z = torch.tensor([[1.0, 2.0, 2.0, 0.5, 2.0]])
    assert rows(select_channels(z, topk(2))) == [[0, 1, 1, 0, 0]]
    assert rows(select_channels(z, topk(9))) == [[1, 1, 1, 1, 1]]
    excluded = torch.tensor([False, True, False, False, False])
    assert rows(select_channels(z, topk(2), excluded)) == [[0, 0, 1, 0, 1]]


def test_activation_update_counts_per_label():
    acts = torch.zeros(3, 4, 2, 2)
    acts[0, 2, 1, 1] = 5.0  # image 0 (class 1): only channel 2 fires
    acts[1, 0, 0, 0] = 1.0  # image 1 (class 0): channels 0 and 3 with equal max
    acts[1, 3, 1, 0] = 1.0
    acts[2, 1] = -1.0  # image 2 (class 1): nothing positive
    counts = torch.zeros(2, 4, dtype=torch.int32)
    TorchBackend().activation_update(acts, torch.tensor([1, 0, 1]), counts, mass(0.6))
    assert counts.tolist() == [[1, 0, 0, 1], [0, 0, 1, 0]]


# ------------------------------------------------------------------ influence
def brute_force_scores(x, w, conv: ConvSpec, r=1):
    return oracle_scores(x, w, conv.pad, conv.stride, conv.dilation, conv.groups, conv.padding_mode, r)


@pytest.mark.parametrize("k,stride,pad,dilation,groups,r,mode", [
    (1, 1, 0, 1, 1, 1, "zeros"),
    (1, 2, 1, 1, 1, 1, "zeros"),
    (1, 1, 0, 1, 2, 3, "zeros"),
    (3, 1, 1, 1, 1, 1, "zeros"),
    (3, 2, 0, 1, 1, 1, "zeros"),
    (3, 1, 2, 2, 1, 1, "zeros"),
    (3, 1, 1, 1, 2, 1, "zeros"),
    (3, 1, 1, 1, 4, 1, "zeros"),  # depthwise
    (3, 1, 1, 1, 1, 3, "zeros"),
    (5, 1, 2, 1, 1, 1, "zeros"),
    (5, 2, 2, 1, 2, 3, "zeros"),
    (3, 1, 1, 1, 1, 1, "reflect"),
    (3, 1, 1, 1, 1, 1, "replicate"),
    (3, 1, 1, 1, 1, 1, "circular"),
])
def test_influence_scores_match_brute_force(k, stride, pad, dilation, groups, r, mode):
    torch.manual_seed(k * 100 + stride * 10 + groups + r)
    x = torch.randn(2, 4, 9, 8)
    w = torch.randn(4 if groups == 4 else 6, 4 // groups, k, k)
    conv = ConvSpec((stride, stride), (pad,) * 4, (dilation, dilation), groups, mode)
    got = influence_scores(x, w, conv, r, torch.float64)
    torch.testing.assert_close(got, brute_force_scores(x, w, conv, r), rtol=1e-12, atol=1e-12)


def test_influence_hand_computed_1x1_uses_max_or_min():
    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]])  # one source: max 3, min -2
    w = torch.tensor([[[[2.0]]], [[[-1.0]]]])  # two targets
    scores = influence_scores(x, w, ConvSpec())
    assert scores.flatten().tolist() == [6.0, 2.0]  # 2*3 and -1*(-2)
    # with padding 1 the padded zeros are sampled too: min becomes -2, max 3; a negative-only plane
    x_neg = -torch.ones(1, 1, 2, 2)
    padded = influence_scores(x_neg, w, ConvSpec(pad=(1, 1, 1, 1)))
    assert padded.flatten().tolist() == [0.0, 1.0]  # 2*max(0,-1) = 0; -1*min = 1


def test_influence_hand_computed_3x3_stride_and_spatial_stride():
    x = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)
    w = torch.zeros(1, 1, 3, 3)
    w[0, 0, 1, 1] = 1.0  # picks the centre of each window
    # valid 3x3 windows have centres 6..18 on a 5x5 grid: max 18
    assert influence_scores(x, w, ConvSpec()).item() == 18.0
    # stride 2: centres at (1,1),(1,3),(3,1),(3,3) -> max 18; spatial_stride 3 on the 3x3 grid keeps (0,0) only -> 6
    assert influence_scores(x, w, ConvSpec(stride=(2, 2))).item() == 18.0
    assert influence_scores(x, w, ConvSpec(), spatial_stride=3).item() == 6.0


def test_top_sources_ties_by_lower_index_and_small_groups():
    scores = torch.tensor([[[1.0, 3.0, 3.0, 2.0]]])
    assert top_sources(scores, 2).tolist() == [[[1, 2]]]
    assert top_sources(scores, 9).tolist() == [[[1, 2, 3, 0]]]


def test_influence_update_grouped_counts_index_sources_within_the_group():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 5)
    w = torch.randn(4, 2, 3, 3)  # groups=2: targets 0,1 read sources 0,1; targets 2,3 read 2,3
    conv = ConvSpec(pad=(1, 1, 1, 1), groups=2)
    counts = torch.zeros(2, 4, 2, dtype=torch.int32)  # (K, C_out, C_in / groups)
    TorchBackend(torch.float64).influence_update(x, w, conv, torch.tensor([0, 1, 1]), counts, k=1)
    assert counts.sum(dim=2).tolist() == [[1, 1, 1, 1], [2, 2, 2, 2]]
    scores = influence_scores(x, w, conv, dtype=torch.float64)
    best = scores.argmax(dim=2)  # k=1: the best source within the group, per image and target
    expected = torch.zeros_like(counts)
    for b, label in enumerate([0, 1, 1]):
        for j in range(4):
            expected[label, j, best[b, j]] += 1
    assert torch.equal(counts, expected)


def test_reference_does_not_depend_on_chunking(monkeypatch):
    import summit_fast.backends.torch_ref as ref
    torch.manual_seed(1)
    x, w = torch.randn(2, 6, 7, 7), torch.randn(5, 6, 3, 3)
    full = influence_scores(x, w, ConvSpec(pad=(1, 1, 1, 1)), dtype=torch.float64)
    monkeypatch.setattr(ref, "_CHUNK_ELEMENTS", 1)  # one source channel per chunk
    assert torch.equal(full, influence_scores(x, w, ConvSpec(pad=(1, 1, 1, 1)), dtype=torch.float64))
