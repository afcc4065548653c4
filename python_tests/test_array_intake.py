"""Arrays of other libraries in: NumPy arrays, bare DLPack objects and CuPy arrays give exactly
the counts of the same data as torch tensors, share their memory (counts are updated in place),
CuPy work runs on CuPy's current stream, and bad objects or mixed devices are one clear error."""

import contextlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import summit_fast
from summit_fast import Aggregator, mass, topk
from summit_fast.arrays import as_tensor, caller_stream
from summit_fast.backends import get_backend, unavailable_reason
from summit_fast.convspec import ConvSpec

from tiny_models import TinyInception

BACKENDS = [b for b in ("torch", "cpu") if unavailable_reason(b, "cpu") is None]
HAS_CUPY = importlib.util.find_spec("cupy") is not None


class DLPackOnly:
    """An array of an unknown library: only the DLPack protocol, over a NumPy array's memory."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


def batches(n=2, size=4, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 9, 9, generator=g), torch.randint(0, classes, (size,), generator=g))
            for _ in range(n)]


def model():
    torch.manual_seed(0)
    return TinyInception().eval()


def op_data(seed=1):
    """Arguments of both ops: activations (B, C, H, W), labels, a conv's input and weight."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(6, 7, 5, 5, generator=g), torch.randint(0, 3, (6,), generator=g),
            torch.randn(6, 4, 6, 6, generator=g), torch.randn(5, 4, 3, 3, generator=g))


# ------------------------------------------------------------------ as_tensor: zero-copy
def test_numpy_array_is_shared_both_ways():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensor = as_tensor(array, "x")
    assert tensor.data_ptr() == array.ctypes.data and tensor.shape == (3, 4) and tensor.dtype == torch.float32
    tensor[0, 0] = 100
    array[2, 3] = -5
    assert array[0, 0] == 100 and tensor[2, 3] == -5


def test_dlpack_only_object_is_shared():
    array = np.zeros((2, 3), dtype=np.int32)
    tensor = as_tensor(DLPackOnly(array), "counts", writable=True)
    tensor += 7
    assert tensor.data_ptr() == array.ctypes.data and (array == 7).all()


def test_torch_tensor_is_returned_as_is():
    t = torch.ones(3)
    assert as_tensor(t, "x") is t


@pytest.mark.parametrize("bad,message", [
    ([1, 2, 3], r"^activations must be a torch.Tensor or an array with __dlpack__ or __cuda_array_interface__ "
                r"\(NumPy, CuPy, JAX, \.\.\.\), got list$"),
    ("abc", r"^activations must be a torch.Tensor .*, got str$"),
    (np.array(["a", "b"]), r"^activations: torch cannot share this ndarray through DLPack: .+$"),
])
def test_bad_objects_are_one_line_errors(bad, message):
    with pytest.raises(TypeError, match=message):
        as_tensor(bad, "activations")


def test_read_only_counts_are_refused_read_only_inputs_are_not():
    acts, labels = np.random.default_rng(0).random((2, 3, 4, 4), dtype=np.float32), np.array([0, 1])
    acts.flags.writeable = False
    counts = np.zeros((2, 3), dtype=np.int32)
    get_backend("torch").activation_update(acts, labels, counts, mass(0.5))  # activations are only read
    assert counts.sum() > 0
    counts.flags.writeable = False
    with pytest.raises(ValueError, match=r"^counts: the ndarray is read-only, but it is written in place; "
                                         r"pass a writable array"):
        get_backend("torch").activation_update(acts, labels, counts, mass(0.5))


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the error without CUDA")
def test_cuda_array_interface_without_cuda_is_a_clear_error():
    class CudaOnly:
        __cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0, False), "version": 3}

    with pytest.raises(ValueError, match=r"^labels: the CudaOnly is a CUDA array \(__cuda_array_interface__\), "
                                         r"but CUDA is not available to torch here$"):
        as_tensor(CudaOnly(), "labels")


# ------------------------------------------------------------------ the ops
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("count_dtype,torch_dtype", [(np.int32, torch.int32), (np.int16, torch.int16)])
def test_activation_op_takes_numpy_and_counts_in_place(backend, count_dtype, torch_dtype):
    acts, labels, _, _ = op_data()
    excluded = torch.zeros(7, dtype=torch.bool)
    excluded[2] = True
    for rule in (mass(0.3), topk(2)):
        expected = torch.zeros(3, 7, dtype=torch_dtype)
        get_backend(backend).activation_update(acts, labels, expected, rule, excluded)
        counts = np.zeros((3, 7), dtype=count_dtype)
        get_backend(backend).activation_update(acts.numpy(), labels.numpy(), counts, rule, excluded.numpy())
        assert expected.sum() > 0 and np.array_equal(counts, expected.numpy())
        wrapped = np.zeros((3, 7), dtype=count_dtype)  # every argument a bare DLPack object
        get_backend(backend).activation_update(DLPackOnly(acts.numpy()), DLPackOnly(labels.numpy()),
                                               DLPackOnly(wrapped), rule, DLPackOnly(excluded.numpy()))
        assert np.array_equal(wrapped, expected.numpy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_influence_op_takes_numpy_and_counts_in_place(backend):
    _, labels, x, weight = op_data()
    conv = ConvSpec(pad=(1, 1, 1, 1))
    expected = torch.zeros(3, 5, 4, dtype=torch.int32)
    get_backend(backend).influence_update(x, weight, conv, labels, expected, k=2)
    counts = np.zeros((3, 5, 4), dtype=np.int32)
    get_backend(backend).influence_update(x.numpy(), DLPackOnly(weight.numpy()), conv, labels.numpy(), counts, k=2)
    assert expected.sum() == 6 * 5 * 2 and np.array_equal(counts, expected.numpy())


def test_ops_name_both_devices_when_they_differ():
    acts, labels, x, weight = op_data()
    engine = get_backend("torch")
    with pytest.raises(ValueError, match=r"^counts is on cpu but the input is on meta$"):
        engine.activation_update(acts.to("meta"), labels, np.zeros((3, 7), dtype=np.int32), mass(0.3))
    with pytest.raises(ValueError, match=r"^conv weight is on cpu but its input is on meta$"):
        engine.influence_update(x.to("meta"), weight.numpy(), ConvSpec(), labels, np.zeros((3, 5, 4), np.int32))


# ------------------------------------------------------------------ Aggregator.update and aggregate
@pytest.mark.parametrize("backend", BACKENDS)
def test_aggregate_and_update_take_numpy_batches(backend):
    data = batches()
    expected = summit_fast.aggregate(model(), data, backend=backend, progress=False)
    as_numpy = [(images.numpy(), labels.numpy()) for images, labels in data]
    assert summit_fast.aggregate(model(), as_numpy, backend=backend, progress=False) == expected
    wrapped = [(DLPackOnly(images), DLPackOnly(labels)) for images, labels in as_numpy]
    assert summit_fast.aggregate(model(), wrapped, backend=backend, progress=False) == expected
    aggregator = Aggregator(model(), backend=backend)
    for images, labels in as_numpy:
        aggregator.update(images, labels)
    assert aggregator.result == expected


def test_prediction_labels_with_numpy_images_alone():
    data = batches()
    expected = summit_fast.aggregate(model(), data, backend="torch", label_source="prediction", progress=False)
    images_only = [images.numpy() for images, _ in data]
    assert summit_fast.aggregate(model(), images_only, backend="torch", label_source="prediction",
                                 progress=False) == expected


def test_bad_images_and_images_on_another_device_are_one_line_errors():
    with pytest.raises(TypeError, match=r"^batch 0: images must be a torch.Tensor or an array with __dlpack__ "
                                        r".*, got list$"):
        summit_fast.aggregate(model(), [([[0.0]], [0])], backend="torch", progress=False)
    aggregator = Aggregator(model(), backend="torch")
    images, labels = batches(1)[0]
    with pytest.raises(ValueError, match=r"^batch 3: images are on meta but the model is on cpu; move them to cpu "
                                         r"\(images on the CPU are copied there\)$"):
        aggregator.update(images.to("meta"), labels.numpy(), batch_index=3)
    assert aggregator.images_counted == 0


# ------------------------------------------------------------------ CuPy's stream
class FakeCupyArray(DLPackOnly):
    """Looks like a CuPy array on GPU 1 (by its module, as summit_fast.arrays tells them apart)."""

    __module__ = "cupy._core.core"
    device = types.SimpleNamespace(id=1)


@pytest.fixture
def fake_cupy(monkeypatch):
    """A fake ``cupy`` module and CUDA stream machinery; returns the log of streams entered."""
    entered = []
    current = types.SimpleNamespace(ptr=1234)

    @contextlib.contextmanager
    def enter(stream):
        entered.append(stream)
        yield

    cuda = types.SimpleNamespace(Device=lambda index: contextlib.nullcontext(), get_current_stream=lambda: current)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "ExternalStream", lambda ptr, device: ("external", ptr, device))
    monkeypatch.setattr(torch.cuda, "default_stream", lambda device: ("default", device))
    monkeypatch.setattr(torch.cuda, "stream", enter)
    return entered, current


def test_cupy_arrays_enter_cupys_current_stream(fake_cupy):
    entered, current = fake_cupy
    with caller_stream((torch.zeros(1), FakeCupyArray(np.zeros(1)))):
        pass
    assert entered == [("external", 1234, torch.device("cuda", 1))]
    current.ptr = 0  # CuPy's default: the legacy default stream, torch's default stream too
    with caller_stream(FakeCupyArray(np.zeros(1))):
        pass
    assert entered[-1] == ("default", torch.device("cuda", 1))


def test_other_arrays_import_no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # importing it would raise ImportError
    with caller_stream(np.zeros(1), torch.zeros(1), (DLPackOnly(np.zeros(1)), [0, 1]), None):
        pass


def test_an_op_on_cupy_arrays_runs_inside_cupys_stream(fake_cupy):
    entered, _ = fake_cupy
    acts, labels, _, _ = op_data()
    seen = []

    class Recording(type(get_backend("torch"))):
        def _activation_update(self, *args):
            seen.append(len(entered))  # the stream was entered before the kernels ran
            super()._activation_update(*args)

    counts = np.zeros((3, 7), dtype=np.int32)
    Recording().activation_update(FakeCupyArray(acts.numpy()), labels, counts, mass(0.3))
    assert seen == [1] and counts.sum() > 0


@pytest.mark.skipif(not (torch.cuda.is_available() and HAS_CUPY), reason="needs a CUDA GPU and CuPy")
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_cupy_update_on_a_non_default_stream_gives_the_torch_counts(backend):
    import cupy

    if unavailable_reason(backend, "cuda") is not None:
        pytest.skip(unavailable_reason(backend, "cuda"))
    acts, labels, _, _ = (t.cuda() for t in op_data())
    expected = torch.zeros(3, 7, dtype=torch.int32, device="cuda")
    engine = get_backend(backend, "cuda")
    engine.activation_update(acts, labels, expected, mass(0.3))
    streams = []
    original = engine._activation_update
    engine._activation_update = lambda *args: (streams.append(torch.cuda.current_stream().cuda_stream),
                                               original(*args))
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        counts = cupy.zeros((3, 7), dtype=cupy.int32)
        engine.activation_update(cupy.from_dlpack(acts), cupy.from_dlpack(labels), counts, mass(0.3))
        stream.synchronize()
    assert streams == [stream.ptr]
    assert torch.equal(torch.from_dlpack(counts), expected)

    class CudaOnly:  # only the CUDA array interface (as Numba's arrays): shared too
        __cuda_array_interface__ = counts.__cuda_array_interface__

    assert as_tensor(CudaOnly(), "counts").data_ptr() == counts.data.ptr
    data = [(images.cuda(), labels.cuda()) for images, labels in batches()]
    net = model().cuda()
    with stream:
        on_cupy = summit_fast.aggregate(net, [(cupy.from_dlpack(i), cupy.from_dlpack(l)) for i, l in data],
                                        backend=backend, progress=False)
        stream.synchronize()
    assert on_cupy == summit_fast.aggregate(net, data, backend=backend, progress=False)


# ------------------------------------------------------------------ packaging
def test_cupy_is_an_optional_extra_not_a_test_dependency():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11+")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert [r for r in extras["cupy"] if r.startswith("cupy")] and not any("cupy" in r for r in extras["test"])
    assert not any("cupy" in r for r in project["dependencies"])
