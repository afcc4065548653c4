"""The Triton backend against the float64 torch reference: counts must be equal, exactly.

Without a GPU the kernels run through the Triton interpreter on CPU tensors (conftest.py sets
TRITON_INTERPRET=1), on small float32 shapes with few programs. On a GPU the same cases run
compiled, plus half-precision inputs and InceptionV1-sized shapes.
"""

import os

import pytest
import torch

pytest.importorskip("triton")

import summit_fast  # noqa: E402
from summit_fast.backends import get_backend  # noqa: E402
from summit_fast.backends.torch_ref import TorchBackend  # noqa: E402
from summit_fast.backends.triton import TritonBackend  # noqa: E402
from summit_fast.convspec import ConvSpec  # noqa: E402
from summit_fast.rules import mass, topk  # noqa: E402
from tiny_models import TinyInception, TinySequential  # noqa: E402

GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if GPU else "cpu")
if not GPU and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and the Triton interpreter is off (TRITON_INTERPRET != 1)", allow_module_level=True)
gpu_only = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU: half precision and large shapes are not run "
                                               "through the Triton interpreter")

K = 4  # classes
REF = TorchBackend(compute_dtype=torch.float64)
RULES = [mass(0.01), mass(1.0), topk(1), topk(7)]


@pytest.fixture(scope="module")
def triton_backend():
    return get_backend("triton", DEVICE)


def _layout(t, channels_last):
    return t.to(memory_format=torch.channels_last) if channels_last else t


def _check_activation(backend, batches, rule, excluded=None):
    """All batches go into the same counts: with two, this also checks that the kernel's
    per-launch state (the completion counters) resets."""
    c = batches[0][0].shape[1]
    got = torch.zeros(K, c, dtype=torch.int32, device=DEVICE)
    want = torch.zeros(K, c, dtype=torch.int32)
    for acts, labels in batches:
        backend.activation_update(acts, labels, got, rule, excluded)
        REF.activation_update(acts.cpu(), labels.cpu(), want, rule, None if excluded is None else excluded.cpu())
    assert want.sum() > 0
    assert torch.equal(got.cpu(), want), f"{rule}: {(got.cpu() - want).abs().sum()} counts differ"


def _check_influence(backend, x, weight, conv, labels, k, spatial_stride):
    c_out, cin_g = weight.shape[:2]
    got = torch.zeros(K, c_out, cin_g, dtype=torch.int32, device=DEVICE)
    want = torch.zeros(K, c_out, cin_g, dtype=torch.int32)
    backend.influence_update(x, weight, conv, labels, got, k, spatial_stride)
    REF.influence_update(x.cpu(), weight.cpu(), conv, labels.cpu(), want, k, spatial_stride)
    assert int(want.sum()) == x.shape[0] * c_out * min(k, cin_g)
    assert torch.equal(got.cpu(), want), f"{(got.cpu() - want).abs().sum()} counts differ"


# ------------------------------------------------------------------------------ availability
def test_unavailable_reasons(monkeypatch):
    assert TritonBackend.unavailable_reason(DEVICE) is None
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert TritonBackend.unavailable_reason(torch.device("cpu")) == "triton needs a CUDA device; got cpu"


# ------------------------------------------------------------------------------ activation (SPEC.md A)
# Several channel blocks per image: 130 channels in channels_last, 37 x 23x29 positions in NCHW.
ACT_SHAPES = [(3, 37, 7, 9), (1, 5, 1, 1), (1, 130, 5, 3), (2, 37, 23, 29)]


@pytest.mark.parametrize("shape", ACT_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_activation_matches_reference(triton_backend, shape, channels_last):
    g = torch.Generator().manual_seed(sum(shape))
    batches = [(_layout(torch.randn(shape, generator=g), channels_last).to(DEVICE),
                torch.randint(0, K, (shape[0],), generator=g).to(DEVICE)) for _ in range(2)]
    for rule in RULES:
        _check_activation(triton_backend, batches, rule)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_activation_excluded_channels(triton_backend, channels_last):
    g = torch.Generator().manual_seed(8)
    batches = [(_layout(torch.randn(3, 37, 7, 9, generator=g), channels_last).to(DEVICE),
                torch.randint(0, K, (3,), generator=g).to(DEVICE))]
    excluded = (torch.rand(37, generator=g) < 0.2).to(DEVICE)
    for rule in (mass(0.2), topk(3)):
        _check_activation(triton_backend, batches, rule, excluded)


def test_activation_exact_ties_zero_and_negative_images(triton_backend):
    # Small integers tie often (as ReLU6 saturation does): ties go to the lower channel.
    g = torch.Generator().manual_seed(1)
    acts = torch.randint(-3, 4, (4, 29, 3, 5), generator=g).float()
    acts[1] = 0.0  # T = 0: the mass rule selects nothing
    acts[2] = -acts[2].abs() - 1  # all negative: only top-k selects
    labels = torch.tensor([0, 1, 1, 3], dtype=torch.int32)  # labels of any integer dtype, repeated
    for rule in RULES:
        _check_activation(triton_backend, [(acts.to(DEVICE), labels.to(DEVICE))], rule)


def test_activation_strided_view(triton_backend):
    g = torch.Generator().manual_seed(2)
    base = torch.randn(3, 40, 9, 8, generator=g)
    acts = base[:, 1::2, 2:, ::3]  # neither NCHW- nor channels_last-contiguous
    labels = torch.tensor([2, 0, 2])
    for rule in (mass(0.01), topk(4)):
        _check_activation(triton_backend, [(acts.to(DEVICE), labels.to(DEVICE))], rule)


# Tile sizes change how work is split between programs, never the counts.
OTHER_TILES = [dict(num_warps=4, reduce_tile=64), dict(reduce_tile=16, score_tile=64, product_tile=256),
               dict(score_tile=512, dot_positions=16, dot_targets=16)]


@pytest.mark.parametrize("tiles", OTHER_TILES, ids=lambda t: ",".join(f"{k}={v}" for k, v in t.items()))
def test_other_tile_sizes_give_the_same_counts(triton_backend, tiles):
    from summit_fast.kernels.common import override_tiles

    g = torch.Generator().manual_seed(9)
    with override_tiles(**tiles):
        for channels_last in (False, True):
            batches = [(_layout(torch.randn(2, 37, 5, 7, generator=g), channels_last).to(DEVICE),
                        torch.randint(0, K, (2,), generator=g).to(DEVICE))]
            for rule in (mass(0.01), topk(3)):
                _check_activation(triton_backend, batches, rule)
        labels = torch.randint(0, K, (2,), generator=g).to(DEVICE)
        for c_in, c_out, kernel, groups in ((12, 40, 1, 1), (6, 40, 3, 1), (8, 8, 3, 8)):
            x = torch.randn(2, c_in, 7, 6, generator=g).to(DEVICE)
            weight = torch.randn(c_out, c_in // groups, kernel, kernel, generator=g).to(DEVICE)
            conv = ConvSpec(pad=(kernel // 2,) * 4, groups=groups)
            _check_influence(triton_backend, x, weight, conv, labels, 3, 1)


def test_tiles_are_checked():
    from summit_fast.kernels.common import TILES, override_tiles

    with pytest.raises(ValueError, match="Tiles.dot_positions must be a power of two >= 16, got 8"):
        with override_tiles(dot_positions=8):
            pass
    with pytest.raises(ValueError, match="Tiles.score_tile must be a power of two"):
        with override_tiles(score_tile=3000):
            pass
    with pytest.raises(ValueError, match="Tiles.num_warps must be a power of two >= 1, got True"):
        with override_tiles(num_warps=True):
            pass
    with override_tiles(num_warps=4) as tiles:
        assert tiles.num_warps == 4
    with pytest.raises(KeyError):  # restored when the block fails, too
        with override_tiles(score_tile=1024):
            raise KeyError("inside")
    from summit_fast.kernels import common

    assert common.TILES == TILES  # restored


# ------------------------------------------------------------------------------ influence (SPEC.md B)
# (batch, C_in, C_out, H, W, (kh, kw), ConvSpec, k, spatial_stride)
INFLUENCE_CASES = [
    (3, 7, 10, 9, 11, (1, 1), ConvSpec(), 5, 1),
    (2, 12, 18, 9, 7, (1, 1), ConvSpec(stride=(2, 2), pad=(1, 1, 1, 1), groups=3), 2, 1),
    (2, 6, 6, 5, 5, (1, 1), ConvSpec(pad=(2, 2, 2, 2), groups=6), 5, 3),  # depthwise, padding sampled
    (1, 5, 9, 3, 3, (1, 1), ConvSpec(stride=(2, 2), pad=(3, 3, 3, 3)), 3, 3),  # only padding sampled
    (2, 5, 16, 8, 9, (1, 1), ConvSpec(pad=(1, 0, 2, 1), padding_mode="replicate"), 2, 2),
    (2, 6, 20, 9, 11, (3, 3), ConvSpec(pad=(1, 1, 1, 1)), 5, 1),
    (1, 6, 20, 9, 11, (3, 3), ConvSpec(stride=(2, 2), pad=(1, 1, 1, 1)), 5, 3),
    (2, 8, 8, 9, 10, (3, 3), ConvSpec(pad=(1, 1, 1, 1), groups=8), 5, 1),  # depthwise
    (2, 8, 24, 9, 10, (3, 3), ConvSpec(pad=(1, 1, 1, 1), groups=2), 3, 1),
    (1, 4, 17, 12, 13, (5, 5), ConvSpec(pad=(2, 2, 2, 2)), 5, 1),
    (2, 5, 6, 12, 13, (3, 3), ConvSpec(pad=(2, 2, 2, 2), dilation=(2, 2)), 2, 1),
    (2, 5, 16, 8, 9, (3, 3), ConvSpec(pad=(1, 1, 1, 1), padding_mode="reflect"), 2, 1),
    (2, 5, 16, 8, 9, (3, 1), ConvSpec(pad=(0, 0, 1, 1), padding_mode="circular"), 9, 1),  # k > sources
    (2, 3, 18, 7, 8, (3, 3), ConvSpec(stride=(2, 1), pad=(0, 1, 1, 0)), 2, 1),  # asymmetric
]


def _influence_id(case):
    b, c_in, c_out, h, w, (kh, kw), conv, k, r = case
    return f"{kh}x{kw}-{c_in}to{c_out}-{h}x{w}-s{conv.stride[0]}-g{conv.groups}-{conv.padding_mode}-k{k}-r{r}"


@pytest.mark.parametrize("case", INFLUENCE_CASES, ids=_influence_id)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_influence_matches_reference(triton_backend, case, channels_last):
    b, c_in, c_out, h, w, (kh, kw), conv, k, r = case
    g = torch.Generator().manual_seed(c_in * 100 + c_out)
    x = _layout(torch.randn(b, c_in, h, w, generator=g), channels_last)
    weight = torch.randn(c_out, c_in // conv.groups, kh, kw, generator=g)
    labels = torch.randint(0, K, (b,), generator=g)
    _check_influence(triton_backend, x.to(DEVICE), weight.to(DEVICE), conv, labels.to(DEVICE), k, r)


@pytest.mark.parametrize("kernel", [(1, 1), (3, 3)], ids=["1x1", "3x3"])
def test_influence_exact_ties(triton_backend, kernel):
    # Small integers: every score is exact in any precision and ties abound; lower source wins.
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-2, 3, (2, 9, 6, 7), generator=g).float()
    weight = torch.randint(-1, 2, (18, 9, *kernel), generator=g).float()
    labels = torch.tensor([1, 1])
    _check_influence(triton_backend, x.to(DEVICE), weight.to(DEVICE), ConvSpec(pad=(1, 1, 1, 1)),
                     labels.to(DEVICE), 4, 1)


# ------------------------------------------------------------------------------ through aggregate
@pytest.mark.parametrize("net_class", [TinyInception, TinySequential], ids=lambda c: c.__name__)
def test_aggregate_on_triton_equals_torch(net_class):
    # Hooks, concatenation views, bottlenecks, stride, groups and dilation, end to end.
    torch.manual_seed(0)
    net = net_class().eval().to(DEVICE)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(3, 3, 9, 9, generator=g).to(DEVICE), torch.randint(0, 4, (3,), generator=g).to(DEVICE))
               for _ in range(2)]
    got, want = (summit_fast.aggregate(net, batches, backend=name, num_classes=K, progress=False)
                 for name in ("triton", "torch"))
    assert got.activation.keys() == want.activation.keys() and got.influence.keys() == want.influence.keys()
    for counts in ("activation", "influence"):
        for name, expected in getattr(want, counts).items():
            assert expected.sum() > 0
            assert torch.equal(getattr(got, counts)[name], expected), f"{counts} {name}"


@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU: counts CUDA synchronisations")
def test_aggregate_on_gpu_synchronises_a_few_times_per_batch():
    """Every host synchronisation stalls the CPU's queueing of kernels: a batch makes a few
    (label, finite and capacity checks), not one per op (test_hostile.py counts the same on
    the CPU)."""
    import warnings

    torch.manual_seed(0)
    aggregator = summit_fast.Aggregator(TinyInception().eval().to(DEVICE), backend="triton")
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(4, 3, 9, 9, generator=g).to(DEVICE), torch.randint(0, 5, (4,), generator=g).to(DEVICE))
               for _ in range(3)]
    aggregator.update(*batches[0])  # setup, compilation
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for images, labels in batches[1:]:
                aggregator.update(images, labels)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = sum("synchroniz" in str(w.message) for w in caught) / 2
    ops = len(aggregator.result.layers) + len(aggregator.result.edges)
    assert syncs <= 5 < ops, f"{syncs} synchronisations per batch"


# ------------------------------------------------------------------------------ half precision
def _dyadic(shape, scale, g):
    """Multiples of 1/scale, at most 64/scale in size: exact in fp16 and bf16, with products and
    short sums exact in fp32 in any tensor-core mode. So the float64 reference is matched exactly
    at any size, where random floats would meet a rounding-level near-tie somewhere."""
    return torch.randint(-64, 65, shape, generator=g) / scale


HALF = [torch.float16, pytest.param(torch.bfloat16, marks=gpu_only)]  # interpreted bf16 is wrong
HALF_CASES = [INFLUENCE_CASES[1], INFLUENCE_CASES[5], INFLUENCE_CASES[7], INFLUENCE_CASES[9]]


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("weight_fp32", [False, True], ids=["half-weights", "fp32-weights"])
@pytest.mark.parametrize("case", HALF_CASES, ids=_influence_id)
def test_influence_half_inputs(triton_backend, dtype, weight_fp32, case):
    # fp32 weights with half inputs is what autocast hands over: the kernel splits the weights.
    b, c_in, c_out, h, w, (kh, kw), conv, k, r = case
    g = torch.Generator().manual_seed(6)
    x = _dyadic((b, c_in, h, w), 16, g).to(DEVICE, dtype)
    weight = _dyadic((c_out, c_in // conv.groups, kh, kw), 128, g).to(DEVICE, torch.float32 if weight_fp32 else dtype)
    labels = torch.randint(0, K, (b,), generator=g)
    _check_influence(triton_backend, x, weight, conv, labels.to(DEVICE), k, r)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_activation_half_inputs(triton_backend, dtype):
    g = torch.Generator().manual_seed(7)
    batches = [(torch.randn(2, 37, 7, 9, generator=g).to(DEVICE, dtype), torch.tensor([0, 3], device=DEVICE))]
    for rule in (mass(0.01), topk(5)):
        _check_activation(triton_backend, batches, rule)


# ------------------------------------------------------------------------------ GPU only: large shapes
# Each kernel variant compiles once per process (seconds each): shapes, dtypes and layouts are
# paired rather than crossed, so the GPU check stays within its time.
@gpu_only
@pytest.mark.parametrize("shape,dtype,channels_last", [
    ((64, 528, 14, 14), torch.bfloat16, False), ((16, 1024, 7, 7), torch.float16, True),
    ((8, 2048, 7, 7), torch.float32, False), ((32, 192, 28, 28), torch.bfloat16, True),
    ((256, 256, 28, 28), torch.bfloat16, False)], ids=str)
def test_activation_large_on_gpu(triton_backend, shape, dtype, channels_last):
    g = torch.Generator().manual_seed(4)
    batches = [(_layout(torch.randn(shape, generator=g), channels_last).to(DEVICE, dtype),
                torch.randint(0, K, (shape[0],), generator=g).to(DEVICE)) for _ in range(2)]
    for rule in (mass(0.01), mass(0.03), topk(5)):
        _check_activation(triton_backend, batches, rule)


# InceptionV1 mixed4d's edges at 14x14 (pool_reduce has the 1x1 shape), plus a depthwise 3x3.
GPU_INFLUENCE = [
    (8, 512, 112, 14, 14, (1, 1), ConvSpec(), 5, 1),
    (8, 512, 144, 14, 14, (1, 1), ConvSpec(), 5, 3),
    (8, 144, 288, 16, 16, (3, 3), ConvSpec(), 5, 1),  # input pre-padded, as in the model
    (8, 32, 64, 14, 14, (5, 5), ConvSpec(pad=(2, 2, 2, 2)), 5, 1),
    (8, 96, 96, 28, 28, (3, 3), ConvSpec(stride=(2, 2), pad=(1, 1, 1, 1), groups=96), 5, 1),
]


@gpu_only
@pytest.mark.parametrize("dtypes,channels_last", [
    ((torch.float32, torch.float32), False), ((torch.bfloat16, torch.bfloat16), True),
    ((torch.float16, torch.float16), False), ((torch.bfloat16, torch.float32), True)], ids=str)
@pytest.mark.parametrize("case", GPU_INFLUENCE, ids=_influence_id)
def test_influence_large_on_gpu(triton_backend, dtypes, channels_last, case):
    b, c_in, c_out, h, w, (kh, kw), conv, k, r = case
    g = torch.Generator().manual_seed(5)
    x = _layout(_dyadic((b, c_in, h, w), 16, g), channels_last).to(DEVICE, dtypes[0])
    weight = _dyadic((c_out, c_in // conv.groups, kh, kw), 128, g).to(DEVICE, dtypes[1])
    labels = torch.randint(0, K, (b,), generator=g)
    _check_influence(triton_backend, x, weight, conv, labels.to(DEVICE), k, r)


# ------------------------------------------------------------------------------ kxk: bound pruning, padding
def _kxk_counts(x, weight, conv, labels, k, spatial_stride=1, prune=True):
    """Counts of the Triton kxk kernels called directly, and their (scores computed, in all)."""
    from summit_fast.kernels.influence import influence_update

    c_out, cin_g = weight.shape[:2]
    counts = torch.zeros(K, c_out, cin_g, dtype=torch.int32, device=DEVICE)
    stats = influence_update(x.to(DEVICE), weight.to(DEVICE), conv, labels.to(DEVICE), counts, k, spatial_stride,
                             prune=prune, stats=True)
    return counts.cpu(), stats


def _check_pruned(x, weight, conv, k, spatial_stride=1, labels=None):
    """Pruned counts == unpruned counts == the float64 reference's; returns the pruned stats."""
    labels = torch.arange(x.shape[0]) % K if labels is None else labels
    c_out, cin_g = weight.shape[:2]
    want = torch.zeros(K, c_out, cin_g, dtype=torch.int32)
    REF.influence_update(x, weight, conv, labels, want, k, spatial_stride)
    unpruned, (computed, total) = _kxk_counts(x, weight, conv, labels, k, spatial_stride, prune=False)
    assert total == x.shape[0] * c_out * cin_g and computed == (0 if k >= cin_g else total)
    pruned, stats = _kxk_counts(x, weight, conv, labels, k, spatial_stride)
    assert torch.equal(unpruned, want), f"unpruned: {(unpruned - want).abs().sum()} counts differ"
    assert torch.equal(pruned, want), f"pruned: {(pruned - want).abs().sum()} counts differ"
    return stats


# (batch, C_in, C_out, H, W, (kh, kw), ConvSpec, k, spatial_stride): zero padding on every side
# and asymmetric, larger than the kernel's reach, with stride, dilation, spatial_stride and groups.
PADDING_CASES = [
    (2, 6, 20, 5, 7, (3, 3), ConvSpec(pad=(3, 0, 0, 4)), 2, 1),
    (1, 5, 18, 4, 4, (3, 3), ConvSpec(pad=(4, 4, 4, 4)), 3, 1),  # many positions see only padding
    (2, 4, 17, 6, 5, (5, 5), ConvSpec(stride=(2, 3), pad=(2, 1, 0, 3)), 2, 1),
    (1, 6, 16, 8, 9, (3, 3), ConvSpec(pad=(2, 2, 2, 2), dilation=(2, 3)), 3, 2),
    (2, 8, 24, 7, 6, (3, 3), ConvSpec(stride=(2, 2), pad=(1, 2, 2, 1), groups=2), 2, 3),
    (2, 6, 6, 6, 5, (3, 3), ConvSpec(pad=(1, 1, 1, 1), groups=3), 1, 1),  # 2 targets per group: rank-1 path
]


@pytest.mark.parametrize("case", INFLUENCE_CASES + PADDING_CASES, ids=_influence_id)
def test_kxk_pruned_equals_unpruned(case):
    b, c_in, c_out, h, w, (kh, kw), conv, k, r = case
    if kh * kw == 1:
        pytest.skip("1x1 convs use the extrema shortcut")
    g = torch.Generator().manual_seed(c_in * 31 + c_out)
    x = torch.randn(b, c_in, h, w, generator=g)
    x[:, ::2] = x[:, ::2].clamp(min=0)  # ReLU-like planes, with exact zeros
    _check_pruned(x, torch.randn(c_out, c_in // conv.groups, kh, kw, generator=g), conv, k, r)


def test_kxk_pruning_skips_weak_sources():
    # Two strong sources, the others 100x weaker: few scores can reach the top 2.
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 12, 6, 6, generator=g) * 0.01
    x[:, 3] *= 100
    x[:, 8] *= 100
    computed, total = _check_pruned(x, torch.rand(20, 12, 3, 3, generator=g), ConvSpec(pad=(1, 1, 1, 1)), 2)
    assert total == 2 * 20 * 12 and computed < total / 2, (computed, total)


def _adversarial_cases():
    g = torch.Generator().manual_seed(4)
    conv = ConvSpec(pad=(1, 1, 1, 1))
    cases = {"all equal": (torch.ones(2, 9, 5, 5), torch.ones(18, 9, 3, 3), 3)}
    planes = torch.arange(9.0).repeat(2, 1) % 4  # constant planes, repeated values: ties in scores and bounds
    cases["constant planes"] = (planes[:, :, None, None].expand(2, 9, 5, 5).contiguous(),
                                torch.randint(-2, 3, (18, 9, 3, 3), generator=g).float(), 3)
    cases["negative weights only"] = (torch.randint(-3, 4, (2, 9, 5, 5), generator=g).float(),
                                      -torch.randint(1, 4, (18, 9, 3, 3), generator=g).float(), 3)
    cases["k >= sources"] = (torch.randn(2, 4, 5, 5, generator=g), torch.randn(18, 4, 3, 3, generator=g), 4)
    cases["k = sources - 1"] = (torch.randn(2, 4, 5, 5, generator=g), torch.randn(18, 4, 3, 3, generator=g), 3)
    # A bound equal to the k-th score: source 0's plane is constant, so its bound (without the
    # margin) is its score, 8 (8 taps of 1). Spikes 1-5 score 8 too, with bounds 72: round 1
    # scores them, the 5th best is 8, and source 0 must still be scored (>=, not >): the top 5
    # is 0-4. Spikes 6-11 score 4 (bounds 36).
    x = torch.zeros(2, 12, 5, 5)
    x[:, 0] = 1.0
    x[:, 1:6, 2, 2] = 8.0
    x[:, 6:, 1, 3] = 4.0
    weight = torch.ones(6, 12, 3, 3)
    weight[:, 0, 0, 0] = 0.0
    cases["bound ties score"] = (x, weight, 5)
    return cases


@pytest.mark.parametrize("name", list(_adversarial_cases()))
def test_kxk_pruning_adversarial(name):
    x, weight, k = _adversarial_cases()[name]
    computed, total = _check_pruned(x, weight, ConvSpec(pad=(1, 1, 1, 1)), k)
    if k >= weight.shape[1]:
        assert computed == 0  # every source is kept: no score is needed


# ------------------------------------------------------------------------------ kxk: the fp16 weight split
def _old_split(w, dtype):
    """The split before the scale (hi + mid + lo of the weights themselves), for contrast."""
    hi = w.to(dtype)
    rest = w - hi.float()
    mid = rest.to(dtype)
    return hi.double() + mid.double() + (rest - mid.float()).to(dtype).double()


def test_fp16_split_is_exact_for_ordinary_weights():
    """The pieces of N(0, 0.02) weights sum exactly to w * 2**e (float64 sums of fp16 values are
    exact); without the scale most do not (the small pieces fall below fp16's subnormals). Fails
    if a piece loses a bit, if a piece is not an fp16 value, or if a row is wrongly marked exact."""
    from summit_fast.kernels.influence import split_weights

    w = torch.randn(64, 32, 9, generator=torch.Generator().manual_seed(0)) * 0.02
    assert (_old_split(w, torch.float16) != w.double()).float().mean() > 0.9
    pieces, unscale, exact = split_weights(w, torch.float16)
    assert pieces.dtype == torch.float16 and pieces.shape == (3, 64, 32, 9)
    rebuilt = pieces.double().sum(0) * unscale.double()[..., None]
    assert torch.equal(rebuilt[exact], w.double()[exact])
    assert exact.float().mean() > 0.99  # only rows with a tap below 2**-15 of their largest miss
    assert not torch.equal(rebuilt[~exact], w.double()[~exact]) if (~exact).any() else True
    # A row with taps 2**30 apart cannot be exact in fp16 pieces, and says so; in bf16 it is.
    w[0, 0, :2] = torch.tensor([1.0, 1.0 + 2.0 ** -23]) * torch.tensor([1.0, 2.0 ** -30])
    assert not split_weights(w, torch.float16)[2][0, 0]
    bf16_pieces, bf16_unscale, bf16_exact = split_weights(w, torch.bfloat16)
    assert bool(bf16_exact.all()) and torch.equal(bf16_pieces.double().sum(0), w.double())


@pytest.mark.parametrize("row", ["scaled-split", "exact-rows-kernel", "subnormal-piece"])
def test_fp16_inputs_fp32_weights_one_ulp_apart(triton_backend, row):
    """Two sources with the same plane; source 1's centre tap is one float32 ulp above source 0's
    (0.02). Exact products rank source 1 first; the unscaled fp16 split lost that last bit and
    tied them (source 0 won). exact-rows-kernel: each row also has a tap 2**-30 of its largest,
    so no exact fp16 split exists and those rows are scored in float32. subnormal-piece: a tap of
    16 (over zeros) sets the scale to 2**10 and the centre taps are 2**-6 + 2**-29 and 2**-6 +
    2**-28, whose scaled pieces are 16 and an fp16 subnormal (2**-19, 2**-18): the tensor cores
    must multiply subnormals exactly (flushed, the two would tie)."""
    x = torch.ones(1, 2, 5, 5, dtype=torch.float16)
    weight = torch.zeros(18, 2, 3, 3)
    weight[:, 0, 1, 1] = 0.02
    weight[:, 1, 1, 1] = torch.nextafter(torch.tensor(0.02), torch.tensor(1.0))
    if row == "exact-rows-kernel":
        weight[:, :, 0, 0] = 0.02 * 2.0 ** -30
    elif row == "subnormal-piece":
        x = torch.zeros(1, 2, 3, 3, dtype=torch.float16)  # one output position, its centre pixel 1
        x[:, :, 1, 1] = 1.0
        weight[:, :, 0, 0] = 16.0
        weight[:, 0, 1, 1] = 2.0 ** -6 + 2.0 ** -29
        weight[:, 1, 1, 1] = 2.0 ** -6 + 2.0 ** -28
    labels = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    got = torch.zeros(K, 18, 2, dtype=torch.int32, device=DEVICE)
    triton_backend.influence_update(x.to(DEVICE), weight.to(DEVICE), ConvSpec(), labels, got, 1, 1)
    assert got[0, :, 1].eq(1).all() and got.sum() == 18, got[0]
    _check_influence(triton_backend, x.to(DEVICE), weight.to(DEVICE), ConvSpec(), labels, 1, 1)


def test_kxk_prepared_weights_follow_in_place_changes(triton_backend):
    """The split weights and bound terms are prepared once per weight tensor; an in-place
    change (a new version) prepares them again, and a new tensor gets its own."""
    from summit_fast.kernels import influence

    g = torch.Generator().manual_seed(5)
    x = _dyadic((2, 6, 7, 7), 16, g).to(DEVICE, torch.float16)
    weight = (torch.randn(20, 6, 3, 3, generator=g) * 0.02).to(DEVICE)
    labels = torch.tensor([0, 1], device=DEVICE)
    conv = ConvSpec(pad=(1, 1, 1, 1))
    _check_influence(triton_backend, x, weight, conv, labels, 2, 1)
    prepared = influence._PREPARED[id(weight)][2]
    assert set(prepared) == {("operand", torch.float16, True), ("bounds", torch.float16, True)}
    weight.mul_(-1)  # every top 2 changes
    _check_influence(triton_backend, x, weight, conv, labels, 2, 1)
    assert influence._PREPARED[id(weight)][2] is not prepared
    del weight, prepared
    import gc

    gc.collect()
    assert all(ref() is not None for ref, _, _ in influence._PREPARED.values())


def test_kxk_kernels_take_float64_inputs():
    # The backend routes float64 to the torch backend; the kernels themselves compute it in
    # float32. Small integers: exact there.
    g = torch.Generator().manual_seed(6)
    x = torch.randint(-3, 4, (2, 5, 6, 6), generator=g).double()
    weight = torch.randint(-2, 3, (20, 5, 3, 3), generator=g).double()
    _check_pruned(x, weight, ConvSpec(pad=(1, 1, 1, 1)), 2)


# ------------------------------------------------------------------------------ activation kernel: programs and selection
# (issue 15 item 3) A program walks a run of channel blocks; an image split over several
# programs is finished by the last of them, an image with one program selects by itself.
# Selection extracts maxima one at a time and sorts only when more than 16 channels are needed.
def _activation_module():
    from summit_fast.kernels import activation

    return activation


@pytest.mark.parametrize("per_program", [1, 3, 4, 100], ids=lambda n: f"{n}-blocks-per-program")
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_activation_programs_walk_several_channel_blocks(triton_backend, monkeypatch, per_program, channels_last):
    from summit_fast.kernels.common import override_tiles

    activation = _activation_module()
    kernel, grids = activation._activation_kernel, []

    class RecordingLaunch:
        def __getitem__(self, grid):
            grids.append(grid)
            return kernel[grid]

    def chosen_split(n_blocks, batch, sm_count):
        per = min(per_program, n_blocks)
        return per, -(-n_blocks // per)

    monkeypatch.setattr(activation, "_activation_kernel", RecordingLaunch())
    monkeypatch.setattr(activation, "_grid", chosen_split)
    g = torch.Generator().manual_seed(10)
    batches = [(_layout(torch.randn(2, 37, 6, 5, generator=g), channels_last).to(DEVICE),
                torch.randint(0, K, (2,), generator=g).to(DEVICE)) for _ in range(2)]
    # Blocks of 16 elements: 37 blocks of one channel in NCHW, 3 of 16 channels in channels_last.
    with override_tiles(reduce_tile=16):
        for rule in (mass(0.01), topk(3)):
            _check_activation(triton_backend, batches, rule)
    n_blocks = 3 if channels_last else 37
    assert set(grids) == {(-(-n_blocks // min(per_program, n_blocks)), 2)}


def test_activation_grid_fills_the_gpu_then_one_program_per_image():
    grid = _activation_module()._grid
    for n_blocks in (1, 5, 33, 64):
        for batch in (1, 3, 8, 256, 4096):
            for sms in (1, 132):
                per_program, programs = grid(n_blocks, batch, sms)
                assert (programs - 1) * per_program < n_blocks <= programs * per_program  # no empty program
    assert grid(33, 4096, 132) == (33, 1)  # a large batch: one program per image, no completion counter
    assert grid(33, 2, 132) == (1, 33)  # a small one: every block its own program
    assert grid(64, 256, 132) == (13, 5)  # InceptionV1 mixed3a, NCHW, batch 256 on an H200 (8 programs per SM)


@pytest.mark.parametrize("rule,sorts", [(mass(0.01), False), (topk(16), False), (mass(15.5 / 37), False),
                                        (mass(16.5 / 37), True), (mass(1.0), True), (topk(17), True)], ids=str)
def test_activation_sorts_only_when_more_than_16_channels_are_selected(triton_backend, monkeypatch, rule, sorts):
    activation = _activation_module()
    sort, calls = activation._sorted_keys, []

    def counted_sort(key):
        calls.append(1)
        return sort(key)

    monkeypatch.setattr(activation, "_sorted_keys", counted_sort)
    g = torch.Generator().manual_seed(11)
    acts = torch.randn(3, 37, 4, 5, generator=g)
    acts[2] = 1.0  # equal channels: mass(15.5/37) selects exactly 16, mass(16.5/37) 17
    labels = torch.tensor([0, 2, 3])
    _check_activation(triton_backend, [(acts.to(DEVICE), labels.to(DEVICE))], rule)
    assert bool(calls) == sorts


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_activation_selection_edge_cases(triton_backend, channels_last):
    g = torch.Generator().manual_seed(12)
    for c in (1, 37, 130):  # one channel; C not a power of two
        acts = torch.randn(6, c, 3, 4, generator=g)
        acts[1] = 0.0  # all zero: T = 0, the mass rule selects nothing
        acts[2] = -acts[2].abs() - 1  # all negative
        acts[3] = 2.0  # every channel equal: ties by ascending channel
        acts[4, :, 1:] = 0.0  # max +0.0 against -0.0: equal, so ties too
        acts[4, ::2, 0] = -0.0
        acts[4, 1::2, 0] = -1.0
        acts[5] = acts[5].round()  # small integers: many ties
        labels = torch.tensor([0, 1, 1, 3, 2, 0])
        batches = [(_layout(acts, channels_last).to(DEVICE), labels.to(DEVICE))]
        for rule in (mass(0.01), mass(0.3), mass(1.0), topk(1), topk(5), topk(20)):
            _check_activation(triton_backend, batches, rule)


# ------------------------------------------------------------------------------ influence: k >= sources
# (issue 15 item 4) When k >= C_in/groups every source of every target is kept: counted without
# a single score (depthwise convs are the common case).
@pytest.mark.parametrize("case", [
    (3, 8, 8, 7, 6, (3, 3), ConvSpec(pad=(1, 1, 1, 1), groups=8), 5, 1),  # depthwise
    (2, 12, 16, 5, 5, (1, 1), ConvSpec(groups=4), 3, 1),  # k == sources
    (2, 5, 6, 6, 7, (3, 3), ConvSpec(stride=(2, 2)), 9, 2),  # k > sources
], ids=_influence_id)
def test_influence_keeps_every_source_without_computing_scores(triton_backend, monkeypatch, case):
    from summit_fast.kernels import influence

    class NoLaunch:
        def __getitem__(self, grid):
            raise AssertionError("a score kernel was launched")

    for kernel in ("_extrema_kernel", "_pointwise_kernel", "_conv_kernel"):
        monkeypatch.setattr(influence, kernel, NoLaunch())
    b, c_in, c_out, h, w, (kh, kw), conv, k, r = case
    g = torch.Generator().manual_seed(13)
    x = torch.randn(b, c_in, h, w, generator=g)
    weight = torch.randn(c_out, c_in // conv.groups, kh, kw, generator=g)
    labels = torch.tensor([1, 1, 3][:b])  # a repeated label counts twice
    _check_influence(triton_backend, x.to(DEVICE), weight.to(DEVICE), conv, labels.to(DEVICE), k, r)


# ------------------------------------------------------------------------------ float64
# (issue 15 item 4) float64 stays exact: values that differ only below float32's precision
# (1 and 1 + 2^-40 round to the same float32) must still order channels and sources.
TINY = 2.0 ** -40


@pytest.mark.parametrize("rule", [topk(1), mass(0.5)], ids=str)
def test_activation_float64_is_not_rounded_to_float32(triton_backend, rule):
    acts = torch.zeros(2, 3, 2, 2, dtype=torch.float64)
    acts[:, 0, 1, 0] = 1.0
    acts[:, 1, 0, 1] = 1.0 + TINY  # float64: channel 1 first; float32: a tie, channel 0 first
    acts[1, 2] = -0.5
    labels = torch.tensor([0, 1])
    got = torch.zeros(K, 3, dtype=torch.int32, device=DEVICE)
    triton_backend.activation_update(acts.to(DEVICE), labels.to(DEVICE), got, rule)
    assert got.cpu()[:2].tolist() == [[0, 1, 0], [0, 1, 0]]


@pytest.mark.parametrize("kernel", [(1, 1), (3, 3)], ids=["1x1", "3x3"])
@pytest.mark.parametrize("wide", ["input", "weight"])
def test_influence_float64_is_not_rounded_to_float32(triton_backend, kernel, wide):
    g = torch.Generator().manual_seed(14)
    x = torch.randint(1, 9, (2, 3, 5, 6), generator=g).to(torch.float64)
    weight = torch.rand(4, 3, *kernel, generator=g, dtype=torch.float64)
    weight[:, 1] = weight[:, 0]
    weight[:, 2] *= -1  # source 2 scores below 0: last
    if wide == "input":  # source 1's scores exceed source 0's by a factor 1 + 2^-40
        x[:, 1] = x[:, 0] * (1 + TINY)
        weight = weight.float()
    else:
        x[:, 1] = x[:, 0]
        weight[:, 1] *= 1 + TINY
        x = x.float()
    labels = torch.tensor([2, 0])
    conv = ConvSpec(pad=(kernel[0] // 2,) * 4)
    got = torch.zeros(K, 4, 3, dtype=torch.int32, device=DEVICE)
    triton_backend.influence_update(x.to(DEVICE), weight.to(DEVICE), conv, labels.to(DEVICE), got, 1, 1)
    assert got.cpu()[[2, 0]].tolist() == [[[0, 1, 0]] * 4] * 2
    _check_influence(triton_backend, x.to(DEVICE), weight.to(DEVICE), conv, labels.to(DEVICE), 2, 1)


def test_info_says_what_triton_does_with_float64():
    from cli_command import run_cli
    from summit_fast.backends.triton import FLOAT64_NOTE

    out = run_cli("info")
    assert out.returncode == 0, out.stderr
    assert f"  triton and float64: {FLOAT64_NOTE}\n" in out.stdout
