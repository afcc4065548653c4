"""The CUDA influence kernels (csrc/cuda/influence.cu, SPEC.md B) against the float64 torch
reference, exact integer counts. Here they run on the CPU (``CudaBackend(emulate=True)``: the
same kernel source executed by csrc/cuda/emulation.h); on a machine with a GPU the same grid
also runs compiled, and its counts must equal the emulated ones on the same inputs.

Random continuous data (fixed seeds) has no near-ties, so any difference is a bug. Emulated
kernels are slow: the grids are small, but every path of the kernels is crossed (1x1 shortcut,
kxk with one and four targets a thread, several target tiles, several and partial position
tiles, k >= the group's sources).
"""

import pytest
import torch

from summit_fast._native import import_error, native
from summit_fast.backends.cuda import CudaBackend
from summit_fast.convspec import ConvSpec
from test_cpu_backend import CONVS, DTYPES, REF, _labels, _random
from test_cpu_backend import test_influence_counts_accumulate_and_float64_weight as accumulate_and_float64_weight

pytestmark = pytest.mark.skipif(native is None, reason=f"summit_fast._C is not built: {import_error}")

EMULATED = CudaBackend(emulate=True, prune=True)  # pruned kxk scores
EMULATED_ALL = CudaBackend(emulate=True, prune=False)  # every score
HAVE_GPU = native is not None and native.with_cuda and torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason="needs a CUDA device")

# A subset of test_cpu_backend's CONVS for the dtype x layout grid, one per kernel that reads
# the input: the grouped 1x1 shortcut reading replicate padding (extrema_kernel), a depthwise
# conv with a channel multiplier at stride 2 and a dense strided 3x3 (kxk_scores_kernel with one
# and with four targets a thread).
DTYPE_CONVS = [c for c in CONVS if c[0] in ("1x1_g2_replicate", "3x3_depthwise_x2_s2", "3x3_s2_p1")]


def _counts(backend, x, weight, spec, labels, num_classes, k, spatial_stride, dtype=torch.int32):
    counts = torch.zeros(num_classes, weight.shape[0], weight.shape[1], dtype=dtype, device=x.device)
    backend.influence_update(x, weight, spec, labels.to(x.device), counts, k, spatial_stride)
    return counts.cpu()


def _on_gpu(t):
    """The same values on the GPU in the same strides (a strided view included)."""
    out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cuda")
    return out.copy_(t)


def _check(x, c_out, kh, kw, spec, num_classes=3, k=5, spatial_stride=1, seed=0, dtype=torch.int32, labels=None,
           unpruned=False):
    """Emulated counts (pruned; and every score computed too if `unpruned`) equal the
    reference's; returns the inputs for a GPU rerun."""
    weight = torch.randn(c_out, x.shape[1] // spec.groups, kh, kw, generator=torch.Generator().manual_seed(seed))
    labels = _labels(x.shape[0], num_classes, seed) if labels is None else labels
    want = _counts(REF, x, weight, spec, labels, num_classes, k, spatial_stride, dtype)
    assert int(want.sum()) == x.shape[0] * c_out * min(k, x.shape[1] // spec.groups)
    for backend in (EMULATED, EMULATED_ALL) if unpruned else (EMULATED,):
        got = _counts(backend, x, weight, spec, labels, num_classes, k, spatial_stride, dtype)
        assert torch.equal(got, want), f"{(got.int() - want.int()).abs().sum()} counts differ (prune={backend.prune})"
    return weight, labels, got


# ------------------------------------------------------------------------------ emulated (CPU)
@pytest.mark.parametrize("conv", CONVS, ids=lambda c: c[0])
@pytest.mark.parametrize("size, spatial_stride, layout", [(7, 1, "nchw"), (13, 3, "strided")],
                         ids=["7px", "13px_r3_strided"])
def test_cuda_influence_matches_reference(conv, size, spatial_stride, layout):
    name, c_out, kh, kw, spec = conv
    x = _random((2, 50, size, size), torch.float32, layout, seed=size + c_out + kh)
    _check(x, c_out, kh, kw, spec, spatial_stride=spatial_stride, seed=len(name))


@pytest.mark.parametrize("conv", [c for c in CONVS if c[2] * c[3] > 1 and 50 // c[4].groups > 5], ids=lambda c: c[0])
def test_cuda_influence_pruned_equals_unpruned_and_reference(conv):
    """kxk convs: the pruned kernels (two rounds of scores) count as computing every score and
    as the float64 reference; the stats count each computed score once."""
    name, c_out, kh, kw, spec = conv
    x = _random((2, 50, 7, 7), torch.float32, "nchw", seed=c_out + kh)
    x[:, ::2] = x[:, ::2].clamp(min=0)  # ReLU-like sources: exact zeros, one-signed planes
    _check(x, c_out, kh, kw, spec, seed=len(name), unpruned=True)
    exact, total = EMULATED.last_influence_stats
    assert 0 < exact <= total == EMULATED_ALL.last_influence_stats[0] == 2 * c_out * 50 // spec.groups


@pytest.mark.parametrize("conv", DTYPE_CONVS, ids=lambda c: c[0])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])  # strided views: test_cuda_influence_matches_reference
def test_cuda_influence_dtypes_and_layouts(conv, dtype, layout):
    name, c_out, kh, kw, spec = conv
    x = _random((2, 50, 7, 7), DTYPES[dtype], layout, seed=c_out + kh)
    _check(x, c_out, kh, kw, spec, seed=len(name))


@pytest.mark.parametrize("conv", [c for c in CONVS if c[0] in ("1x1", "3x3_s2_p1", "3x3_depthwise", "5x5_p2")],
                         ids=lambda c: c[0])
def test_cuda_influence_large_grid_batch_one_last_class(conv):
    """28x28: several position tiles, the last one partial; the label is num_classes - 1."""
    name, c_out, kh, kw, spec = conv
    x = _random((1, 50, 28, 28), torch.float32, "nhwc", seed=kh * kw)
    for spatial_stride in (1, 3):
        _check(x, c_out, kh, kw, spec, 1000, spatial_stride=spatial_stride, seed=len(name), labels=torch.tensor([999]))


def test_cuda_influence_wide_rows_and_many_targets():
    """A row wider than a block's positions (column tiles), 70 targets of a group (three target
    tiles, the last partial) and 40 sources (two for some lanes of the top-k warp)."""
    x = _random((1, 40, 2, 300), torch.float32, "nchw", seed=5)
    _check(x, 70, 3, 3, ConvSpec(pad=(1, 1, 1, 1)), seed=6)
    _check(x, 70, 1, 1, ConvSpec(stride=(1, 2)), seed=7)


def test_cuda_influence_large_dilation_float64_shrinks_tiles():
    """A receptive field of 37x37 in float64: the position tiles shrink to fit shared memory."""
    x = _random((1, 6, 52, 52), torch.float64, "nchw", seed=8)
    _check(x, 8, 7, 7, ConvSpec(dilation=(6, 6), pad=(2, 2, 2, 2)), seed=9)


@pytest.mark.parametrize("k", [1, 3, 20, 25, 100])  # 25 = a group's sources; 100: all
@pytest.mark.parametrize("kernel", [1, 3])
def test_cuda_influence_k(k, kernel):
    x = _random((3, 50, 13, 13), torch.float32, "nchw", seed=k)
    spec = ConvSpec(pad=(kernel // 2,) * 4, groups=2)
    _check(x, 30, kernel, kernel, spec, k=k, seed=k + kernel, unpruned=True)
    total = 3 * 30 * 25
    assert EMULATED_ALL.last_influence_stats == ((0 if k >= 25 else total), total)
    exact, all_scores = EMULATED.last_influence_stats
    assert all_scores == total
    assert exact == 0 if k >= 25 else (exact == total if kernel == 1 else 0 < exact <= total)  # kxk: pruned


@pytest.mark.parametrize("kernel", [1, 3])
def test_cuda_influence_int16_counts(kernel):
    x = _random((3, 50, 13, 13), torch.float32, "nhwc", seed=11)
    spec = ConvSpec(pad=(kernel // 2,) * 4, groups=5)
    _check(x, 20, kernel, kernel, spec, seed=12, dtype=torch.int16)
    _check(x, 20, kernel, kernel, spec, k=10, seed=13, dtype=torch.int16)  # k = the group's sources


def test_cuda_influence_int16_counts_in_place_of_a_larger_count():
    """int16 counts are added in place by a 32-bit compare-and-swap: the neighbours sharing a
    word keep their values, large counts included."""
    x = _random((2, 4, 5, 5), torch.float32, "nchw", seed=14)
    weight = torch.randn(3, 4, 3, 3, generator=torch.Generator().manual_seed(15))
    labels = torch.tensor([1, 1])
    want = torch.full((2, 3, 4), 30000, dtype=torch.int16)
    got = want.clone()
    REF.influence_update(x, weight, ConvSpec(), labels, want, 2, 1)
    EMULATED.influence_update(x, weight, ConvSpec(), labels, got, 2, 1)
    assert torch.equal(got, want) and int(want[1].sum()) == 30000 * 12 + 2 * 3 * 2


@pytest.mark.parametrize("kernel", [1, 3])
def test_cuda_influence_ties_take_the_lower_source(kernel):
    """Sources with equal scores (copies of one plane, equal weights): the lowest indices win."""
    plane = torch.randn(1, 1, 9, 9, generator=torch.Generator().manual_seed(16))
    x = plane.repeat(2, 12, 1, 1)
    weight = torch.randn(6, 1, kernel, kernel, generator=torch.Generator().manual_seed(17)).repeat(1, 12, 1, 1)
    labels = torch.tensor([0, 1])
    want = torch.zeros(2, 6, 12, dtype=torch.int32)
    got = torch.zeros_like(want)
    REF.influence_update(x, weight, ConvSpec(pad=(1, 1, 1, 1)), labels, want, 4, 1)
    EMULATED.influence_update(x, weight, ConvSpec(pad=(1, 1, 1, 1)), labels, got, 4, 1)
    assert torch.equal(got, want)
    assert int(got[:, :, :4].sum()) == 2 * 6 * 4  # the first four sources of every target


def test_cuda_influence_counts_accumulate_and_float64_weight():
    accumulate_and_float64_weight(EMULATED)  # test_cpu_backend's check, on the cuda backend


def test_cuda_influence_too_large_a_receptive_field_is_one_clear_error():
    x = torch.randn(1, 2, 130, 130)
    weight = torch.randn(3, 2, 3, 3)
    counts = torch.zeros(1, 3, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"reads more input per output than .* use backend 'cpu' or 'torch'"):
        EMULATED.influence_update(x, weight, ConvSpec(dilation=(60, 60)), torch.tensor([0]), counts, 1, 1)
    assert counts.sum() == 0


# ------------------------------------------------------------------------------ compiled (GPU)
GPU_CASES = [(c, size, r) for c in CONVS for size, r in [(7, 1), (13, 3)]]


@needs_gpu
@pytest.mark.parametrize("conv, size, spatial_stride", GPU_CASES, ids=lambda v: v[0] if isinstance(v, tuple) else str(v))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
def test_cuda_influence_on_gpu_matches_reference_and_emulation(conv, size, spatial_stride, dtype, layout):
    name, c_out, kh, kw, spec = conv
    x = _random((2, 50, size, size), DTYPES[dtype], layout, seed=size + c_out + kh)
    weight, labels, emulated = _check(x, c_out, kh, kw, spec, spatial_stride=spatial_stride, seed=len(name))
    for prune in (True, False):
        gpu = _counts(CudaBackend(prune=prune), _on_gpu(x), weight.cuda(), spec, labels, 3, 5, spatial_stride)
        assert torch.equal(gpu, emulated), f"prune={prune}"


@needs_gpu
@pytest.mark.parametrize("k", [1, 20, 25])
@pytest.mark.parametrize("count_dtype", [torch.int32, torch.int16], ids=str)
def test_cuda_influence_on_gpu_k_and_count_types(k, count_dtype):
    x = _random((3, 50, 28, 28), torch.float32, "nhwc", seed=k)
    for kernel in (1, 3):
        spec = ConvSpec(pad=(kernel // 2,) * 4, groups=2)
        weight, labels, emulated = _check(x, 30, kernel, kernel, spec, 1000, k=k, seed=k, dtype=count_dtype)
        gpu = _counts(CudaBackend(), _on_gpu(x), weight.cuda(), spec, labels, 1000, k, 1, count_dtype)
        assert torch.equal(gpu, emulated)
