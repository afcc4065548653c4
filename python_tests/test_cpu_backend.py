"""The native CPU backend against the float64 torch reference: counts must be equal, exactly.

Random continuous data (fixed seeds) has no near-ties, so any difference is a bug. Inputs in
low precision go to the reference unchanged (it converts them itself), and the same
tensor (NCHW, channels_last or a strided view) is read in place by the C++ kernels.
"""

import pytest
import torch

from summit_fast._native import import_error, native
from summit_fast.backends import get_backend, unavailable_reason
from summit_fast.backends.torch_ref import TorchBackend
from summit_fast.convspec import ConvSpec
from summit_fast.rules import mass, topk

pytestmark = pytest.mark.skipif(native is None, reason=f"summit_fast._C is not built: {import_error}")

REF = TorchBackend(compute_dtype=torch.float64)
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "f64": torch.float64}


@pytest.fixture(scope="module")
def cpu():
    return get_backend("cpu", "cpu")


def _layout(t, layout):
    """The same values in another memory layout: NCHW, channels_last, or a strided view
    (a transposed, column-sliced buffer) that is neither."""
    if layout == "nhwc":
        return t.to(memory_format=torch.channels_last)
    if layout == "strided":
        b, c, h, w = t.shape
        buf = torch.empty(b, w, 2 * c, h, dtype=t.dtype)
        view = buf[:, :, ::2].permute(0, 2, 3, 1)
        view.copy_(t)
        return view
    return t


def _random(shape, dtype, layout, seed):
    g = torch.Generator().manual_seed(seed)
    return _layout(torch.randn(shape, generator=g).to(dtype), layout)


def _labels(batch, num_classes, seed):
    return torch.randint(0, num_classes, (batch,), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ availability
def test_registry_picks_cpu_for_cpu_tensors():
    assert unavailable_reason("cpu", "cpu") is None
    assert get_backend("auto", "cpu").name == "cpu"
    assert unavailable_reason("cpu", "meta") == "the cpu backend runs on CPU tensors; got meta"


# ------------------------------------------------------------------------------ activation (SPEC.md A)
RULES = [mass(0.01), mass(0.3), mass(1.0), topk(1), topk(5), topk(20), topk(60)]  # 20: k > 16 path; 60 > C


@pytest.mark.parametrize("shape", [(5, 50, 7, 7), (1, 50, 13, 13), (3, 50, 28, 28), (2, 130, 3, 5)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
@pytest.mark.parametrize("num_classes", [3, 1000])
def test_activation_matches_reference(cpu, shape, dtype, layout, num_classes):
    acts = _random(shape, DTYPES[dtype], layout, seed=sum(shape))
    labels = _labels(shape[0], num_classes, seed=shape[1])
    excluded = torch.zeros(shape[1], dtype=torch.bool)
    excluded[[0, 7, shape[1] - 1]] = True
    for rule in RULES:
        for excl in (None, excluded):
            want = torch.zeros(num_classes, shape[1], dtype=torch.int32)
            got = torch.zeros_like(want)
            REF.activation_update(acts, labels, want, rule, excl)
            cpu.activation_update(acts, labels, got, rule, excl)
            assert want.sum() > 0
            assert torch.equal(got, want), f"{rule}, excluded={excl is not None}: {(got - want).abs().sum()} differ"


def test_activation_no_positive_mass_selects_nothing(cpu):
    acts = -torch.rand(4, 50, 7, 7) - 0.1
    counts = torch.zeros(3, 50, dtype=torch.int32)
    cpu.activation_update(acts, torch.tensor([0, 1, 2, 0]), counts, mass(0.01))
    assert counts.sum() == 0
    cpu.activation_update(acts, torch.tensor([0, 1, 2, 0]), counts, topk(3))  # top-k still picks
    want = torch.zeros_like(counts)
    REF.activation_update(acts, torch.tensor([0, 1, 2, 0]), want, topk(3))
    assert torch.equal(counts, want)


def test_activation_counts_accumulate_across_calls(cpu):
    want = torch.zeros(3, 50, dtype=torch.int32)
    got = torch.zeros_like(want)
    for seed in range(3):
        acts = _random((4, 50, 13, 13), torch.float32, "nchw", seed)
        labels = _labels(4, 3, seed)
        REF.activation_update(acts, labels, want, mass(0.05))
        cpu.activation_update(acts, labels, got, mass(0.05))
    assert torch.equal(got, want) and int(want.sum()) > 12


# ------------------------------------------------------------------------------ influence (SPEC.md B)
# (name, C_out, kh, kw, ConvSpec): 1x1 (with padding that the sampled grid reads), kxk with
# stride, dilation, groups, depthwise (with a channel multiplier), every padding mode,
# asymmetric "same" padding, non-square kernels. Groups with 1-3 targets per source take the
# kernel's direct path at stride 1 (7 px in float64, 28 px), the others im2col tiles.
CONVS = [
    ("1x1", 30, 1, 1, ConvSpec()),
    ("1x1_s2_p1", 30, 1, 1, ConvSpec(stride=(2, 2), pad=(1, 1, 1, 1))),
    ("1x1_g2_replicate", 30, 1, 1, ConvSpec(pad=(1, 2, 1, 0), groups=2, padding_mode="replicate")),
    ("3x3_p1", 30, 3, 3, ConvSpec(pad=(1, 1, 1, 1))),
    ("3x3_s2_p1", 30, 3, 3, ConvSpec(stride=(2, 2), pad=(1, 1, 1, 1))),
    ("3x3_g2_d2", 30, 3, 3, ConvSpec(dilation=(2, 2), groups=2)),
    ("3x3_depthwise", 50, 3, 3, ConvSpec(pad=(1, 1, 1, 1), groups=50)),
    ("3x3_depthwise_x2_s2", 100, 3, 3, ConvSpec(stride=(2, 2), pad=(1, 1, 1, 1), groups=50)),
    ("3x3_g5_x2", 10, 3, 3, ConvSpec(pad=(1, 1, 1, 1), groups=5)),
    ("5x5_g5_x3_d2_replicate", 15, 5, 5, ConvSpec(pad=(4, 4, 4, 4), dilation=(2, 2), groups=5, padding_mode="replicate")),
    ("5x5_p2", 30, 5, 5, ConvSpec(pad=(2, 2, 2, 2))),
    ("5x5_p2_reflect", 30, 5, 5, ConvSpec(pad=(2, 2, 2, 2), padding_mode="reflect")),
    ("3x3_circular", 30, 3, 3, ConvSpec(pad=(1, 1, 1, 1), padding_mode="circular")),
    ("2x2_same", 30, 2, 2, ConvSpec(pad=(0, 1, 0, 1))),
    ("1x3_s12", 30, 1, 3, ConvSpec(stride=(1, 2), pad=(1, 1, 0, 0))),
]


def _check_influence(cpu, x, c_out, kh, kw, conv, num_classes, k, spatial_stride, seed):
    c_in = x.shape[1]
    weight = torch.randn(c_out, c_in // conv.groups, kh, kw, generator=torch.Generator().manual_seed(seed))
    labels = _labels(x.shape[0], num_classes, seed)
    want = torch.zeros(num_classes, c_out, c_in // conv.groups, dtype=torch.int32)  # sources within the group
    got = torch.zeros_like(want)
    REF.influence_update(x, weight, conv, labels, want, k, spatial_stride)
    cpu.influence_update(x, weight, conv, labels, got, k, spatial_stride)
    assert int(want.sum()) == x.shape[0] * c_out * min(k, c_in // conv.groups)
    assert torch.equal(got, want), f"{(got - want).abs().sum()} counts differ"


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: c[0])
@pytest.mark.parametrize("size, spatial_stride", [(7, 1), (13, 3)], ids=["7px", "13px_r3"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_influence_matches_reference(cpu, conv, size, spatial_stride, dtype, layout):
    name, c_out, kh, kw, spec = conv
    x = _random((2, 50, size, size), DTYPES[dtype], layout, seed=size + c_out + kh)
    _check_influence(cpu, x, c_out, kh, kw, spec, 3, 5, spatial_stride, seed=len(name))


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: c[0])
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
def test_influence_large_grid_batch_one_many_classes(cpu, conv, layout):
    name, c_out, kh, kw, spec = conv
    x = _random((1, 50, 28, 28), torch.float32, layout, seed=kh * kw)
    for spatial_stride in (1, 3):
        _check_influence(cpu, x, c_out, kh, kw, spec, 1000, 5, spatial_stride, seed=len(name))


@pytest.mark.parametrize("k", [1, 3, 20, 25, 100])  # 20: the k > 16 path; 25 = a group's sources; 100: all
@pytest.mark.parametrize("kernel", [1, 3])
def test_influence_k(cpu, k, kernel):
    x = _random((3, 50, 13, 13), torch.float32, "nchw", seed=k)
    spec = ConvSpec(pad=(kernel // 2,) * 4, groups=2)
    _check_influence(cpu, x, 30, kernel, kernel, spec, 3, k, 1, seed=k + kernel)


def test_influence_counts_accumulate_and_float64_weight(cpu):
    spec = ConvSpec(pad=(1, 1, 1, 1))
    want = torch.zeros(3, 30, 50, dtype=torch.int32)
    got = torch.zeros_like(want)
    for seed in range(3):
        x = _random((2, 50, 13, 13), torch.float32, "nchw", seed)
        weight = torch.randn(30, 50, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        labels = _labels(2, 3, seed)
        REF.influence_update(x, weight, spec, labels, want, 5, 1)
        cpu.influence_update(x, weight, spec, labels, got, 5, 1)
    assert torch.equal(got, want) and int(want.sum()) == 3 * 2 * 30 * 5


# ------------------------------------------------------------------------------ bad arguments
def _raises_unchanged(exc, match, fn, counts):
    before = counts.clone()
    with pytest.raises(exc, match=match):
        fn()
    assert torch.equal(counts, before)


def test_activation_bad_arguments_raise_before_writing(cpu):
    acts = torch.randn(2, 50, 7, 7)
    counts = torch.ones(3, 50, dtype=torch.int32)
    labels = torch.tensor([0, 2])
    cases = [
        (TypeError, "float32, float16", lambda: cpu.activation_update(acts.int(), labels, counts, mass())),
        (ValueError, "4-D", lambda: cpu.activation_update(acts[0], labels, counts, mass())),
        (ValueError, "counts must have shape", lambda: cpu.activation_update(acts[:, :40], labels, counts, mass())),
        (TypeError, "int32", lambda: cpu.activation_update(acts, labels, counts.long(), mass())),
        (ValueError, "out of range", lambda: cpu.activation_update(acts, torch.tensor([0, 3]), counts, mass())),
        (ValueError, "out of range", lambda: cpu.activation_update(acts, torch.tensor([-1, 0]), counts, mass())),
        (ValueError, r"shape \(2,\)", lambda: cpu.activation_update(acts, torch.tensor([0, 1, 2]), counts, mass())),
        (TypeError, "integer dtype", lambda: cpu.activation_update(acts, labels.float(), counts, mass())),
        (ValueError, "excluded", lambda: cpu.activation_update(acts, labels, counts, mass(), torch.zeros(3, dtype=torch.bool))),
        (TypeError, "rule must be", lambda: cpu.activation_update(acts, labels, counts, "mass")),
    ]
    for exc, match, fn in cases:
        _raises_unchanged(exc, match, fn, counts)


def test_influence_bad_arguments_raise_before_writing(cpu):
    x = torch.randn(2, 50, 7, 7)
    weight = torch.randn(30, 50, 3, 3)
    counts = torch.ones(3, 30, 50, dtype=torch.int32)
    labels = torch.tensor([0, 2])
    spec = ConvSpec(pad=(1, 1, 1, 1))
    cases = [
        (TypeError, "float32, float16", lambda: cpu.influence_update(x.int(), weight, spec, labels, counts)),
        (ValueError, "4-D", lambda: cpu.influence_update(x, weight[:, :, 0], spec, labels, counts)),
        (ValueError, "does not fit", lambda: cpu.influence_update(x, weight[:, :40], spec, labels, counts)),
        (ValueError, "counts must have shape", lambda: cpu.influence_update(x, weight[:20], spec, labels, counts)),
        (ValueError, "out of range", lambda: cpu.influence_update(x, weight, spec, torch.tensor([3, 0]), counts)),
        (ValueError, "positive int", lambda: cpu.influence_update(x, weight, spec, labels, counts, k=0)),
        (ValueError, "spatial_stride", lambda: cpu.influence_update(x, weight, spec, labels, counts, 5, 0)),
        (ValueError, "smaller than", lambda: cpu.influence_update(x[:, :, :2, :2], weight, ConvSpec(), labels, counts)),
        (ValueError, "too wide", lambda: cpu.influence_update(
            x, weight, ConvSpec(pad=(7, 7, 1, 1), padding_mode="reflect"), labels, counts)),
    ]
    for exc, match, fn in cases:
        _raises_unchanged(exc, match, fn, counts)


def test_native_entry_points_validate_their_arguments():
    """Direct calls into _C (bypassing the Python checks) are refused, not run on bad data."""
    acts = torch.randn(2, 5, 3, 3)
    counts = torch.zeros(3, 5, dtype=torch.int32)
    labels = torch.tensor([0, 7])
    args = dict(acts=acts.data_ptr(), dtype="float32", shape=(2, 5, 3, 3), strides=acts.stride(),
                labels=labels.data_ptr(), counts=counts.data_ptr(), num_classes=3, rule="mass", tau=0.01, k=0,
                excluded=0)
    with pytest.raises(ValueError, match="class index 7 is out of range"):
        native.cpu_activation_update(**args)
    labels[1] = 1
    with pytest.raises(TypeError, match="unsupported dtype 'int8'"):
        native.cpu_activation_update(**{**args, "dtype": "int8"})
    with pytest.raises(ValueError, match="unknown rule"):
        native.cpu_activation_update(**{**args, "rule": "median"})
    with pytest.raises(ValueError, match="null data pointer"):
        native.cpu_activation_update(**{**args, "acts": 0})
    with pytest.raises(ValueError, match=">= 1"):
        native.cpu_activation_update(**{**args, "shape": (2, 5, 0, 3)})
    assert counts.sum() == 0
    native.cpu_activation_update(**args)
    assert counts.sum() > 0
