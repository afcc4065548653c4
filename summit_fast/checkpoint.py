"""Checkpoint and resume for long aggregation runs.

A checkpoint is a saved :class:`SummitResult` plus ``state.json`` in a folder ``ckpt-<batches>``.
The state holds the batches consumed, a fingerprint of the run's configuration, the
:class:`Stream` of batches counted (running digests of their sizes, labels and image values)
and the SHA-256 of the result's manifest (which holds the counts' SHA-256), all under a SHA-256
of its canonical JSON: an edited or corrupted state, or counts that are not the state's, are
refused on load, as is a ``LATEST`` that is not a plain file naming a folder ``ckpt-<digits>``
directly inside the checkpoint folder (no other path, no symbolic link).

A checkpoint is written under a temporary name ``.ckpt-<batches>.tmp-<process id>``, fsynced and
renamed; then the file ``LATEST`` is atomically replaced to point at it, and every other
checkpoint is removed. A process killed at any moment leaves ``LATEST`` pointing at a complete
checkpoint (or no ``LATEST`` at all); an exception during a save (Ctrl-C included) removes the
temporary folder, and the temporaries of killed processes (whose process id is not alive) are
removed by the next run. Disk use: one checkpoint, two while a save is being written.

When a checkpoint is resumed, the logger ``summit_fast.checkpoint`` records it (level INFO, with
``directory`` and ``batches_done`` attributes on the record), so a program can say so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ._staging import process_alive, remove
from ._text import differing_keys, shown
from .result import _MANIFEST_FILE, ResultFormatError, SummitResult, _atomic_write, _sha256

_LATEST = "LATEST"
_STATE = "state.json"
_CHECKPOINT = re.compile(r"ckpt-(\d+)")  # a checkpoint's folder: ckpt-<batches done>
_TEMPORARY = re.compile(r"\.(?:ckpt-\d+|LATEST)\.tmp-(\d+)")  # what a save writes first: .<name>.tmp-<pid>
log = logging.getLogger(__name__)
monotonic = time.monotonic  # the clock of checkpoint_seconds (a name tests can replace)


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
        t = t.int_repr() if t.is_quantized else t
        digest.update(f"{name}:{value.dtype}:{tuple(t.shape)};".encode())
        digest.update(_tensor_bytes(t))
    return digest.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """The bytes of ``t``'s values, in order (any dtype; copied to the host)."""
    t = t.detach().to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


# What a stream's digests cover, in the order a difference is named (another batch size changes
# every digest; other labels change the data's too).
_ASPECTS = ("batch size", "order", "data")
_WHAT_DIFFERS = {"batch size": "the batches' sizes", "order": "the labels or image ids", "data": "the images' values"}
_SAMPLE = 16  # image values per image in the data digest: evenly spaced, exact bytes
_VARIES = "varying"  # Stream.image when the batches' images have more than one shape or dtype


def _images_kind(images: torch.Tensor) -> str | None:
    """The dtype and (C, H, W) of a batch's images, e.g. ``float32 (3, 224, 224)``; None when empty."""
    return f"{str(images.dtype).removeprefix('torch.')} {tuple(images.shape[1:])}" if images.shape[0] else None


def _batch_bytes(images: torch.Tensor, labels, image_ids: torch.Tensor | None) -> dict[str, bytes]:
    """What identifies one batch, by aspect: its size; its labels and image ids (when the loader
    names its images); its images' dtype, shape and a sample of their values."""
    flat = images.detach().flatten(1)  # (B, rest); B may be 0 (a batch whose files were all skipped)
    n = min(_SAMPLE, flat.shape[1])
    columns = torch.arange(n, device=flat.device) * (flat.shape[1] - 1) // max(n - 1, 1)
    order = b"" if labels is None else _tensor_bytes(torch.as_tensor(labels).to(torch.int64))
    if image_ids is not None:
        order += b"|" + _tensor_bytes(image_ids.to(torch.int64))
    return {"batch size": str(images.shape[0]).encode(), "order": order,
            "data": f"{images.dtype} {tuple(images.shape[1:])};".encode() + _tensor_bytes(flat[:, columns])}


class Stream:
    """What identifies the batches counted so far: how many batches and images, the size of the
    first batch, the shape of the images, and running SHA-256 digests (after the first batch and
    after all) of the batches' sizes, order (labels, image ids) and data (a sample of image
    values). It is a checkpoint's record of the batches it counted; ``state`` is a
    :meth:`to_json` to continue from."""

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.batches, self.images = int(state.get("batches", 0)), int(state.get("images", 0))
        self.batch_size, self.image = state.get("batch size"), state.get("image")
        self.first = state.get("first")
        self.digests = dict(state.get("digests") or {aspect: hashlib.sha256().hexdigest() for aspect in _ASPECTS})
        if sorted(self.digests) != sorted(_ASPECTS):
            raise ValueError(f"the stream's digests are {sorted(self.digests)}, expected {sorted(_ASPECTS)}")

    def to_json(self) -> dict:
        return {"batches": self.batches, "images": self.images, "batch size": self.batch_size, "image": self.image,
                "first": self.first, "digests": self.digests}

    def add(self, images: torch.Tensor, labels=None, image_ids: torch.Tensor | None = None) -> None:
        """Add a batch: ``images`` (B, C, H, W), its labels (or None) and the dataset ids of its
        images (None unless the loader names them)."""
        for aspect, data in _batch_bytes(images, labels, image_ids).items():
            self.digests[aspect] = hashlib.sha256(bytes.fromhex(self.digests[aspect]) + data).hexdigest()
        self.batches, self.images = self.batches + 1, self.images + images.shape[0]
        if self.batches == 1:
            self.batch_size, self.first = images.shape[0], dict(self.digests)
        kind = _images_kind(images)
        if kind is not None:
            self.image = kind if self.image in (None, kind) else _VARIES

    def reread_difference(self, recorded: "Stream") -> str | None:
        """What differs between this stream, the first batches read again, and ``recorded``: compared
        after the first batch and after as many as ``recorded`` holds (None in between, or when
        nothing differs)."""
        if self.batches == 1 and self.batch_size != recorded.batch_size:
            return f"batch size ({recorded.batch_size} in the checkpoint, {self.batch_size} now)"
        if self.batches == 1:
            theirs, where = recorded.first, "batch 0"
        elif self.batches == recorded.batches:
            theirs, where = recorded.digests, f"batches 0 to {self.batches - 1}"
        else:
            return None
        aspect = next((a for a in _ASPECTS if self.digests[a] != theirs[a]), None)
        return None if aspect is None else f"{aspect} ({_WHAT_DIFFERS[aspect]} differ in {where})"

    def next_difference(self, images: torch.Tensor) -> str | None:
        """How the first batch after these differs from them: images of another shape or dtype
        (when all of these had one); None if it does not."""
        kind = _images_kind(images)
        if kind is None or self.image in (None, _VARIES, kind):
            return None
        return f"data (images of {self.image} in the checkpoint, of {kind} now)"


class Replay:
    """Checks that a resumed loader gives the stream a checkpoint ``recorded``: the batches it
    yields again (unless it ``skips`` them, as a loader with ``batches_from`` does) must be the
    ones counted, and the first new batch must hold images like theirs. A difference raises
    :class:`CheckpointMismatch` naming it (batch size, order, data, number of batches), before
    any new batch is counted."""

    def __init__(self, directory: Path, recorded: Stream, skips: bool):
        self.directory, self.recorded = directory, recorded
        self.reread = None if skips else Stream()

    def counted(self, index: int, images: torch.Tensor, labels, image_ids: torch.Tensor | None) -> bool:
        """Whether batch ``index`` is one the checkpoint counted (checked against its record); the
        first new batch is checked for resembling them."""
        if index < self.recorded.batches:
            self.reread.add(images, labels, image_ids)
            self._refuse(self.reread.reread_difference(self.recorded))
            return True
        if index == self.recorded.batches:
            self._refuse(self.recorded.next_difference(images))
        return False

    def end(self) -> None:
        """The loader is exhausted: refuse it if it yielded fewer batches than were counted."""
        if self.reread is not None and self.reread.batches < self.recorded.batches:
            self._refuse(f"number of batches (the checkpoint counted {self.recorded.batches}, "
                         f"the loader yields {self.reread.batches})")

    def _refuse(self, difference: str | None) -> None:
        if difference is not None:
            raise CheckpointMismatch(self.directory, [difference])


class Schedule:
    """When a run saves a checkpoint: once ``every`` batches or ``seconds`` seconds (by
    :func:`monotonic`) have passed since the last save or the start, whichever comes first;
    ``seconds`` None or 0 saves by batches alone. ``position`` is the batches done at the last save."""

    def __init__(self, every: int, seconds: float | None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoint_every must be a positive int (batches), got {every!r}")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, numbers.Real)
                                    or not math.isfinite(seconds) or seconds < 0):
            raise ValueError(f"checkpoint_seconds must be a number of seconds >= 0 (None or 0: by batches alone), "
                             f"got {seconds!r}")
        self.every, self.seconds = every, seconds or None
        self.restart(0)

    def restart(self, position: int) -> None:
        """Count from now and from ``position`` batches done (a save, or the start of a run)."""
        self.position, self.since = position, monotonic()

    def due(self, position: int) -> bool:
        """Whether a checkpoint is due after ``position`` batches done."""
        return (position - self.position >= self.every
                or (self.seconds is not None and monotonic() - self.since >= self.seconds))


@dataclass
class Checkpoint:
    result: SummitResult
    batches_done: int
    stream: Stream  # the batches counted
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
        """The latest checkpoint, or None if the folder holds none. A damaged one raises
        :class:`ResultFormatError`, one of another configuration :class:`CheckpointMismatch`.
        Temporary folders of processes that are no longer alive are removed first."""
        self._remove_stale()
        latest = self.directory / _LATEST
        if not (latest.exists() or latest.is_symlink()):
            return None
        try:
            folder = self._latest_folder(latest)
            batches_done, fingerprint, stream, loader_state = _read_state(folder)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise self._damaged(exc) from None
        different = differing_keys(fingerprint, self.fingerprint)
        if different:
            raise CheckpointMismatch(self.directory, [
                describe_difference(k, fingerprint.get(k), self.fingerprint.get(k)) for k in different])
        try:
            result = SummitResult.load(folder)
        except ResultFormatError as exc:
            raise self._damaged(exc) from None
        if result.num_images != stream.images:
            raise self._damaged(f"its counts hold {result.num_images} images, its stream {stream.images}")
        log.info("resuming from the checkpoint in %s after %d batches", self.directory, batches_done,
                 extra={"directory": self.directory, "batches_done": batches_done})
        return Checkpoint(result, batches_done, stream, loader_state)

    def save(self, result: SummitResult, batches_done: int, stream: Stream, loader_state: dict | None = None) -> Path:
        """Write a checkpoint of ``result`` after ``batches_done`` batches, the ``stream`` of
        them (with ``loader_state``, JSON-able, if given), make it the latest and remove the others."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"ckpt-{batches_done:09d}"
        final, tmp = self.directory / name, self.directory / f".{name}.tmp-{os.getpid()}"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            result.save(tmp)
            state = json.loads(json.dumps({  # as it reads back (tuples as lists, keys as strings)
                "batches_done": batches_done, "fingerprint": self.fingerprint, "stream": stream.to_json(),
                "result_sha256": _sha256(tmp / _MANIFEST_FILE),
                **({"loader_state": loader_state} if loader_state is not None else {})}))
            text = json.dumps({"sha256": _checksum(state), "state": state})
            _atomic_write(tmp / _STATE, lambda path: path.write_text(text))
            # One of this name is left by a run killed before making it the latest: it may hold
            # other batches than these.
            remove(final)
            os.replace(tmp, final)
        except BaseException:  # Ctrl-C included: no half-written folder stays behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _atomic_write(self.directory / _LATEST, lambda path: path.write_text(name))
        self._remove_stale(keep=name)
        return final

    def _latest_folder(self, latest: Path) -> Path:
        """The folder ``LATEST`` names: ``ckpt-<digits>`` directly in the checkpoint folder, both
        plain (no symbolic links); ValueError otherwise."""
        if latest.is_symlink() or not latest.is_file():
            raise ValueError(f"{latest} is not a plain file")
        name = latest.read_text().strip()
        if not _CHECKPOINT.fullmatch(name):
            raise ValueError(f"{latest} names {name[:80]!r}, not a folder ckpt-<digits> in {self.directory}")
        folder = self.directory / name
        if folder.is_symlink() or not folder.is_dir():
            raise ValueError(f"{folder} is {'a symbolic link' if folder.is_symlink() else 'missing'}")
        return folder

    def _damaged(self, why) -> ResultFormatError:
        return ResultFormatError(f"the checkpoint in {self.directory} is damaged: {why}; delete {self.directory} "
                                 "to start over")

    def _remove_stale(self, keep: str | None = None) -> None:
        """Remove the temporaries of processes no longer alive and, given the checkpoint to
        ``keep``, every other checkpoint."""
        if not self.directory.is_dir():
            return
        for entry in self.directory.iterdir():
            temporary = _TEMPORARY.fullmatch(entry.name)
            if ((temporary and not process_alive(int(temporary.group(1))))
                    or (keep is not None and entry.name != keep and _CHECKPOINT.fullmatch(entry.name))):
                remove(entry)


def _checksum(state: dict) -> str:
    """SHA-256 of ``state``'s canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(state, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read_state(folder: Path) -> tuple[int, dict, Stream, dict | None]:
    """(batches done, fingerprint, stream, loader state) of the checkpoint in ``folder``, checked
    against its checksum, its result's manifest and its folder name; ValueError, KeyError or
    TypeError if damaged."""
    saved = json.loads((folder / _STATE).read_text())
    if not isinstance(saved, dict) or "sha256" not in saved:
        raise ValueError(f"{_STATE} has no checksum (written by an earlier summit_fast?)")
    state = saved["state"]
    if saved["sha256"] != _checksum(state):
        raise ValueError(f"{_STATE} does not match its checksum (edited or corrupted)")
    if state["result_sha256"] != _sha256(folder / _MANIFEST_FILE):
        raise ValueError(f"its result is not the one {_STATE} was saved with")
    batches_done, stream = state["batches_done"], Stream(state["stream"])
    if batches_done != int(_CHECKPOINT.fullmatch(folder.name).group(1)) or batches_done != stream.batches:
        raise ValueError(f"batches_done {batches_done!r} disagrees with the folder name or the stream of "
                         f"{stream.batches} batches")
    return batches_done, dict(state["fingerprint"]), stream, state.get("loader_state")
