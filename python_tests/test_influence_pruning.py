"""Exact bound pruning of kxk influence scores (SPEC.md B): the pruned path must give the same
counts as computing every score, exactly, including on ties, zeros, constants and extreme
magnitudes. Each case compares a backend (cpu, the torch twin and the CUDA kernels, emulated on
the CPU) with pruning on and off in-process (and, where the data has exact ties, the float64 reference too)."""

import pytest
import torch

from summit_fast._native import import_error, native
from summit_fast.backends import get_backend
from summit_fast.backends.cuda import CudaBackend
from summit_fast.backends.torch_ref import TorchBackend
from summit_fast.convspec import ConvSpec
from test_cpu_backend import CONVS, DTYPES, _labels, _layout

pytestmark = pytest.mark.skipif(native is None, reason=f"summit_fast._C is not built: {import_error}")

REF = TorchBackend(compute_dtype=torch.float64)


@pytest.fixture(scope="module", params=["cpu", "torch", "cuda-emulated"])
def backend(request):
    """Each backend that prunes: the C++ one, its readable torch twin and the CUDA kernels
    (executed on the CPU)."""
    return request.param


def _make(backend, prune):
    if backend == "cuda-emulated":
        return CudaBackend(emulate=True, prune=prune)
    return get_backend(backend, "cpu", prune=prune)


@pytest.fixture(scope="module")
def pruned(backend):
    return _make(backend, True)


@pytest.fixture(scope="module")
def unpruned(backend):
    return _make(backend, False)


def _compare(pruned, unpruned, x, weight, conv, k=5, spatial_stride=1, num_classes=3, count_dtype=torch.int32,
             reference=False):
    """Counts of both paths (and the reference's) must be equal; returns the pruned path's
    (scores computed, scores in all)."""
    c_out, cin_g = weight.shape[:2]
    labels = _labels(x.shape[0], num_classes, seed=c_out)
    want = torch.zeros(num_classes, c_out, cin_g, dtype=count_dtype)
    got = torch.zeros_like(want)
    unpruned.influence_update(x, weight, conv, labels, want, k, spatial_stride)
    pruned.influence_update(x, weight, conv, labels, got, k, spatial_stride)
    assert int(want.sum()) == x.shape[0] * c_out * min(k, cin_g)
    assert torch.equal(got, want), f"{(got.long() - want.long()).abs().sum()} counts differ"
    if reference:
        ref = torch.zeros_like(want)
        REF.influence_update(x, weight, conv, labels, ref, k, spatial_stride)
        assert torch.equal(got, ref), f"{(got.long() - ref.long()).abs().sum()} counts differ from the reference"
    return pruned.last_influence_stats


def _weight(conv_case, c_in, seed):
    _, c_out, kh, kw, spec = conv_case
    return torch.randn(c_out, c_in // spec.groups, kh, kw, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ the backend test grids
def _skip_emulated(backend):
    if backend == "cuda-emulated":
        pytest.skip("the emulated cuda kernels take minutes on these grids; test_cuda_influence.py runs a slice")


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: c[0])
@pytest.mark.parametrize("size, spatial_stride", [(7, 1), (13, 3)], ids=["7px", "13px_r3"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
def test_pruned_matches_unpruned(backend, pruned, unpruned, conv, size, spatial_stride, dtype, layout):
    _skip_emulated(backend)
    g = torch.Generator().manual_seed(size + len(conv[0]))
    # ReLU-like inputs (many exact zeros, as in real networks) on half the channels.
    x = torch.randn(2, 50, size, size, generator=g)
    x[:, ::2] = x[:, ::2].clamp(min=0)
    x = _layout(x.to(DTYPES[dtype]), layout)
    exact, total = _compare(pruned, unpruned, x, _weight(conv, 50, len(conv[0])), conv[4], 5, spatial_stride)
    assert 0 <= exact <= total == 2 * conv[1] * 50 // conv[4].groups


@pytest.mark.parametrize("conv", [c for c in CONVS if c[2] * c[3] > 1], ids=lambda c: c[0])
@pytest.mark.parametrize("count_dtype", [torch.int16, torch.int32], ids=str)
def test_pruned_batch_one_large_grid_many_classes(backend, pruned, unpruned, conv, count_dtype):
    _skip_emulated(backend)
    x = torch.randn(1, 50, 28, 28, generator=torch.Generator().manual_seed(1)).clamp(min=0)
    for spatial_stride in (1, 3):
        _compare(pruned, unpruned, x, _weight(conv, 50, 3), conv[4], 5, spatial_stride, 1000, count_dtype)


def test_pruning_skips_scores_on_localised_inputs(pruned, unpruned):
    """Sources whose activity is small cannot beat strong ones: their scores are skipped, and
    the stats say so (all scores computed without pruning). k = 3: round 1 takes the 2k = 6
    strong sources of every target, so even the cuda kernels, which compute a tile of targets
    together, skip the weak sources' planes."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 40, 12, 12, generator=g) * 0.01
    x[:, :6] += torch.rand(3, 6, 12, 12, generator=g) * 10  # six strong sources
    weight = torch.rand(20, 40, 3, 3, generator=g)
    exact, total = _compare(pruned, unpruned, x, weight, ConvSpec(pad=(1, 1, 1, 1)), k=3, reference=True)
    assert total == 3 * 20 * 40 and exact <= total // 2
    assert unpruned.last_influence_stats == (total, total)


# ------------------------------------------------------------------------------ adversarial cases
SPECS = [ConvSpec(pad=(1, 1, 1, 1)), ConvSpec(), ConvSpec(stride=(2, 2), pad=(1, 1, 1, 1)),
         ConvSpec(dilation=(2, 2), groups=2)]


@pytest.mark.parametrize("spec", SPECS, ids=["p1", "valid", "s2_p1", "d2_g2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_exact_ties_on_small_integers(pruned, unpruned, spec, dtype):
    """Integer inputs and weights: scores are exact integers, with many ties among sources and
    bounds equal to scores; the lower source index must win every tie, as without pruning."""
    g = torch.Generator().manual_seed(7)
    x = torch.randint(0, 3, (3, 24, 9, 9), generator=g).to(dtype)
    weight = torch.randint(-1, 2, (16, 24 // spec.groups, 3, 3), generator=g).to(dtype)
    for k in (1, 2, 5):
        _compare(pruned, unpruned, x, weight, spec, k, reference=True)


@pytest.mark.parametrize("spec", SPECS, ids=["p1", "valid", "s2_p1", "d2_g2"])
def test_constant_planes_and_one_tap_weights(pruned, unpruned, spec):
    """Constant planes under one-tap weights: each score equals its bound's real value, and
    equal constants make equal scores, so ties sit exactly at the bound."""
    x = torch.tensor([1.0, 2.0, 2.0, 0.5, 2.0, 1.0, 2.0, 2.0]).repeat(3).view(1, 24, 1, 1).expand(2, 24, 9, 9)
    weight = torch.zeros(12, 24 // spec.groups, 3, 3)
    weight[:, :, 1, 1] = 1.0
    for k in (1, 3, 5):
        _compare(pruned, unpruned, x.contiguous(), weight, spec, k, reference=True)


def test_tie_at_the_bound_goes_to_the_lower_index(pruned, unpruned):
    """Source 0 scores exactly its bound's real value (a constant plane under one tap), and so
    do sources 1..5, whose (looser) bounds put them first: t = 1 equals source 0's bound, and
    the tie rule keeps source 0 and drops source 5."""
    x = torch.zeros(1, 8, 6, 6)
    x[0, 0] = 1.0
    x[0, 1:6, :, ::2] = 1.0  # every other column: the two taps below never both read a 1
    x[0, 6:] = 0.25
    weight = torch.zeros(1, 8, 3, 3)
    weight[0, 0, 0, 0] = 1.0
    weight[0, 1:, 0, 0] = weight[0, 1:, 0, 1] = 1.0
    labels = torch.zeros(1, dtype=torch.int64)
    for backend in (pruned, unpruned, REF):
        counts = torch.zeros(1, 1, 8, dtype=torch.int32)
        backend.influence_update(x, weight, ConvSpec(), labels, counts, 5)
        assert counts.view(-1).tolist() == [1, 1, 1, 1, 1, 0, 0, 0], backend.name


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["positive", "negative"])
def test_one_signed_weights(pruned, unpruned, sign):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 30, 11, 11, generator=g)
    weight = sign * torch.rand(20, 30, 3, 3, generator=g)
    for spec in SPECS[:3]:
        _compare(pruned, unpruned, x, weight, spec, reference=True)
        _compare(pruned, unpruned, x.clamp(min=0), weight, spec, reference=True)


@pytest.mark.parametrize("fill", [0.0, 1.5, -2.0], ids=["zeros", "positive", "negative"])
def test_all_equal_inputs(pruned, unpruned, fill):
    x = torch.full((2, 30, 8, 8), fill)
    weight = torch.randn(20, 30, 3, 3, generator=torch.Generator().manual_seed(4))
    for spec in SPECS:
        _compare(pruned, unpruned, x, weight[:, : 30 // spec.groups].contiguous(), spec, reference=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("scale", [1e-30, 1e-40, 1e17, 1e30], ids=lambda s: f"{s:g}")
def test_extreme_magnitudes(pruned, unpruned, dtype, scale):
    """Tiny (subnormal products) and huge (products near or past float32's range) values."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 30, 9, 9, generator=g, dtype=torch.float64)
    x[:, ::3] *= scale  # mixed magnitudes: a third of the sources scaled
    weight = torch.randn(20, 30, 3, 3, generator=g, dtype=torch.float64) * scale
    _compare(pruned, unpruned, x.to(dtype), weight.to(dtype), SPECS[0])


def test_every_source_kept_computes_no_score(pruned, unpruned):
    x = torch.randn(2, 12, 7, 7, generator=torch.Generator().manual_seed(6))
    weight = torch.randn(10, 6, 3, 3, generator=torch.Generator().manual_seed(6))
    assert _compare(pruned, unpruned, x, weight, ConvSpec(groups=2), k=6) == (0, 2 * 10 * 6)
