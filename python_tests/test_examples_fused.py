"""Channel maxima fused into the activation update (issue 6): ``activation_update(...,
maxima=(values, positions))`` must fill exactly what ``channel_max_positions`` returns — the
float32 max of each (image, channel) and the flat position h * W + w of its first occurrence —
on every backend, layout and dtype, and ``aggregate`` must then give the same dataset examples
and skip counts on the cpu backend as on the torch reference, without a second pass."""

import pytest
import torch

import summit_fast
import summit_fast.backends.base as base
from summit_fast._native import import_error, native
from summit_fast.backends import get_backend
from summit_fast.backends.base import empty_maxima
from summit_fast.examples import channel_max_positions
from summit_fast.rules import mass, topk

from test_cpu_backend import DTYPES, _layout
from tiny_models import TinyInception, TwoResidualBlocks

needs_native = pytest.mark.skipif(native is None, reason=f"summit_fast._C is not built: {import_error}")


@pytest.fixture(scope="module")
def cpu():
    return get_backend("cpu", "cpu")


def _fused(backend, acts, rule=mass(0.01), excluded=None, num_classes=3):
    """(counts, values, positions) of one update with maxima, on outputs pre-filled with junk."""
    counts = torch.zeros(num_classes, acts.shape[1], dtype=torch.int32)
    values, positions = empty_maxima(acts)
    values.fill_(float("nan"))
    positions.fill_(-7)
    labels = torch.arange(acts.shape[0]) % num_classes
    backend.activation_update(acts, labels, counts, rule, excluded, maxima=(values, positions))
    return counts, values, positions


def _assert_maxima_exact(values, positions, acts):
    want_values, want_positions = channel_max_positions(acts)
    assert values.dtype == torch.float32 and positions.dtype == torch.int64
    assert torch.equal(values, want_values), f"{int((values != want_values).sum())} maxima differ"
    assert torch.equal(positions, want_positions), f"{int((positions != want_positions).sum())} positions differ"


def _data(shape, dtype, layout, kind, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":  # few distinct values: every channel's max occurs many times
        t = torch.randint(-3, 3, shape, generator=g).float()
    else:
        t = torch.randn(shape, generator=g)
    return _layout(t.to(DTYPES[dtype]), layout)


# 1x1 and odd grids, batch 1, planes shorter and longer than a 64-byte block, a channel count
# that is not a multiple of 64 bytes, and one tensor of over 2 MiB (two threads share it).
SHAPES = [(1, 3, 1, 1), (1, 50, 7, 7), (3, 37, 9, 11), (2, 130, 3, 5), (5, 20, 17, 13), (1, 9, 57, 57),
          (12, 130, 31, 29)]


@needs_native
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
@pytest.mark.parametrize("kind", ["random", "ties"])
def test_cpu_maxima_equal_channel_max_positions(cpu, shape, dtype, layout, kind):
    acts = _data(shape, dtype, layout, kind, seed=sum(shape))
    excluded = torch.zeros(shape[1], dtype=torch.bool)
    excluded[:: 3] = True  # excluded channels count as zero but keep their true max
    for rule in (mass(0.05), topk(2)):
        for excl in (None, excluded):
            counts, values, positions = _fused(cpu, acts, rule, excl)
            _assert_maxima_exact(values, positions, acts)
            alone = torch.zeros_like(counts)  # the maxima change nothing in the counts
            cpu.activation_update(acts, torch.arange(shape[0]) % 3, alone, rule, excl)
            assert torch.equal(counts, alone)


def _special_cases():
    """(name, acts): values whose first max position is easy to get wrong."""
    cases = []
    for dtype in ("f32", "f16", "bf16"):  # -0 and +0 are equal: the first of them is the max
        t = torch.full((2, 3, 5, 6), -1.0)
        t[:, :, 1, 2] = -0.0
        t[:, :, 3, 4] = 0.0
        t[1, 1] = -0.0
        t[1, 2, 4, 5] = 0.0
        cases.append((f"signed zeros {dtype}", t.to(DTYPES[dtype])))
    t = torch.full((1, 2, 9, 9), 1.0, dtype=torch.float64)  # doubles that round to one float
    t[0, :, 2, 3] = 1.0 + 2.0 ** -40
    t[0, :, 7, 7] = 1.0 + 2.0 ** -30
    t[0, 1] -= 1.0
    t[0, 1, 8, 8] = 2.0 ** -30
    cases.append(("float64 rounding ties", t))
    t = torch.full((2, 4, 11, 11), float("-inf"))  # no finite value: the first position
    t[1, 2, 5, 5] = -1e30
    cases.append(("minus infinity", t))
    t = torch.zeros(1, 2, 20, 21)  # max in the overlapping last block of a long run (420 % 16 != 0)
    t[0, 0, 19, 20] = 1.0
    t[0, 1, 19, 18:] = 1.0
    cases.append(("tail block", t))
    cases.append(("tail block, float16", t.half()))  # 32 lanes a block
    cases.append(("tail block, channels_last", t.contiguous(memory_format=torch.channels_last)))
    t = torch.zeros(1, 2, 1030 * 1030)  # 16-bit keys number at most 2^15 - 1 blocks: pieces
    t[0, 0, [1_048_600, 1_060_000]] = 1.0
    t[0, 1, [5, 1_050_000]] = 1.0
    cases.append(("long bfloat16 plane", t.view(1, 2, 1030, 1030).bfloat16()))
    return cases


@needs_native
@pytest.mark.parametrize("name,acts", _special_cases(), ids=[n for n, _ in _special_cases()])
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
def test_cpu_maxima_special_values(cpu, name, acts, layout):
    acts = _layout(acts, layout)
    _, values, positions = _fused(cpu, acts, topk(1))
    _assert_maxima_exact(values, positions, acts)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_other_backends_fill_maxima_with_the_shared_default(backend):
    try:
        engine = get_backend(backend, "cpu")
    except summit_fast.BackendUnavailable as exc:
        pytest.skip(str(exc))
    acts = _data((2, 20, 5, 7), "f32", "nhwc", "ties", seed=3)
    counts, values, positions = _fused(engine, acts)
    _assert_maxima_exact(values, positions, acts)
    alone = torch.zeros_like(counts)
    engine.activation_update(acts, torch.arange(2) % 3, alone, mass(0.01))
    assert torch.equal(counts, alone)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_native)])
def test_bad_maxima_raise_before_anything_is_written(backend):
    engine = get_backend(backend, "cpu")
    acts = torch.randn(2, 5, 3, 3)
    counts = torch.ones(3, 5, dtype=torch.int32)
    labels = torch.tensor([0, 2])
    values, positions = empty_maxima(acts)
    values.fill_(-1.0)
    positions.fill_(-1)
    cases = [
        (TypeError, "maxima must be a pair", values),
        (TypeError, "maxima must be a pair", (values,)),
        (TypeError, "maxima must be a pair", (values, positions.tolist())),
        (TypeError, "maxima values must be a torch.float32", (values.double(), positions)),
        (TypeError, "maxima positions must be a torch.int64", (values, positions.int())),
        (ValueError, r"maxima values must have shape \(2, 5\)", (values[:1], positions)),
        (ValueError, r"maxima positions must have shape \(2, 5\)", (values, positions.t().contiguous())),
        (ValueError, "maxima positions must be contiguous", (values, torch.empty(5, 2, dtype=torch.int64).t())),
        (ValueError, "maxima values is on meta", (values.to("meta"), positions)),
    ]
    for exc, match, maxima in cases:
        with pytest.raises(exc, match=match):
            engine.activation_update(acts, labels, counts, mass(), maxima=maxima)
        assert int(counts.sum()) == 15 and bool((values == -1).all()) and bool((positions == -1).all())
    with pytest.raises(ValueError, match="class index 3 is out of range"):  # checked in C++ on the cpu backend
        engine.activation_update(acts, torch.tensor([0, 3]), counts, mass(), maxima=(values, positions))
    assert int(counts.sum()) == 15 and bool((values == -1).all()) and bool((positions == -1).all())


@needs_native
def test_native_entry_point_wants_both_maxima_pointers():
    acts = torch.randn(2, 5, 3, 3)
    counts = torch.zeros(3, 5, dtype=torch.int32)
    labels = torch.tensor([0, 1])
    values, positions = empty_maxima(acts)
    args = dict(acts=acts.data_ptr(), dtype="float32", shape=(2, 5, 3, 3), strides=acts.stride(),
                labels=labels.data_ptr(), counts=counts.data_ptr(), num_classes=3, rule="mass", tau=0.01, k=0,
                excluded=0)
    for one in ({"max_out": values.data_ptr()}, {"argmax_out": positions.data_ptr()}):
        with pytest.raises(ValueError, match="maxima: give both"):
            native.cpu_activation_update(**args, **one)
    assert counts.sum() == 0
    native.cpu_activation_update(**args, max_out=values.data_ptr(), argmax_out=positions.data_ptr())
    _assert_maxima_exact(values, positions, acts)


# ------------------------------------------------------------------------------ aggregate
def _batches(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, *shape, generator=g), torch.randint(0, 3, (b,), generator=g)) for b in (5, 1, 4)]


@needs_native
@pytest.mark.parametrize("model,options", [
    (TinyInception, {}),
    (TinyInception, {"channels_last": True, "excluded": {"mix1": [0, 3]}}),
    (TinyInception, {"amp_dtype": torch.bfloat16, "selection": topk(3)}),
    (TwoResidualBlocks, {}),  # residual skips share the maxima with the examples
    (TwoResidualBlocks, {"channels_last": True}),
], ids=["inception", "inception-channels_last-excluded", "inception-bf16-topk", "residual", "residual-channels_last"])
def test_aggregate_examples_equal_on_cpu_and_torch(monkeypatch, model, options):
    torch.manual_seed(0)
    net = model().eval()
    data = _batches(model.INPUT_SHAPE if hasattr(model, "INPUT_SHAPE") else (3, 8, 8), seed=4)
    want = summit_fast.aggregate(net, data, backend="torch", progress=False, examples=4, **options)
    # The cpu backend takes the maxima from its own activation pass, never from a second one.
    monkeypatch.setattr(base, "channel_max_positions", lambda acts: pytest.fail("second pass over the activations"))
    got = summit_fast.aggregate(net, data, backend="cpu", progress=False, examples=4, **options)
    assert got.examples and got == want
    if model is TwoResidualBlocks:
        assert sum(int(t.sum()) for t in got.skip.values()) > 0
