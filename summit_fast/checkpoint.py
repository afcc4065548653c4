"""Checkpoint and resume for long aggregation runs.

A checkpoint is a saved :class:`SummitResult` plus ``state.json`` (batches consumed, a
fingerprint of the run's configuration) in a folder ``ckpt-<batches>``. It is written under a
temporary name, fsynced and renamed; then the file ``LATEST`` is atomically replaced to point
at it, and older checkpoints are removed. A process killed at any moment leaves ``LATEST``
pointing at a complete checkpoint (or no ``LATEST`` at all).

When a checkpoint is resumed, the logger ``summit_fast.checkpoint`` records it (level INFO, with
``directory`` and ``batches_done`` attributes on the record), so a program can say so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ._text import differing_keys, shown
from .result import ResultFormatError, SummitResult, _atomic_write

_LATEST = "LATEST"
_STATE = "state.json"
log = logging.getLogger(__name__)


class CheckpointMismatch(ValueError):
    """A checkpoint was made by a run with a different configuration.

    ``directory`` is the checkpoint folder, ``differences`` describes each differing field of
    the fingerprint (e.g. ``"parameters (selection: ... in the checkpoint, ... now)"``) and
    ``remedy`` ends the message; :meth:`with_remedy` rewords it for a program's own options.
    """

    def __init__(self, directory: str | os.PathLike, differences: list[str] = (),
                 remedy: str = "use another checkpoint_dir, or delete it to start over"):
        self.directory, self.differences, self.remedy = Path(directory), list(differences), remedy
        super().__init__(f"the checkpoint in {self.directory} was made by a run with different "
                         f"{_join(self.differences)}; {remedy}")

    def __reduce__(self):  # picklable (errors cross process boundaries, e.g. from mp.spawn)
        return CheckpointMismatch, (self.directory, self.differences, self.remedy)

    def with_remedy(self, remedy: str) -> "CheckpointMismatch":
        """The same mismatch, ending with ``remedy``."""
        return CheckpointMismatch(self.directory, self.differences, remedy)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def describe_difference(name: str, theirs, mine) -> str:
    """``name``, with what differs: the differing entries of a dict, or both values when short."""
    if isinstance(theirs, dict) and isinstance(mine, dict):
        parts = [f"{k}: {shown(theirs.get(k)) or 'one value'} in the checkpoint, {shown(mine.get(k)) or 'another'} now"
                 for k in differing_keys(theirs, mine)]
        return f"{name} ({'; '.join(parts)})"
    if shown(theirs) is not None and shown(mine) is not None:
        return f"{name} ({shown(theirs)} in the checkpoint, {shown(mine)} now)"
    return name


def model_digest(model: nn.Module) -> str:
    """SHA-256 of the model's parameters and buffers (names, dtypes, shapes and values; other
    state, such as a module's extra state, by its repr)."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            digest.update(f"{name}:{value!r};".encode())
            continue
        t = value.detach().to("cpu")
        t = (t.int_repr() if t.is_quantized else t).contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@dataclass
class Checkpoint:
    result: SummitResult
    batches_done: int
    loader_state: dict | None = None  # what a stateful loader's state_dict() gave at that point


class Checkpointer:
    """Saves and finds the checkpoints of one run in ``directory``.

    ``fingerprint`` is a JSON-able dict describing the run (model digest, layers, parameters,
    dataset length, ...); a checkpoint whose fingerprint differs is refused, naming what differs.
    """

    def __init__(self, directory: str | os.PathLike, fingerprint: dict):
        self.directory = Path(directory)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # normalise tuples to lists

    def load(self) -> Checkpoint | None:
        """The latest checkpoint, or None if the folder holds none."""
        latest = self.directory / _LATEST
        if not latest.is_file():
            return None
        folder = self.directory / latest.read_text().strip()
        try:
            state = json.loads((folder / _STATE).read_text())
            batches_done, fingerprint = int(state["batches_done"]), state["fingerprint"]
            loader_state = state.get("loader_state")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ResultFormatError(f"checkpoint {folder} is damaged ({exc}); delete {self.directory} to start over") from None
        different = differing_keys(fingerprint, self.fingerprint)
        if different:
            raise CheckpointMismatch(self.directory, [
                describe_difference(k, fingerprint.get(k), self.fingerprint.get(k)) for k in different])
        checkpoint = Checkpoint(SummitResult.load(folder), batches_done, loader_state)
        log.info("resuming from the checkpoint in %s after %d batches", self.directory, batches_done,
                 extra={"directory": self.directory, "batches_done": batches_done})
        return checkpoint

    def save(self, result: SummitResult, batches_done: int, loader_state: dict | None = None) -> Path:
        """Write a checkpoint after ``batches_done`` batches (with ``loader_state``, JSON-able, if
        given) and make it the latest."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"ckpt-{batches_done:09d}"
        final, tmp = self.directory / name, self.directory / f".{name}.tmp-{os.getpid()}"
        if not final.exists():  # an existing one at the same position holds the same counts
            shutil.rmtree(tmp, ignore_errors=True)
            result.save(tmp)
            state = json.dumps({"batches_done": batches_done, "fingerprint": self.fingerprint,
                                **({"loader_state": loader_state} if loader_state is not None else {})})
            _atomic_write(tmp / _STATE, lambda path: path.write_text(state))
            os.replace(tmp, final)
        _atomic_write(self.directory / _LATEST, lambda path: path.write_text(name))
        for old in self.directory.iterdir():
            if old.name != name and old.name != _LATEST and old.name.startswith(("ckpt-", ".ckpt-")):
                shutil.rmtree(old, ignore_errors=True)
        return final
