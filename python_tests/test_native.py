"""The compiled module summit_fast._C: build facts, safe CUDA queries, thread control."""

import torch

import summit_fast
from summit_fast._native import import_error, native


def test_native_module_imports_and_reports_build_facts():
    assert native is not None, import_error
    assert native.__version__ == summit_fast.__version__
    assert isinstance(native.with_cuda, bool) and isinstance(native.with_openmp, bool)
    assert native.num_threads() >= 1


def test_cuda_queries_never_crash_and_agree_with_torch():
    available = native.cuda_available()
    assert isinstance(available, bool)
    assert native.cuda_device_count() >= 0
    assert isinstance(native.cuda_status(), str) and native.cuda_status()
    if not native.with_cuda:
        assert not available and "without CUDA" in native.cuda_status()
    elif not available:  # built with CUDA on a machine without a usable GPU (CI): the reason in plain words
        assert "no usable device" in native.cuda_status() and "driver version is insufficient" not in native.cuda_status()
    if not torch.cuda.is_available():
        assert not available


def test_set_num_threads_round_trip():
    before = native.num_threads()
    try:
        native.set_num_threads(1)
        assert native.num_threads() == 1 or not native.with_openmp
    finally:
        native.set_num_threads(before)


def test_kernels_ship_inside_the_package():
    import importlib.resources

    files = {p.name for p in importlib.resources.files("summit_fast.kernels").iterdir()}
    assert {"activation.py", "influence.py", "common.py"} <= files


def test_backend_registry_reasons():
    assert summit_fast.unavailable_reason("torch", "cpu") is None
    assert "unknown backend 'nope'" in summit_fast.unavailable_reason("nope", "cpu")
    import pytest
    with pytest.raises(summit_fast.BackendUnavailable, match="unknown backend"):
        summit_fast.get_backend("nope", "cpu")
