"""Which backend counted, and why: logged once per aggregation, recorded in ``result.params``,
printed by ``summit-fast run``; results and checkpoints of different backends (identical
counts) still merge and resume."""

import logging

import pytest
import torch

import summit_fast
from summit_fast.backends import choose_backend
from summit_fast.cli import main

from image_folders import write_images
from tiny_models import TinyInception


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return TinyInception().eval()


@pytest.fixture(scope="module")
def batches():
    g = torch.Generator().manual_seed(5)
    return [(torch.randn(4, 3, 9, 9, generator=g), torch.randint(0, 5, (4,), generator=g)) for _ in range(3)]


def choices(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("backend ")]


def test_auto_logs_its_choice_and_why_once_per_aggregation(net, batches, caplog, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # as for a user: triton cannot run on the CPU
    with caplog.at_level(logging.INFO, logger="summit_fast"):
        result = summit_fast.aggregate(net, batches, progress=False)
    [message] = choices(caplog)
    assert message.startswith("backend auto -> cpu: the fastest available for cpu tensors (")
    assert "triton: triton" in message  # why the GPU backend was not chosen
    assert result.params["backend"] == "cpu"


def test_an_explicit_backend_is_logged_and_recorded(net, batches, caplog):
    with caplog.at_level(logging.INFO, logger="summit_fast"):
        result = summit_fast.aggregate(net, batches, backend="torch", progress=False)
    assert choices(caplog) == ["backend torch: as requested"]
    assert result.params["backend"] == "torch"


def test_choose_backend_names_what_get_backend_gives():
    assert choose_backend("auto", "cpu")[0] == summit_fast.get_backend("auto", "cpu").name == "cpu"
    assert choose_backend("torch", "cpu") == ("torch", "backend torch: as requested")
    with pytest.raises(summit_fast.BackendUnavailable, match="backend 'cpu' cannot run on meta"):
        choose_backend("cpu", "meta")


def test_results_of_different_backends_merge_and_compare_equal(net, batches, tmp_path):
    whole = summit_fast.aggregate(net, batches, backend="torch", progress=False)
    by_torch = summit_fast.aggregate(net, batches[:1], backend="torch", progress=False)
    by_cpu = summit_fast.aggregate(net, batches[1:], backend="cpu", progress=False)
    total = by_torch + by_cpu
    assert total.params["backend"] == (by_cpu + by_torch).params["backend"] == "cpu+torch"
    assert total == whole  # the counts are identical whichever backend made them
    loaded = summit_fast.SummitResult.load(total.save(tmp_path / "r"))
    assert loaded.params == total.params


def test_a_checkpoint_resumes_with_another_backend(net, batches, tmp_path, caplog):
    summit_fast.aggregate(net, batches[:2], backend="torch", progress=False, checkpoint_dir=tmp_path,
                          checkpoint_every=1)
    with caplog.at_level(logging.INFO, logger="summit_fast"):
        resumed = summit_fast.aggregate(net, batches, backend="cpu", progress=False, checkpoint_dir=tmp_path)
    assert any("resuming from the checkpoint" in r.getMessage() for r in caplog.records)
    assert resumed == summit_fast.aggregate(net, batches, backend="torch", progress=False)
    assert resumed.params["backend"] == "cpu+torch"


def test_run_prints_the_backend_in_its_summary(tmp_path, capsys):
    images = write_images(tmp_path / "images")
    code = main(["run", "--model", "resnet18", "--workers", "0", "--no-progress", "--embedding", "pca",
                 "--examples", "0", "--images", str(images), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "aggregated 6 images in " in out and " s with the cpu backend: SummitResult(" in out


def test_auto_chooses_per_op_from_the_recorded_order(net, batches, monkeypatch, caplog):
    """When the recorded measurements favour different backends per op, auto runs each op on
    its own backend; the counts are those of either backend alone."""
    from summit_fast import backends

    monkeypatch.setitem(backends._AUTO_ORDER, "cpu", {"activation": ["torch"], "influence": ["cpu", "torch"]})
    engine = summit_fast.get_backend("auto", "cpu")
    assert isinstance(engine, backends.PerOpBackend)
    assert (engine.by_op["activation"].name, engine.by_op["influence"].name, engine.name) == ("torch", "cpu", "cpu+torch")
    name, why = choose_backend("auto", "cpu")
    assert name == "cpu+torch"
    assert why.startswith("backend auto -> activation: torch, influence: cpu: the fastest available per op")
    with caplog.at_level(logging.INFO, logger="summit_fast"):
        mixed = summit_fast.aggregate(net, batches, progress=False)
    assert mixed.params["backend"] == "cpu+torch"
    assert choices(caplog) == [why]
    alone = summit_fast.aggregate(net, batches, backend="torch", progress=False)
    for layer in alone.activation:
        assert torch.equal(mixed.activation[layer], alone.activation[layer])
    for edge in alone.influence:
        assert torch.equal(mixed.influence[edge], alone.influence[edge])


def test_the_cuda_backend_says_why_it_cannot_run_on_cpu_tensors():
    reason = summit_fast.unavailable_reason("cuda", "cpu")
    assert reason == "the cuda backend runs on CUDA tensors; got cpu"
    with pytest.raises(summit_fast.BackendUnavailable, match="backend 'cuda' cannot run on cpu: the cuda backend runs on CUDA"):
        summit_fast.get_backend("cuda", "cpu")
    if not torch.cuda.is_available():
        assert "cuda: the cuda backend runs on CUDA tensors" in choose_backend("auto", "cpu")[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the reason given where no GPU is usable")
def test_the_cuda_backend_says_why_it_cannot_run_without_a_gpu():
    from summit_fast._native import native

    reason = summit_fast.unavailable_reason("cuda", "cuda")
    if native.with_cuda:
        assert reason == native.cuda_status() and "built with CUDA, but no" in reason
    else:
        assert reason.startswith("summit_fast._C was built without CUDA")
