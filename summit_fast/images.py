"""Images from a folder, preprocessed for a model: :class:`ImageFolderDataset`, :class:`Preprocess`
and :class:`ImageLoader` (batches that name each image by its dataset index and can skip
unreadable files).

Pillow reads the files (JPEG, PNG, BMP). It is imported when an image is first read, so the
models, whose ``PREPROCESS`` is a :class:`Preprocess`, import without it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from .imagenet import imagenet_class_index, imagenet_class_names

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
LABEL_MODES = ("auto", "folders", "imagenet", "none")
UNLABELED = -1


@dataclass(frozen=True)
class Preprocess:
    """Central crop, bilinear resize to ``size`` x ``size``, then ``x = (pixel - mean) / std`` per
    RGB channel, with pixels in 0..255.

    ``square_crop=True`` crops the central square of side ``crop_fraction`` * the shorter side
    (torchvision's ``Resize(256)`` + ``CenterCrop(224)`` for ``crop_fraction=0.875``, up to
    resampling); ``False`` keeps ``crop_fraction`` of each side, so the aspect ratio changes on
    resize (TensorFlow's ``central_crop``, as TF-slim evaluation does).
    """

    size: int
    crop_fraction: float
    square_crop: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The central crop of a ``width`` x ``height`` image as (left, top, right, bottom) pixels;
        it is what the model's input shows, resized to ``size`` x ``size``."""
        if self.square_crop:
            crop_w = crop_h = max(1, int(min(width, height) * self.crop_fraction))
        else:
            crop_w, crop_h = max(1, int(width * self.crop_fraction)), max(1, int(height * self.crop_fraction))
        left, top = (width - crop_w) // 2, (height - crop_h) // 2
        return left, top, left + crop_w, top + crop_h

    def __call__(self, image) -> torch.Tensor:
        """A PIL image as the model's input, float32 (3, size, size)."""
        from PIL import Image

        image = image.convert("RGB")
        # Crop, then resize the crop alone: the filter sees no pixel outside the crop.
        image = image.crop(self.crop_box(*image.size)).resize((self.size, self.size), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return ((pixels - mean) / std).contiguous()


# torchvision's ImageNet models: mean/std of ImageNet in 0..255 (0.485, 0.456, 0.406 and 0.229,
# 0.224, 0.225 on the 0..1 scale), Resize(256) + CenterCrop(224).
TORCHVISION_IMAGENET = Preprocess(224, 0.875, True, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
# TensorFlow-slim's "inception" convention (its MobileNets, the Coral/TFLite models): central
# 87.5% of each side, x = (pixel - 128) / 128 (the uint8 models' zero point 128, scale 1/128).
TF_SLIM_IMAGENET = Preprocess(224, 0.875, False, (128.0, 128.0, 128.0), (128.0, 128.0, 128.0))


class UnreadableImageError(OSError):
    """An image file that cannot be read or decoded. Its message is one line naming the file,
    also when a ``DataLoader`` worker raised it: the loader re-raises it in the main process as
    ``UnreadableImageError(<the worker's whole traceback>)``, of which only the last line (this
    error's own message) is kept."""

    def __init__(self, message: str):
        message = str(message)
        if "Original Traceback" in message:  # re-raised from a DataLoader worker
            last = [line for line in message.splitlines() if line.strip()][-1]
            message = last.split(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


def open_rgb(path: str | os.PathLike):
    """Read an image file as an RGB PIL image; :class:`UnreadableImageError` (an ``OSError``)
    naming the file if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # converting decodes the whole file, inside this try
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImageError(f"cannot read image file {path}: {exc}") from exc


class ImageFolderDataset(Dataset):
    """The JPEG/PNG/BMP images under ``root``, as ``(preprocess(image), label)`` pairs.

    ``labels`` says where labels come from:

    - ``"folders"``: each sub-folder of ``root`` is a class (images found recursively in it);
      class i is the i-th sub-folder name in sorted order. Images directly in ``root`` are left out.
      These labels are positions in the list of folders, not any model's class indices.
    - ``"imagenet"``: from ImageNet WordNet ids (wnids), anywhere under ``root``: the folder
      holding the file (``n01440764/ILSVRC2012_val_00000293.JPEG``, ImageNet's usual train/val
      layout) or else the file name ``<wnid>_<name>.JPEG``; the label is the wnid's index among
      the 1000 ILSVRC-2012 classes (see :mod:`summit_fast.imagenet`), so a subset of classes
      keeps the standard indices of ImageNet classifiers. A file whose folder and name give two
      different wnids is an error.
    - ``"none"``: unlabeled; every label is ``-1`` (aggregate with ``label_source="prediction"``).
    - ``"auto"`` (default): ``"imagenet"`` if every file has a known wnid (folder or name), else
      ``"folders"`` if ``root`` has sub-folders, else an error.

    ``preprocess`` turns an RGB PIL image into the model's input tensor: a model's
    ``PREPROCESS`` (a :class:`Preprocess`) or any callable. Files are listed and labelled when
    the dataset is made (errors name the file); an image is read only when its item is fetched.

    Attributes: ``paths`` (each item's file, sorted; for cropping dataset examples from the
    original image, with ``preprocess.crop_box``), ``targets`` (each item's label), ``classes``
    (the class names, position = label; empty when unlabeled), ``label_mode``.
    """

    def __init__(self, root: str | os.PathLike, preprocess, *, labels: str = "auto"):
        if labels not in LABEL_MODES:
            raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise NotADirectoryError(f"image folder {self.root} does not exist or is not a folder")
        self.preprocess = preprocess
        files = _image_files(self.root)
        if not files:
            raise ValueError(f"no {'/'.join(e[1:].upper() for e in IMAGE_EXTENSIONS)} images under {self.root}")
        wnid_labels = [_wnid_label(self.root, p) for p in files]
        self.label_mode = _auto_label_mode(self.root, files, wnid_labels) if labels == "auto" else labels
        if self.label_mode == "folders":
            self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
            index = {name: i for i, name in enumerate(self.classes)}
            labelled = [(p, index[p.relative_to(self.root).parts[0]]) for p in files if p.parent != self.root]
            if not labelled:
                raise ValueError(f"labels='folders' but {self.root} has no images in class sub-folders")
            self.paths, self.targets = [p for p, _ in labelled], [y for _, y in labelled]
        elif self.label_mode == "imagenet":
            unknown = _first_unknown_wnid(files, wnid_labels)
            if unknown is not None:
                raise ValueError(f"{unknown}: the file name does not start with one of the 1000 ILSVRC-2012 WordNet "
                                 "ids, nor is its folder named by one (expected '<wnid>_<name>.JPEG', e.g. "
                                 "n01440764_tench.JPEG, or a folder n01440764/)")
            _check_wnids_agree(self.root, files)
            self.classes, self.paths, self.targets = imagenet_class_names(), files, wnid_labels
        else:
            self.classes, self.paths, self.targets = [], files, [UNLABELED] * len(files)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.preprocess(open_rgb(self.paths[index])), self.targets[index]

    def fingerprint(self) -> str:
        """SHA-256 of what identifies the images and their labels: every file's path relative
        to ``root``, size, modification time and label. Cheap (one ``stat`` per file, no
        reads); a file replaced by another of the same name changes it."""
        digest = hashlib.sha256(f"{self.label_mode}\n".encode())
        for path, label in zip(self.paths, self.targets):
            stat = path.stat()
            digest.update(f"{path.relative_to(self.root).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\t{label}\n"
                          .encode())
        return digest.hexdigest()


class ImageLoader:
    """Batches ``(images, labels)`` of an :class:`ImageFolderDataset` through a ``DataLoader``
    (same ``batch_size``, ``sampler``, ``num_workers``, ``pin_memory``), for :func:`summit_fast.aggregate`.

    Each image is named by its index in the dataset (:meth:`image_ids`), so dataset examples
    name the right file (``dataset.paths[id]``) whichever images a batch holds. With
    ``skip_unreadable`` a file that cannot be read is left out of its batch (a batch may end up
    with fewer images, or none) and recorded in :attr:`skipped` as ``(dataset index, reason)``;
    without it :class:`UnreadableImageError` is raised. ``dataset`` and ``sampler`` are exposed as
    a ``DataLoader``'s are.
    """

    def __init__(self, dataset: ImageFolderDataset, *, batch_size: int, sampler=None, num_workers: int = 0,
                 pin_memory: bool = False, skip_unreadable: bool = False):
        self.dataset, self.sampler, self.batch_size = dataset, sampler, batch_size
        self.skipped: list[tuple[int, str]] = []
        self._skipped_before: list[tuple[int, str]] = []  # restored from a checkpoint
        self._ids = torch.empty(0, dtype=torch.long)
        self._order = None  # the order of the next pass, once fingerprint() has drawn it
        self._items = _IndexedItems(dataset, skip_unreadable)
        self._options = {"num_workers": num_workers, "pin_memory": pin_memory, "collate_fn": _collate_readable}

    def __len__(self) -> int:
        """Batches per pass."""
        items = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return -(-items // self.batch_size)

    def __iter__(self):
        return self.batches_from(0)

    def batches_from(self, start: int):
        """The batches of a pass from batch ``start`` on, without reading the images of the
        batches before it (what :func:`summit_fast.aggregate` uses to resume a checkpoint); the
        files skipped in those are the ones :meth:`load_state_dict` restored."""
        order, self._order = self._next_order(), None
        loader = DataLoader(self._items, batch_size=self.batch_size, sampler=order[start * self.batch_size:],
                            **self._options)
        self.skipped = list(self._skipped_before) if start else []  # a new pass meets the same files again
        for images, labels, ids, skipped in loader:
            self.skipped.extend(skipped)
            self._ids = ids
            yield images, labels

    def fingerprint(self) -> dict:
        """What identifies the batches of the next pass (what :func:`summit_fast.aggregate`
        compares when resuming a checkpoint, as :meth:`batches_from` does not read the batches
        before): the dataset's fingerprint (files, sizes, times, labels), the preprocessing (a
        :class:`Preprocess` by its parameters, another callable by its type), the batch size and
        the SHA-256 of the sampler's order. The order is drawn here and kept for that pass, so
        that a sampler drawing a new order each time (a seeded ``RandomSampler``) is
        fingerprinted by the order the pass uses."""
        self._order = self._next_order()
        preprocess = self.dataset.preprocess
        return {"images": self.dataset.fingerprint(), "batch size": self.batch_size,
                "preprocess": repr(preprocess) if isinstance(preprocess, Preprocess) else type(preprocess).__qualname__,
                "order": hashlib.sha256(",".join(map(str, self._order)).encode()).hexdigest()}

    def _next_order(self) -> list[int]:
        """The dataset indices of the next pass, in order (the one fingerprinted, if any)."""
        if self._order is not None:
            return self._order
        return list(self.sampler) if self.sampler is not None else list(range(len(self.dataset)))

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the pass so far: the files skipped."""
        return {"skipped": [[index, reason] for index, reason in self.skipped]}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s record, for a pass resumed with :meth:`batches_from`."""
        self._skipped_before = [(int(index), str(reason)) for index, reason in state.get("skipped", [])]

    def image_ids(self, aggregator, images: torch.Tensor) -> torch.Tensor:
        """The dataset indices of the batch last yielded (what :func:`summit_fast.aggregate`
        asks a loader that has this method, in place of counting positions in the stream)."""
        if images.shape[0] != self._ids.shape[0]:
            raise RuntimeError(f"image_ids: {images.shape[0]} images but the last batch held {self._ids.shape[0]}")
        return self._ids


class _IndexedItems(Dataset):
    """``(index, image or None, label, reason or None)`` per item of ``dataset``: the image is
    None, and the reason says why, when the file is unreadable and ``skip_unreadable`` is set."""

    def __init__(self, dataset: ImageFolderDataset, skip_unreadable: bool):
        self.dataset, self.skip_unreadable = dataset, skip_unreadable

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            image, label = self.dataset[index]
        except UnreadableImageError as exc:
            if not self.skip_unreadable:
                raise
            return index, None, self.dataset.targets[index], str(exc)
        return index, image, label, None


def _collate_readable(items):
    """(images, labels, dataset indices, [(index, reason) of skipped files]) of a batch of
    :class:`_IndexedItems`; a batch of only unreadable files gives zero images."""
    readable = [(image, label) for _, image, label, _ in items if image is not None]
    ids = torch.tensor([index for index, image, _, _ in items if image is not None], dtype=torch.long)
    skipped = [(index, reason) for index, image, _, reason in items if image is None]
    if readable:
        images, labels = default_collate(readable)
    else:
        images, labels = torch.empty(0, 3, 0, 0), torch.empty(0, dtype=torch.long)
    return images, labels, ids, skipped


def _image_files(root: Path) -> list[Path]:
    """Image files under ``root``, recursively, sorted; hidden files and folders are skipped."""
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _wnid_index(name: str) -> int | None:
    """The ImageNet class index of WordNet id ``name``, or None."""
    try:
        return imagenet_class_index(name)
    except KeyError:
        return None


def _wnids(root: Path, path: Path) -> tuple[int | None, int | None]:
    """The ImageNet class indices named by the folder holding ``path`` (not ``root``) and by its
    file name ``<wnid>_<name>.<ext>`` (None where they name none)."""
    return (_wnid_index(path.parent.name) if path.parent != root else None,
            _wnid_index(path.stem.split("_", 1)[0]))


def _wnid_label(root: Path, path: Path) -> int | None:
    """The ImageNet class index of a file in a folder named by a wnid, else of a file named
    ``<wnid>_<name>.<ext>``, else None."""
    folder, name = _wnids(root, path)
    return folder if folder is not None else name


def _check_wnids_agree(root: Path, files: list[Path]) -> None:
    """Refuse a file whose folder and name are two different wnids (which label would be right?)."""
    for path in files:
        folder, name = _wnids(root, path)
        if folder is not None and name is not None and folder != name:
            raise ValueError(f"{path}: its folder {path.parent.name} and its file name name two different "
                             "ImageNet classes; move it to its class's folder or rename it")


def _first_unknown_wnid(files: list[Path], wnid_labels: list[int | None]) -> Path | None:
    return next((p for p, y in zip(files, wnid_labels) if y is None), None)


def _auto_label_mode(root: Path, files: list[Path], wnid_labels: list[int | None]) -> str:
    unknown = _first_unknown_wnid(files, wnid_labels)
    if unknown is None:
        return "imagenet"
    if any(p.parent != root for p in files):
        return "folders"
    raise ValueError(f"cannot tell the labels of the images in {root}: {unknown} is not named "
                     "'<wnid>_<name>' nor in a folder named by an ImageNet WordNet id, and there are no "
                     "class sub-folders; pass labels='none' (summit-fast run --labels none) for unlabeled images")
