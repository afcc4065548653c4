"""SummitResult: the additive counts of one aggregation run plus what rebuilds its graphs.

On disk a result is a folder with ``counts.safetensors`` (no pickle) and ``manifest.json``.
The counts file is the save: it holds the manifest too, in its header (format 2, see
:mod:`summit_fast.storage`), and is written under a temporary name, fsynced and renamed, so a
crash never leaves a partial result and a load, which reads the manifest and the counts from
that one open file, never mixes two saves (even concurrent ones to the same folder).
``manifest.json`` is a readable copy that load does not read (except for format-1 results,
whose manifest it is). By default the counts are stored compactly and losslessly: each in the
narrowest integer type that holds it, mostly-zero ones as positions and values.

A load checks what can be checked (:mod:`summit_fast.result_checks`): classes, class names and
graph against the counts, and every count within 0..its class's images.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import storage
from ._text import differing_keys, shown
from .discovery import ConvEdge, ModelGraph
from .examples import FIELDS as EXAMPLE_FIELDS, empty_examples, merge_examples
from .result_checks import check_counts, check_manifest

FORMAT = "summit_fast.result"
FORMAT_VERSION = 2  # 1: manifest.json is the manifest; 2: counts.safetensors holds it
_COUNTS_FILE = "counts.safetensors"
_MANIFEST_FILE = "manifest.json"
_DAMAGED = "(the result was damaged or edited; re-create it from its run)"

# Integer types a result's counts can be stored in (``params["count_dtype"]``). Every count is at
# most the number of images of its class (an image adds at most 1 to each entry of its class's
# row), so a narrower type is exact while no class has more images than the type's maximum.
COUNT_DTYPES = {"int32": torch.int32, "int16": torch.int16}

# The summed top-1 probability is fixed point: each image adds round(p * 2**32), p taken in
# float64 from the model's float probability. Integer sums are exact in any order, so shards,
# batchings and ranks add up to identical totals, where a float sum can depend on the order of
# its additions. A float32 p >= 2**-8 is kept exactly (smaller ones to 2**-32); int64 holds the
# sum of 2**31 images a class.
PROBABILITY_SCALE = 2**32

# Each image's top-1 probability in whole percent, round(100 * p), is also counted per class in a
# histogram over 0..100: the per-image values Summit's class list shows (``accs``), exact and
# additive like every count.
PERCENT_BINS = 101


def probability_to_fixed(probability: torch.Tensor) -> torch.Tensor:
    """``probability`` (a float tensor) in the fixed point of ``top1_probability_fixed``: int64
    ``round(p * PROBABILITY_SCALE)``."""
    return torch.round(probability.double() * PROBABILITY_SCALE).to(torch.int64)


def probability_to_percent(probability: torch.Tensor) -> torch.Tensor:
    """``probability`` (a float tensor) as the bin of ``top1_probability_histogram``: int64
    ``round(100 * p)`` (half to even, in float64), within 0..100."""
    return torch.round(probability.double() * 100).clamp(0, PERCENT_BINS - 1).to(torch.int64)


def count_dtype_name(count_dtype: str | torch.dtype) -> str:
    """``"int32"`` or ``"int16"`` for that name or torch dtype; ValueError for anything else."""
    name = {v: k for k, v in COUNT_DTYPES.items()}.get(count_dtype, count_dtype)
    if not isinstance(name, str) or name not in COUNT_DTYPES:
        raise ValueError(f"count_dtype must be one of {', '.join(COUNT_DTYPES)}, got {count_dtype!r}")
    return name


def count_dtype_params(params: dict, count_dtype: str | torch.dtype) -> dict:
    """``params`` with the count type set. The default, int32, is left out, so that int32 results
    and checkpoints keep the parameters (and fingerprints) they had before the option existed."""
    name = count_dtype_name(count_dtype)
    params = {k: v for k, v in params.items() if k != "count_dtype"}
    return params if name == "int32" else dict(params, count_dtype=name)


# Parameters that say how counts were computed, not what they mean: every backend counts
# identically, so results that differ only in these still merge, resume and compare equal.
PROVENANCE_PARAMS = ("backend",)


def counting_params(params: dict) -> dict:
    """``params`` without the :data:`PROVENANCE_PARAMS`: what must agree for counts to add up."""
    return {k: v for k, v in params.items() if k not in PROVENANCE_PARAMS}


def with_backends(params: dict, *backends: str | None) -> dict:
    """``params`` whose ``backend`` names every backend that counted a part of the result, those
    it names already and ``backends`` ("cpu+torch" for a sum of shards of both); none if unknown."""
    used = sorted({n for names in (params.get("backend"), *backends) if names for n in names.split("+")})
    rest = {k: v for k, v in params.items() if k != "backend"}
    return dict(rest, backend="+".join(used)) if used else rest


def count_dtype_of(params: dict) -> torch.dtype:
    """The count type a result with these parameters uses (int32 for results without the key)."""
    return COUNT_DTYPES[count_dtype_name(params.get("count_dtype", "int32"))]


def check_count_capacity(images_per_class: torch.Tensor, count_dtype: torch.dtype, class_ids: list[int],
                         what: str) -> None:
    """Raise OverflowError if some class would have more images than ``count_dtype`` can count.

    ``images_per_class`` is the per-row total *after* the operation ``what`` describes; call this
    before writing anything, so that a refused operation leaves the counts untouched.
    """
    limit = torch.iinfo(count_dtype).max
    over = torch.nonzero(images_per_class > limit).flatten()
    if over.numel():
        row = int(over[0])
        name = str(count_dtype).removeprefix("torch.")
        raise OverflowError(f"{what} would give class {class_ids[row]} {int(images_per_class[row])} images, more "
                            f"than {name} counts can hold ({limit}), so it was refused and nothing "
                            f"changed. Use count_dtype='int32' (SummitResult.with_count_dtype('int32') widens a result)")


class ResultFormatError(ValueError):
    """A result folder is missing, corrupted or of another format; the message says what."""


@dataclass
class SummitResult:
    """Counts of SPEC.md A and B over a dataset.

    The counts (activation, influence, skip) are int32, or int16 when the run asked for
    ``count_dtype="int16"`` (half the memory; exact up to 32767 images per class, checked).

    - ``activation[layer]``: int32 or int16 (K, C_layer) — images of class k that selected channel c.
    - ``influence[conv]``: int32 or int16 (K, C_out, C_src) (empty for an activation-only run) — images of class k for which source channel i
      was among the top-k influences on the conv's output channel j. For a grouped or depthwise
      conv the last dim holds only the C_src/groups sources of j's group (``edge.dense()``
      expands it; ``edge.source_channel(j, s)`` names the input channel).
    - ``images_per_class``: int64 (K,).
    - ``confusion``: int64 (K, K) — images of class k (row) whose top-1 prediction was class p
      (column), over the result's classes; all zero when the model's output is not class scores.
    - ``top1_probability_fixed``: int64 (K,) — per class, the sum over its images of the top-1
      probability (softmax of the output, or the output itself when it already is probabilities)
      in fixed point: each image adds ``round(p * PROBABILITY_SCALE)`` (2**32), so that sums are
      exact in any order. :attr:`top1_probability` is the same sum as float64.
    - ``top1_probability_histogram``: int64 (K, 101) — images of class k whose top-1 probability
      was ``p`` percent, rounded (``round(100 * p)``, :func:`probability_to_percent`); all zero
      when predictions were not recorded, and for results saved before it was counted.
    - ``skip[key]``: int32 or int16 (K, channels) per skip connection between consecutive summary layers
      (``graph.counted_skips()``, e.g. a residual identity): images of class k that selected both
      the source channel and the target channel it is added to (counted with influence).
    - ``examples[layer]``: when dataset examples were tracked (``params["examples"]`` = N > 0),
      the top-N images per channel (see :mod:`summit_fast.examples`); otherwise empty.
    - ``graph``: layers, channel counts and conv edges (see :class:`ModelGraph`);
      ``params``: the aggregation parameters (with ``model_digest``, the SHA-256 of the weights:
      only results of the same weights merge; and ``backend``, which backend counted, ignored
      when results merge or compare); ``class_names``: optional names.

    Row k of every count is class ``class_ids[k]`` (0..K-1 unless the run was restricted to
    some classes with ``classes=``).
    """

    activation: dict[str, torch.Tensor]
    influence: dict[str, torch.Tensor]
    images_per_class: torch.Tensor
    confusion: torch.Tensor
    top1_probability_fixed: torch.Tensor
    graph: ModelGraph
    params: dict = field(default_factory=dict)
    class_names: list[str] | None = None
    examples: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    skip: dict[str, torch.Tensor] = field(default_factory=dict)
    top1_probability_histogram: torch.Tensor | None = None  # None: all zero (nothing recorded)

    def __post_init__(self) -> None:
        if self.top1_probability_histogram is None:
            self.top1_probability_histogram = torch.zeros(self.num_classes, PERCENT_BINS, dtype=torch.int64,
                                                          device=self.images_per_class.device)

    # -- metadata views -----------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """K, the rows of the counts (``len(class_ids)``); ``params["num_classes"]`` is the number
        of the model's classes, which is larger when the run counted only some with ``classes=``."""
        return int(self.images_per_class.shape[0])

    @property
    def layers(self) -> list[str]:
        return list(self.graph.layers)

    @property
    def edges(self) -> list[ConvEdge]:
        return list(self.graph.edges)

    @property
    def channels(self) -> dict[str, int]:
        return dict(self.graph.channels)

    @property
    def class_ids(self) -> list[int]:
        """The class index (e.g. ImageNet's) of each row of the counts: ``params["classes"]``
        when the run was restricted to some classes, else 0..K-1."""
        classes = self.params.get("classes")
        return list(range(self.num_classes)) if classes is None else list(classes)

    @property
    def num_images(self) -> int:
        return int(self.images_per_class.sum())

    @property
    def top1_probability(self) -> torch.Tensor:
        """float64 (K,): per class, the summed top-1 probability of its images
        (``top1_probability_fixed / PROBABILITY_SCALE``)."""
        return self.top1_probability_fixed.double() / PROBABILITY_SCALE

    @property
    def top1_accuracy(self) -> torch.Tensor:
        """The per-class top-1 accuracy: the same as :attr:`top1_accuracy_per_class`."""
        return self.top1_accuracy_per_class

    @property
    def top1_accuracy_per_class(self) -> torch.Tensor:
        """float64 (K,): per class, the share of its images whose top-1 prediction was that class
        (NaN for classes without images; meaningful when ``params["predictions"]`` is true)."""
        return self.confusion.diagonal().double() / self.images_per_class.double()

    @property
    def top1_accuracy_overall(self) -> float | None:
        """The share of all images whose top-1 prediction was their class; None when the run
        recorded no predictions (``params["predictions"]`` false) or counted no images."""
        if not self.params.get("predictions") or self.num_images == 0:
            return None
        return int(self.confusion.diagonal().sum()) / self.num_images

    @property
    def count_dtype(self) -> torch.dtype:
        """The integer type of the activation, influence and skip counts."""
        return count_dtype_of(self.params)

    @property
    def nbytes(self) -> int:
        """Bytes of the count state."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def __repr__(self) -> str:
        return (f"SummitResult({self.num_images} images, {self.num_classes} classes, {len(self.layers)} layers, "
                f"{len(self.influence)} conv edges, {self.nbytes / 2**20:.1f} MiB of counts)")

    # -- the flat view every operation goes through ---------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """Every count tensor under a flat key (``activation/<layer>``, ``influence/<conv>``, ...)."""
        out = {f"activation/{k}": v for k, v in self.activation.items()}
        out.update({f"influence/{k}": v for k, v in self.influence.items()})
        out.update(images_per_class=self.images_per_class, confusion=self.confusion,
                   top1_probability_fixed=self.top1_probability_fixed,
                   top1_probability_histogram=self.top1_probability_histogram)
        out.update({f"examples/{l}/{f}": t for l, fields in self.examples.items() for f, t in fields.items()})
        out.update({f"skip/{k}": t for k, t in self.skip.items()})
        return out

    @staticmethod
    def tensor_specs(graph: ModelGraph, num_classes: int, examples: int = 0, influence: bool = True,
                     count_dtype: torch.dtype = torch.int32) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Shape and dtype of every tensor of a result for ``graph``, ``num_classes``,
        ``examples`` dataset examples per channel, with or without influence counts, and counts
        of type ``count_dtype``."""
        k = num_classes
        specs = {f"activation/{l}": ((k, graph.channels[l]), count_dtype) for l in graph.layers}
        if influence:
            specs.update({f"influence/{e.conv}": ((k, e.out_channels, e.sources_per_target), count_dtype)
                          for e in graph.edges})
            specs.update({f"skip/{s.key}": ((k, s.channels), count_dtype) for s in graph.counted_skips()})
        specs.update(images_per_class=((k,), torch.int64), confusion=((k, k), torch.int64),
                     top1_probability_fixed=((k,), torch.int64),
                     top1_probability_histogram=((k, PERCENT_BINS), torch.int64))
        if examples:
            for layer in graph.layers:
                for f in EXAMPLE_FIELDS:
                    specs[f"examples/{layer}/{f}"] = ((graph.channels[layer], examples),
                                                      torch.float32 if f == "value" else torch.int64)
        return specs

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], graph: ModelGraph, params: dict | None = None,
                     class_names: list[str] | None = None) -> "SummitResult":
        """Inverse of :meth:`tensors`."""
        examples = {l: {f: tensors[f"examples/{l}/{f}"] for f in EXAMPLE_FIELDS}
                    for l in graph.layers if f"examples/{l}/value" in tensors}
        return cls({l: tensors[f"activation/{l}"] for l in graph.layers},
                   {e.conv: tensors[f"influence/{e.conv}"] for e in graph.edges if f"influence/{e.conv}" in tensors},
                   tensors["images_per_class"], tensors["confusion"], tensors["top1_probability_fixed"], graph,
                   dict(params or {}), None if class_names is None else list(class_names), examples,
                   {s.key: tensors[f"skip/{s.key}"] for s in graph.counted_skips() if f"skip/{s.key}" in tensors},
                   tensors.get("top1_probability_histogram"))

    @classmethod
    def specs_for_params(cls, graph: ModelGraph, num_classes: int,
                         params: dict) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """:meth:`tensor_specs` of a result with these aggregation parameters."""
        return cls.tensor_specs(graph, num_classes, int(params.get("examples", 0)), bool(params.get("influence", True)),
                                count_dtype_of(params))

    @classmethod
    def zeros(cls, graph: ModelGraph, num_classes: int, params: dict | None = None,
              class_names: list[str] | None = None, device: torch.device | str = "cpu") -> "SummitResult":
        """An empty result (all counts zero) for ``graph`` and ``num_classes`` classes."""
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but there are {num_classes} classes")
        params = params or {}
        n, influence = int(params.get("examples", 0)), bool(params.get("influence", True))
        specs = cls.tensor_specs(graph, num_classes, 0, influence, count_dtype_of(params))
        tensors = {key: _zeros(shape, dtype, device) for key, (shape, dtype) in specs.items()}
        if n:
            for layer in graph.layers:
                tensors.update({f"examples/{layer}/{f}": t
                                for f, t in empty_examples(graph.channels[layer], n, device).items()})
        return cls.from_tensors(tensors, graph, params, class_names)

    def to(self, device: torch.device | str) -> "SummitResult":
        """A copy with every count tensor on ``device`` (always new tensors)."""
        return self.from_tensors({k: v.to(device, copy=True) for k, v in self.tensors().items()},
                                 self.graph, self.params, self.class_names)

    # -- additivity ---------------------------------------------------------------------
    def _check_compatible(self, other: "SummitResult") -> None:
        if not isinstance(other, SummitResult):
            raise TypeError(f"can only add a SummitResult, got {type(other).__name__}")
        if self.graph.to_json() != other.graph.to_json():
            raise ValueError("cannot merge results with different model graphs (layers, edges or channels)")
        differing = differing_keys(counting_params(self.params), counting_params(other.params))
        if differing:
            what = "; ".join(f"{k}: {shown(self.params.get(k)) or 'one value'} vs {shown(other.params.get(k)) or 'another'}"
                             for k in differing)
            hint = " (result.with_count_dtype converts one)" if differing == ["count_dtype"] else ""
            raise ValueError(f"cannot merge results with different parameters: {what}{hint}")
        if self.num_classes != other.num_classes:
            raise ValueError(f"cannot merge results with different numbers of classes ({self.num_classes} vs "
                             f"{other.num_classes})")

    def __add__(self, other: "SummitResult") -> "SummitResult":
        """The result of the union of two disjoint shards: counts add, dataset examples merge
        (image ids must then be global, e.g. dataset indices)."""
        self._check_compatible(other)
        check_count_capacity(self.images_per_class + other.images_per_class.to(self.images_per_class.device),
                             self.count_dtype, self.class_ids, "adding these results")
        theirs = other.tensors()
        total = {k: v + theirs[k].to(v.device) for k, v in self.tensors().items() if not k.startswith("examples/")}
        n = int(self.params.get("examples", 0))
        for layer, mine in self.examples.items():
            merged = merge_examples(mine, other.examples[layer], n)
            total.update({f"examples/{layer}/{f}": t for f, t in merged.items()})
        return self.from_tensors(total, self.graph, with_backends(self.params, other.params.get("backend")),
                                 self.class_names or other.class_names)

    def with_count_dtype(self, count_dtype: str | torch.dtype) -> "SummitResult":
        """A copy whose counts are stored as ``count_dtype`` ("int32" or "int16"); narrowing is
        refused (OverflowError) when a class has more images than the narrower type can count."""
        name = count_dtype_name(count_dtype)
        params, dtype = count_dtype_params(self.params, name), COUNT_DTYPES[name]
        check_count_capacity(self.images_per_class, dtype, self.class_ids, f"storing the counts as {name}")
        specs = self.specs_for_params(self.graph, self.num_classes, params)
        tensors = {k: v.to(specs[k][1], copy=True) for k, v in self.tensors().items()}
        return self.from_tensors(tensors, self.graph, params, self.class_names)

    def __radd__(self, other) -> "SummitResult":
        """``0 + result`` is a copy of the result, so that ``sum(results)`` merges them."""
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self.to(self.images_per_class.device)
        return NotImplemented

    @staticmethod
    def merge(results: list["SummitResult"]) -> "SummitResult":
        """Sum of the results of disjoint shards."""
        if not results:
            raise ValueError("merge needs at least one result")
        total = results[0]
        for r in results[1:]:
            total = total + r
        return total

    def __eq__(self, other) -> bool:
        """Same counts, graph, classes and parameters (which backend counted them aside)."""
        if not isinstance(other, SummitResult):
            return NotImplemented
        mine, theirs = self.tensors(), other.tensors()
        return (self._compared_manifest() == other._compared_manifest() and mine.keys() == theirs.keys()
                and all(torch.equal(v, theirs[k].to(v.device)) for k, v in mine.items()))

    def _compared_manifest(self) -> dict:
        return dict(self._manifest(), params=counting_params(self.params))

    # -- save / load --------------------------------------------------------------------
    def _manifest(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "num_classes": self.num_classes,
                "graph": self.graph.to_json(), "params": self.params, "class_names": self.class_names}

    def save(self, directory: str | os.PathLike, compact: bool = True) -> Path:
        """Write the result to ``directory`` (created if needed); returns its path.

        With ``compact`` (the default; lossless) each integer tensor is stored in the narrowest
        integer type that holds it and, when smaller, as its nonzero values and their positions;
        load restores the types. :meth:`saved_size` gives the bytes a save takes.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = self._manifest()
        # The copy first: a folder whose counts file exists has a manifest.json (load wants both).
        _atomic_write(directory / _MANIFEST_FILE, lambda path: path.write_text(json.dumps(manifest, indent=1)))
        # One rename publishes manifest and counts together: of concurrent saves to one folder the
        # last rename wins whole (manifest.json, renamed on its own, may then be the other one's).
        _atomic_write(directory / _COUNTS_FILE, lambda path: storage.write(path, self.tensors(), manifest, compact))
        return directory

    @staticmethod
    def saved_size(directory: str | os.PathLike) -> int:
        """Bytes on disk of the result saved in ``directory`` (its two files)."""
        return sum((Path(directory) / name).stat().st_size for name in (_COUNTS_FILE, _MANIFEST_FILE))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "SummitResult":
        """Read a result written by :meth:`save`; raises :class:`ResultFormatError` if it is
        missing, incomplete, corrupted, of another format, or inconsistent (a count outside
        0..its class's images, classes or graph that do not fit the counts)."""
        from safetensors import SafetensorError

        directory = Path(directory)
        manifest_path, counts_path = directory / _MANIFEST_FILE, directory / _COUNTS_FILE
        for path in (manifest_path, counts_path):
            if not path.is_file():
                # The output folder of `summit-fast run`/`demo` holds the result in result/.
                hint = f" (did you mean {directory / 'result'}?)" if (directory / "result" / _MANIFEST_FILE).is_file() else ""
                raise ResultFormatError(f"{directory} is not a summit_fast result: {path.name} is missing{hint}")
        try:
            text, stored = storage.read(counts_path)
            stored = _with_fixed_probability(stored)  # results saved before the sum was fixed point
        except (SafetensorError, ValueError) as exc:
            raise ResultFormatError(f"{counts_path} is corrupted or truncated: {exc}") from None
        if text is None:  # format 1: manifest.json is the manifest, tied to the counts by their checksum
            source, manifest = manifest_path, _parse_manifest(manifest_path, manifest_path.read_bytes(), 1)
        else:
            source, manifest = counts_path, _parse_manifest(counts_path, text, FORMAT_VERSION)
        if text is None and manifest.get("counts_sha256") != _sha256(counts_path):
            raise ResultFormatError(f"{counts_path} is corrupted or truncated: its checksum does not match "
                                    f"{manifest_path.name}")
        try:
            graph = ModelGraph.from_json(manifest["graph"])
            params, class_names = dict(manifest["params"]), manifest["class_names"]
            num_classes = int(manifest["num_classes"])
            check_manifest(graph, params, num_classes, class_names)
            specs = cls.specs_for_params(graph, num_classes, params)
            stored = _with_probability_histogram(stored, specs)  # results saved before it was counted
        except KeyError as exc:
            raise ResultFormatError(f"{source}: the manifest lacks the field {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ResultFormatError(f"{source}: {exc} {_DAMAGED}") from None
        try:
            # calloc'd zeros: the pages of rows without counts (classes without images) stay untouched
            tensors = storage.decode(stored, specs, lambda shape, dtype: _zeros(shape, dtype, "cpu"))
            result = cls.from_tensors(tensors, graph, params, class_names)
            check_counts(result.tensors(), result.class_ids)
        except ValueError as exc:
            raise ResultFormatError(f"{counts_path}: {exc} {_DAMAGED}") from None
        return result


def _parse_manifest(source: Path, text: str | bytes, version: int) -> dict:
    """The manifest in ``text`` (read from ``source``), which must be of format ``version``."""
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultFormatError(f"{source}: the manifest is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ResultFormatError(f"{source} is not a summit_fast result manifest")
    if manifest.get("version") != version:
        raise ResultFormatError(f"{source} has format version {manifest.get('version')!r} where this summit_fast "
                                f"reads format {version} (it reads formats 1 and {FORMAT_VERSION}; a newer one may "
                                "read this result)")
    return manifest


def _with_fixed_probability(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with a float64 ``top1_probability`` sum, as results saved before the fixed
    point hold it, converted to ``top1_probability_fixed`` (exact where each image's p >= 2**-8)."""
    if "top1_probability" in tensors and "top1_probability_fixed" not in tensors:
        tensors["top1_probability_fixed"] = probability_to_fixed(tensors.pop("top1_probability"))
    return tensors


def _with_probability_histogram(stored: dict[str, torch.Tensor], specs: dict) -> dict[str, torch.Tensor]:
    """``stored`` with an all-zero ``top1_probability_histogram`` where it has none (results saved
    before the histogram was counted: their images' top-1 probabilities are not known)."""
    key = "top1_probability_histogram"
    if key not in stored:
        shape, dtype = specs[key]
        stored[key] = torch.zeros(shape, dtype=dtype)
    return stored


def _zeros(shape: tuple, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """A zero tensor. On the CPU it comes from calloc (numpy.zeros), whose large blocks are
    fresh pages the kernel zero-fills when first written: a 10 GiB count state then costs
    nothing until a class's rows are counted, where torch.zeros spends seconds writing zeros
    (5.7 s for InceptionV1 at 1000 classes on the project's VM)."""
    if torch.device(device).type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    return torch.from_numpy(np.zeros(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype))


def _sha256(path: Path) -> str:
    """SHA-256 of a file (format 1's check of its counts file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(tmp_path)``, fsync, then rename over ``path``. The temporary name is
    the writer's own (process and thread), so concurrent writers of one path do not mix."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
