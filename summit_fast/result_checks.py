"""What a loaded result must satisfy beyond its tensors' shapes: the manifest's classes, class
names and graph agree with each other and with the counts, and every count lies between 0 and
the number of images of its class (an image adds at most 1 to each entry of its class's row);
dataset-example slots are filled or empty.

Each check raises ValueError naming the field; the count checks are one vectorised pass per
tensor (a min and a max per class row), cheap next to reading a 10 GiB result.
"""

from __future__ import annotations

import torch

from .discovery import ModelGraph


def check_manifest(graph: ModelGraph, params: dict, num_classes: int, class_names) -> None:
    """The classes, class names and graph of a manifest with ``num_classes`` rows of counts."""
    classes = params.get("classes")
    model_classes = params.get("num_classes")
    if model_classes is not None and not _natural(model_classes):
        raise ValueError(f"params.num_classes is {model_classes!r}, expected a non-negative integer")
    if classes is not None:
        if not isinstance(classes, list) or not all(_natural(c) for c in classes):
            raise ValueError(f"params.classes is {_short(classes)}, expected a list of non-negative integers")
        if len(set(classes)) != len(classes):
            raise ValueError(f"params.classes {_short(classes)} repeats a class")
        if len(classes) != num_classes:
            raise ValueError(f"params.classes has {len(classes)} classes but the counts have {num_classes} rows "
                             "(num_classes)")
        if model_classes is not None and classes and max(classes) >= model_classes:
            raise ValueError(f"params.classes holds class {max(classes)}, beyond the model's {model_classes} classes "
                             "(params.num_classes)")
    if class_names is not None and (not isinstance(class_names, list) or len(class_names) != num_classes
                                    or not all(isinstance(n, str) for n in class_names)):
        raise ValueError(f"class_names must be {num_classes} strings, one per row of the counts, "
                         f"got {_short(class_names)}")
    if not _natural(params.get("examples", 0)):
        raise ValueError(f"params.examples is {params.get('examples')!r}, expected a non-negative integer")
    check_graph(graph)


def check_graph(graph: ModelGraph) -> None:
    """Every layer, edge and skip of ``graph`` names nodes it has, within their channels."""
    channels = graph.channels
    bad = [n for n, c in channels.items() if not _natural(c) or c == 0]
    if bad:
        raise ValueError(f"graph.channels[{bad[0]!r}] is {channels[bad[0]]!r}, expected a positive integer")
    unknown = [n for n in [*graph.layers, graph.input_node] if n not in channels]
    if unknown or len(set(graph.layers)) != len(graph.layers):
        raise ValueError(f"graph.layers {_short(graph.layers)} must be distinct nodes of graph.channels "
                         f"(with graph.input_node {graph.input_node!r})")
    for i, e in enumerate(graph.edges):
        where = f"graph.edges[{i}] (conv {e.conv!r})"
        for end in ("source", "target"):
            if getattr(e, end) not in channels:
                raise ValueError(f"{where}: {end} {getattr(e, end)!r} is not in graph.channels")
        groups = e.spec.groups
        if min(e.in_channels, e.out_channels) < 1 or e.in_channels % groups or e.out_channels % groups:
            raise ValueError(f"{where}: in_channels {e.in_channels} and out_channels {e.out_channels} must be "
                             f"positive multiples of groups {groups}")
        if e.in_channels > channels[e.source]:
            raise ValueError(f"{where}: in_channels {e.in_channels} exceeds the {channels[e.source]} channels of "
                             f"its source {e.source!r}")
        _check_span(where, "target_offset", e.target_offset, e.out_channels, e.target, channels)
    for i, s in enumerate(graph.skips):
        where = f"graph.skips[{i}] ({s.key})"
        if not _natural(s.channels) or s.channels == 0:
            raise ValueError(f"{where}: channels is {s.channels!r}, expected a positive integer")
        for end in ("source", "target"):
            if getattr(s, end) not in channels:
                raise ValueError(f"{where}: {end} {getattr(s, end)!r} is not in graph.channels")
            _check_span(where, f"{end}_offset", getattr(s, f"{end}_offset"), s.channels, getattr(s, end), channels)


def _check_span(where: str, field: str, offset, length: int, node: str, channels: dict[str, int]) -> None:
    if not _natural(offset) or offset + length > channels[node]:
        raise ValueError(f"{where}: {field} {offset!r} + {length} channels does not fit in the "
                         f"{channels[node]} channels of {node!r}")


def check_counts(tensors: dict[str, torch.Tensor], class_ids: list[int]) -> None:
    """Every count of ``tensors`` (a result's flat view) between 0 and its class's images; the
    rows of the confusion and of the top-1 probability histogram sum to at most those images
    (each image adds at most 1 to each); dataset-example slots are filled or empty."""
    images = tensors["images_per_class"]
    if images.numel() and int(images.min()) < 0:
        raise ValueError(f"images_per_class is negative for class {class_ids[int(images.argmin())]}")
    rows = {key: t for key, t in tensors.items() if key.startswith(("activation/", "influence/", "skip/"))}
    per_image = ("confusion", "top1_probability_histogram")
    rows.update({key: tensors[key] for key in per_image})
    for key, t in rows.items():
        if not t.numel():
            continue
        low, high = torch.aminmax(t.reshape(t.shape[0], -1), dim=1)
        bad = torch.nonzero((low < 0) | (high > images)).flatten()
        if bad.numel():
            k = int(bad[0])
            raise ValueError(f"{key} holds counts from {int(low[k])} to {int(high[k])} for class {class_ids[k]}, "
                             f"expected 0..{int(images[k])} (its images)")
    for key in per_image:
        over = torch.nonzero(tensors[key].sum(dim=1) > images).flatten()
        if over.numel():
            k = int(over[0])
            raise ValueError(f"{key} row of class {class_ids[k]} sums to {int(tensors[key][k].sum())}, more than "
                             f"its {int(images[k])} images")
    # each image adds round(p * 2**32) with p in [0, 1] (result.PROBABILITY_SCALE)
    fixed = tensors["top1_probability_fixed"]
    if not bool(((fixed >= 0) & (fixed <= images * 2**32)).all()):
        raise ValueError("top1_probability_fixed holds a sum outside 0..(its class's images) x 2**32")
    for key, image in tensors.items():
        if key.startswith("examples/") and key.endswith("/image"):
            layer = key.removesuffix("/image")
            _check_examples(layer, image, *(tensors[f"{layer}/{f}"] for f in ("value", "y", "x")))


def _check_examples(layer: str, image: torch.Tensor, value: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> None:
    """Each slot is empty (image, y and x -1, value -inf) or filled (y and x >= 0)."""
    empty = image == -1
    consistent = torch.where(empty, (y == -1) & (x == -1) & (value == float("-inf")), (y >= 0) & (x >= 0))
    if not bool(consistent.all()):
        raise ValueError(f"{layer}: each slot must be filled (y, x >= 0) or empty (image, y, x = -1, value = -inf)")


def _natural(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
