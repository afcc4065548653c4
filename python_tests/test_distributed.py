"""Two processes with the gloo backend give exactly the single-process counts."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import summit_fast
from summit_fast import ShardSampler, SummitResult

from result_compare import assert_same_counts
from tiny_models import TinyInception


def dataset():
    g = torch.Generator().manual_seed(11)
    return torch.utils.data.TensorDataset(torch.randn(27, 3, 9, 9, generator=g), torch.randint(0, 5, (27,), generator=g))


def net():
    torch.manual_seed(0)
    return TinyInception().eval()


def worker(rank, world_size, port, out_dir, count_dtype):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        data = dataset()
        loader = torch.utils.data.DataLoader(data, batch_size=4, sampler=ShardSampler(data))
        result = summit_fast.aggregate(net(), loader, backend="torch", progress=False, examples=3,
                                       checkpoint_dir=os.path.join(out_dir, "ckpt"), count_dtype=count_dtype)
        if rank == 0:
            result.save(os.path.join(out_dir, "result"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("count_dtype", ["int32", "int16"])
def test_two_gloo_processes_equal_one_process(tmp_path, count_dtype):
    mp.start_processes(worker, args=(2, free_port(), str(tmp_path), count_dtype), nprocs=2, join=True,
                       start_method="spawn")
    single = summit_fast.aggregate(net(), torch.utils.data.DataLoader(dataset(), batch_size=4), backend="torch",
                                   progress=False, examples=3, count_dtype=count_dtype)
    # The ranks batch other images together than the single process: forward outputs may differ
    # in the last bit, which assert_same_counts allows for example values and probabilities only.
    assert_same_counts(SummitResult.load(tmp_path / "result"), single)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["rank-0-of-2", "rank-1-of-2"]


def mismatched_worker(rank, world_size, port, out_dir):
    """Rank 1 aggregates another network: both ranks must refuse to sum, neither may hang."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model = net()
        if rank == 1:
            with torch.no_grad():
                next(model.parameters()).add_(1.0)
        data = dataset()
        loader = torch.utils.data.DataLoader(data, batch_size=4, sampler=ShardSampler(data))
        try:
            summit_fast.aggregate(model, loader, backend="torch", progress=False)
        except ValueError as exc:
            with open(os.path.join(out_dir, f"error-{rank}"), "w") as f:
                f.write(str(exc))
    finally:
        dist.destroy_process_group()


def test_ranks_with_other_weights_are_not_summed(tmp_path):
    mp.start_processes(mismatched_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    for rank in (0, 1):
        assert (tmp_path / f"error-{rank}").read_text().startswith(
            "rank 1 aggregated with another model_digest than rank 0: every rank must aggregate the same model")


def test_shard_sampler_covers_every_item_once():
    shards = [list(ShardSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(10))
    assert [len(ShardSampler(10, rank=r, world_size=3)) for r in range(3)] == [4, 3, 3]


def test_torchrun_process_group_outside_torchrun_joins_nothing(monkeypatch):
    from summit_fast.distributed import torchrun_process_group

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with torchrun_process_group(torch.device("cpu")) as device:
        assert device == torch.device("cpu") and not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2 but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set"):
        with torchrun_process_group(torch.device("cpu")):
            pass
