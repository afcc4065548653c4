"""Multi-process aggregation with ``torch.distributed`` (``torchrun``; gloo on CPU, NCCL on GPUs).

The sharding rule: rank r of w processes the dataset items r, r + w, r + 2w, ... (see
:class:`ShardSampler`; unlike ``DistributedSampler`` it never pads or drops items, so every
image is counted exactly once). Counts are additive, so the ranks' results are summed with
``all_reduce``.

A program started by ``torchrun`` joins the process group that ``torchrun`` describes in the
environment with :func:`torchrun_process_group` (what ``summit-fast run`` does).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ._text import differing_keys
from .examples import merge_examples
from .result import SummitResult, check_count_capacity, counting_params


def is_distributed() -> bool:
    """True inside an initialised ``torch.distributed`` process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` outside a
    multi-rank group. A collective: every rank must call it."""
    if not is_distributed():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of ranks (0 and 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_by_torchrun() -> bool:
    """True when the environment describes a group of more than one process (``WORLD_SIZE``, as
    ``torchrun`` sets it)."""
    return int(os.environ.get("WORLD_SIZE", "1") or "1") > 1


@contextlib.contextmanager
def torchrun_process_group(device: torch.device):
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) for the body and leave it at
    the end, also on error; yields the device this rank computes on.

    The backend is gloo for a CPU ``device`` and NCCL for CUDA, where each rank takes the GPU
    ``cuda:LOCAL_RANK`` (unless ``device`` names one). Without ``torchrun`` (``WORLD_SIZE``
    unset or 1), or inside a group the caller already initialised, nothing is joined or left.
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        yield device
        return
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    missing = [v for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: "
                           "start several processes with torchrun")
    if device.type == "cuda":
        if device.index is None:  # one GPU per rank on each machine
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    try:
        yield device
    finally:
        dist.destroy_process_group()


class ShardSampler(Sampler[int]):
    """Items ``rank, rank + world_size, ...`` of a dataset of ``length`` items, in order.

    ``rank``/``world_size`` default to the initialised process group (or 0 / 1 without one).
    """

    def __init__(self, length, rank: int | None = None, world_size: int | None = None):
        self.length = length if isinstance(length, int) else len(length)
        in_group = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if in_group else 0)
        self.world_size = world_size if world_size is not None else (dist.get_world_size() if in_group else 1)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"ShardSampler: rank {self.rank} is not in [0, {self.world_size})")

    def __iter__(self):
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


class ShardIds:
    """Dataset indices of the images a loader yields, for naming dataset examples: with a
    :class:`ShardSampler` (no shuffling), local image i of rank r is dataset item r + i * w.

    A loader that knows the indices of what it yields (one that may leave images out, such as
    :class:`summit_fast.images.ImageLoader`) names them itself: :meth:`of` returns the loader
    when it has a method ``image_ids(aggregator, images)``.
    """

    def __init__(self, rank: int = 0, world_size: int = 1):
        self.rank, self.world_size = rank, world_size

    @classmethod
    def of(cls, loader):
        """What names the images of ``loader``: the loader itself, or a :class:`ShardIds`."""
        if callable(getattr(loader, "image_ids", None)):
            return loader
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, ShardSampler):
            return cls(sampler.rank, sampler.world_size)
        return cls()

    def image_ids(self, aggregator, images: torch.Tensor) -> torch.Tensor:
        seen = aggregator.images_counted
        return self.rank + self.world_size * (seen + torch.arange(images.shape[0]))


def all_reduce_result(result: SummitResult) -> SummitResult:
    """Sum every count tensor across ranks and merge dataset examples (in place); a no-op
    outside a multi-rank group. Every rank ends with the total."""
    if not is_distributed():
        return result
    if dist.get_backend() == "nccl" and any(t.device.type != "cuda" for t in result.tensors().values()):
        raise ValueError("NCCL needs the counts on the GPU: run the aggregation with device='cuda'")
    # Shards of other weights, options or models must not be summed. Every rank receives every
    # rank's description and raises alike, so no rank is left waiting in a collective below.
    described = gather_objects((counting_params(result.params), result.graph.to_json(), result.class_ids))
    other = next((r for r, d in enumerate(described) if d != described[0]), None)
    if other is not None:
        what = ", ".join(differing_keys(described[0][0], described[other][0])) or "model graph or classes"
        raise ValueError(f"rank {other} aggregated with another {what} than rank 0: every rank must aggregate "
                         "the same model (weights) with the same options")
    # Refuse before any count changes if the total would overflow a narrow count type.
    total_images = result.images_per_class.clone()
    dist.all_reduce(total_images, op=dist.ReduceOp.SUM)
    check_count_capacity(total_images, result.count_dtype, result.class_ids, "summing the counts of all ranks")
    for key, tensor in result.tensors().items():
        if key.startswith("examples/"):
            continue
        if tensor.dtype == torch.int16:  # neither gloo nor NCCL reduces int16: sum a widened copy
            wide = tensor.to(torch.int32)
            dist.all_reduce(wide, op=dist.ReduceOp.SUM)
            tensor.copy_(wide)  # exact: the capacity check above bounds every sum
        else:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    n = int(result.params.get("examples", 0))
    for state in result.examples.values():
        gathered = {f: [torch.empty_like(t) for _ in range(dist.get_world_size())] for f, t in state.items()}
        for f, t in state.items():
            dist.all_gather(gathered[f], t)
        merged = {f: gathered[f][0] for f in state}
        for r in range(1, dist.get_world_size()):
            merged = merge_examples(merged, {f: gathered[f][r] for f in state}, n)
        state.update(merged)
    return result


def rank_directory(directory: str | os.PathLike) -> Path:
    """``directory`` itself, or one sub-folder per rank under ``torch.distributed``."""
    directory = Path(directory)
    if is_distributed():
        return directory / f"rank-{dist.get_rank()}-of-{dist.get_world_size()}"
    return directory
