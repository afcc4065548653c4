"""Write a result as a folder for viewers (SPEC.md D): Summit-compatible JSON and the project's index.

Layout (JSON Schema: ``summit_fast/schema/export.schema.json``, version 3)::

    OUT/summit_fast.json   the index: classes, layers, channel counts, class names, how the embedding
                           was computed, the aggregation parameters, image patterns and which image
                           files exist (:func:`image_index`), file names
    OUT/classes.json       one entry per class (row of the counts) in the format of Summit's
                           imagenet.json: name, target_class (the model's class index), topChannels,
                           embed, numOfInstances (and topOneAcc, topOneAccCount, accs when
                           predictions were recorded)
    OUT/ag/ag-{c}.json     the attribution graph of class c (an entry's target_class, which is how
                           Summit's viewer finds it), in Summit's format (layers last to first)
    OUT/imagenet.json      when the classes are ImageNet's (their names those of
                           :mod:`summit_fast.imagenet`): Summit's own class list, which Summit's
                           viewer reads (see :func:`summit_class_list`)

Version 1 numbered the graph files by row of ``classes.json`` instead (the same file names unless
a run counted only some classes); version 2 changed that, since it breaks a reader of such exports.
Version 3 fills an image pattern's ``{layer}`` with the layer's file-name form
(:func:`summit_fast.featvis.safe_layer_name`: ``features_14`` for ``features.14``, as Summit's layout
has it) instead of its name, and lists which image files exist, so that a viewer asks for no other.

The class embedding is per layer: UMAP of the classes' activation count rows (cosine, 15
neighbours, min_dist 0.1, fixed seed, each layer initialised from the previous layer's embedding)
when ``umap-learn`` is installed; otherwise PCA: the first two principal components of the rows
scaled to unit length (so that it reflects the same cosine geometry), each layer's axes flipped
to agree with the previous layer's so that switching layers moves points no more than the data
does. A class without counts in a layer has no position there (``null`` in classes.json; in
imagenet.json, whose reader needs one, the centre of the other classes' positions).

The folder is replaced as a whole (:mod:`summit_fast._staging`): the new export is written into a
hidden sibling folder, which then takes the old one's place, so a failed or killed export leaves
the previous one as it was, never a mixture. Only the entries above are replaced in an
existing folder (imagenet.json also removed where it is not written); other files (images) are
carried over. One process at a time exports to a
folder: it holds the lock file ``.NAME.lock`` beside it while it writes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import string
from collections.abc import Callable, Collection, Iterable, Mapping
from importlib import resources
from pathlib import Path

import numpy as np

from . import __version__
from ._lock import exclusive
from ._staging import fsync_dir, remove_stale, replacing
from .graph import ALPHA, ATTR_TOP, TAU, TAU_STEP, attr_sources, chosen_layers, iter_graphs
from .imagenet import NUM_IMAGENET_CLASSES, imagenet_class_names, imagenet_wnids
from .result import SummitResult

SCHEMA_NAME = "summit_fast.export"
SCHEMA_VERSION = 3  # 3: images lists the files, {layer} is featvis.safe_layer_name; 2: ag-{c}.json by target_class
IMAGE_FIELDS = {"feature_vis": ("layer", "channel"), "diversity": ("layer", "channel", "d"),
                "dataset_examples": ("layer", "channel", "i")}  # the index's image patterns and their placeholders
INDEX_FILE = "summit_fast.json"
CLASSES_FILE = "classes.json"
SUMMIT_CLASSES_FILE = "imagenet.json"  # Summit's class list, for Summit's own viewer
GRAPHS_PATTERN = "ag/ag-{c}.json"
EMBEDDINGS = ("auto", "umap", "pca")
UMAP_PARAMS = {"metric": "cosine", "n_neighbors": 15, "min_dist": 0.1, "random_state": 0}
_PLAIN_FIELD = re.compile(r"\{(\w+)\}", re.ASCII)  # the placeholders the viewer fills (data-source.js)
_UMAP_THREADS = 1  # a fixed seed makes UMAP single-threaded anyway; saying so avoids its warning


def schema() -> dict:
    """The export's JSON Schema (draft 2020-12); its ``$defs`` hold ``classes``, ``graph`` and ``node``."""
    return json.loads(resources.files("summit_fast").joinpath("schema", "export.schema.json").read_text("utf-8"))


def export(result: SummitResult, out_dir: str | os.PathLike, *, class_names: list[str] | None = None,
           embedding: str = "auto", feature_vis: str | None = None, diversity: str | None = None,
           dataset_examples: str | None = None, write_images: Callable[[Path, dict[str, list[int]]], object] | None = None,
           replaces: Collection[str] = (), layers: list[str] | None = None) -> Path:
    """Write ``result`` as a viewer folder ``out_dir`` (created if needed); returns its path.

    Args:
        class_names: the K class names (one per row), or one per model class
            (``params["num_classes"]``), of which the counted classes' are taken; default
            ``result.class_names``, else ``"class {c}"`` for each row's class index c (``result.class_ids``).
        embedding: ``"umap"`` (needs ``umap-learn``), ``"pca"``, or ``"auto"`` (UMAP when installed
            and there are more classes than UMAP's 15 neighbours, else PCA).
        feature_vis: pattern of per-channel feature visualisations inside the folder, with
            ``{layer}`` and ``{channel}`` (e.g. ``"feature-vis/channel/{layer}-{channel}-channel.jpg"``;
            Summit's layout is :data:`summit_fast.featvis.LAYOUT`). ``{layer}`` stands for the layer's
            file-name form, :func:`summit_fast.featvis.safe_layer_name`.
        diversity: pattern of each channel's diversity images, with ``{layer}``, ``{channel}`` and ``{d}``.
        dataset_examples: pattern of dataset example images, with ``{layer}``, ``{channel}`` and ``{i}``.
            The index lists which files of the three patterns the folder holds for the channels of the
            graphs (:func:`image_index`), once ``write_images`` has written them.
        write_images: a function called as ``write_images(folder, channels)`` to write image files
            into the new folder before it replaces the old one (e.g. the dataset examples of
            ``dataset_examples``); ``channels`` maps each layer to the channels that are nodes of
            some exported graph (the channels whose images the viewer shows), ascending.
        replaces: names of further entries of an existing ``out_dir`` that this export does not
            keep (e.g. a folder of images of an earlier export); entries that ``write_images``
            writes replace those of the same name anyway.
        layers: graphs over these summary layers only (default all; see :func:`summit_fast.graph.iter_graphs`);
            the index's ``layers`` are then these.

    Raises :class:`summit_fast._lock.FolderBusy` if another process is exporting to ``out_dir``.
    """
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
    patterns = {"feature_vis": feature_vis, "diversity": diversity, "dataset_examples": dataset_examples}
    for field, pattern in patterns.items():
        _check_pattern(field, pattern, IMAGE_FIELDS[field])
    names = _class_names(result, class_names)
    layers = result.layers if layers is None else chosen_layers(result.layers, layers)
    out_dir = Path(out_dir)
    own = ("ag", CLASSES_FILE, INDEX_FILE, SUMMIT_CLASSES_FILE)
    with exclusive(out_dir.parent / f".{out_dir.name}.lock", str(out_dir), "summit_fast export",
                   "wait for it to finish, or export elsewhere"):
        _check_target(out_dir)
        remove_stale(out_dir, ["ag.old"])  # what earlier versions' replacement of ag/ left, not to carry over
        with replacing(out_dir, replaces=(*own, *replaces)) as staging:
            index, channels = _write(result, staging, names, embedding, layers)
            channels = {layer: sorted(c) for layer, c in channels.items()}
            if write_images is not None:
                write_images(staging, channels)
            # Last: the index lists the image files the folder holds once it is in place.
            index["images"] = image_index(patterns, channels, _exists_once_replaced(staging, out_dir, (*own, *replaces)))
            _write_json(staging / INDEX_FILE, index)
    return out_dir


def _write(result: SummitResult, folder: Path, names: list[str], embedding: str,
           layers: list[str]) -> tuple[dict, dict[str, set[int]]]:
    """Write the export but its index into the empty ``folder``; returns the index without its
    "images" and the channels of the graphs' nodes per layer."""
    (folder / "ag").mkdir()
    embeds, method = class_embedding(result, embedding)  # first: it is the step likeliest to fail
    _write_json(folder / CLASSES_FILE, class_list(result, names, embeds))
    if is_imagenet(result, names):
        _write_json(folder / SUMMIT_CLASSES_FILE, summit_class_list(result, embeds))
    channels = {layer: set() for layer in layers}
    for graph in iter_graphs(result, layers=layers):
        _write_json(folder / GRAPHS_PATTERN.format(c=graph.target_class), graph.to_summit())
        for layer, nodes in graph.nodes.items():
            channels[layer].update(node.channel for node in nodes)
    fsync_dir(folder / "ag")
    index = {
        "schema": SCHEMA_NAME, "version": SCHEMA_VERSION, "generator": f"summit_fast {__version__}",
        "num_classes": result.num_classes, "num_images": result.num_images,
        "layers": layers, "channels": {l: result.graph.channels[l] for l in layers},
        "class_names": names, "embedding": method, "params": result.params,
        "predictions": _has_predictions(result),
        "graph_params": {"tau": TAU, "tau_step": TAU_STEP, "alpha": ALPHA, "attr_channels": ATTR_TOP},
        "attr_sources": attr_sources(result, layers),
        "images": None,  # see export()
        "graphs": GRAPHS_PATTERN, "classes": CLASSES_FILE,
    }
    return index, channels


def image_index(patterns: dict[str, str | None], channels: Mapping[str, Iterable[int]],
                exists: Callable[[str], bool]) -> dict:
    """The index's "images" section (the schema's ``$defs/images``): the ``patterns`` of
    :data:`IMAGE_FIELDS` (None: no such images) and, under "files", per layer of ``channels``
    (e.g. the graphs' nodes) its file-name form (``name``, :func:`summit_fast.featvis.safe_layer_name`,
    which fills the patterns' ``{layer}``) and which of its channels' files exist
    (``exists(path relative to the folder)``): the channels with a feature visualisation
    (``feature_vis``), and per channel with any the number of diversity images and of dataset
    examples (``diversity``, ``dataset_examples``: {channel: n}, files 0 .. n-1)."""
    from .featvis import safe_layer_names

    patterns = {field: patterns.get(field) for field in IMAGE_FIELDS}
    names = safe_layer_names(channels)

    def count(field: str, number: str, **values) -> int:
        """How many files ``number`` = 0, 1, .. exist of the pattern of ``field`` (0: none)."""
        n = 0
        while patterns[field] is not None and exists(patterns[field].format(**values, **{number: n})):
            n += 1
        return n

    files = {}
    for layer, layer_channels in channels.items():
        at = {"layer": names[layer]}
        entry = {"name": names[layer], "feature_vis": [], "diversity": {}, "dataset_examples": {}}
        for c in sorted(set(layer_channels)):
            if patterns["feature_vis"] is not None and exists(patterns["feature_vis"].format(**at, channel=c)):
                entry["feature_vis"].append(c)
            for field, number in (("diversity", "d"), ("dataset_examples", "i")):
                n = count(field, number, **at, channel=c)
                if n:
                    entry[field][str(c)] = n
        files[layer] = entry
    return {**patterns, "files": files}


def refresh_image_index(folder: str | os.PathLike, channels: Mapping[str, Iterable[int]]) -> bool:
    """Rewrite the "images" files of the export ``folder``'s index (:func:`image_index`, for the
    graphs' ``channels``) for the image files it holds now, e.g. after ``summit-fast featvis``
    rendered some; the file is replaced atomically. Returns False, changing nothing, for a folder
    without an index or with one of an earlier version, whose patterns name the layers otherwise."""
    from .result import _atomic_write

    folder = Path(folder)
    with exclusive(folder.parent / f".{folder.name}.lock", str(folder), "summit_fast export",
                   "wait for it to finish, then render again"):
        try:
            index = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        if not isinstance(index, dict) or index.get("schema") != SCHEMA_NAME or index.get("version") != SCHEMA_VERSION:
            return False
        index["images"] = image_index(index["images"], channels, lambda path: _holds_image(folder / path))
        _atomic_write(folder / INDEX_FILE, lambda tmp: _write_json(tmp, index))
    return True


def _exists_once_replaced(staging: Path, out_dir: Path, replaced: Collection[str]) -> Callable[[str], bool]:
    """Whether an image (a path relative to the folder; :func:`_holds_image`) will be in ``out_dir``
    once ``staging`` has replaced it (:func:`summit_fast._staging.replacing`): in ``staging``, or in
    an entry of the current ``out_dir`` carried over (one neither ``replaced`` nor in ``staging``)."""
    def exists(path: str) -> bool:
        top = path.split("/", 1)[0]
        carried = top not in replaced and not os.path.lexists(staging / top)
        return _holds_image((out_dir if carried else staging) / path)
    return exists


def _holds_image(path: Path) -> bool:
    """``path`` is a file the index lists: not a placeholder written only for Summit's viewer
    (:func:`summit_fast.patches.is_placeholder`)."""
    from .patches import is_placeholder

    return path.is_file() and not is_placeholder(path)


def _check_pattern(what: str, pattern: str | None, fields: tuple[str, ...]) -> None:
    """A file pattern must use exactly ``fields`` as its placeholders, each written plainly as
    ``{name}``: the viewer fills the pattern by replacing ``{name}`` (data-source.js, fillPattern),
    so it has no format specs (``{channel:04d}``), conversions (``{channel!s}``) nor literal braces
    (``{{``, ``}}``)."""
    if pattern is None:
        return
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise ValueError(f"{what} {pattern!r}: {exc}") from None
    wanted = ", ".join("{" + f + "}" for f in fields)
    for literal, name, spec, conversion in parsed:
        if "{" in literal or "}" in literal:
            raise ValueError(f"{what} {pattern!r}: literal braces ({{{{ or }}}}) are not allowed; the viewer fills "
                             f"only the plain placeholders {wanted}")
        if name is not None and (spec or conversion is not None):
            kind = "a conversion" if conversion is not None else "a format spec"
            raise ValueError(f"{what} {pattern!r}: {kind} in {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} is not allowed; the viewer fills only the plain "
                             f"placeholders {wanted}")
    used = {name for _, name, _, _ in parsed if name is not None}
    if used != set(fields):
        raise ValueError(f"{what} {pattern!r} must use the placeholders {wanted} and no others")
    if re.search(r"[{}]", _PLAIN_FIELD.sub("", pattern)):  # e.g. "{layer:}", which parses as a plain field
        raise ValueError(f"{what} {pattern!r}: write each placeholder plainly, as {wanted}")


def class_list(result: SummitResult, names: list[str], embeds: list[dict]) -> list[dict]:
    """classes.json: per class its name, index, top channels per layer, embedding, instance count
    and, when predictions were recorded, its accuracy."""
    counts = {l: result.activation[l].detach().cpu().numpy() for l in result.layers}
    images = result.images_per_class.detach().cpu().numpy()
    predictions = _has_predictions(result)
    if predictions:
        correct = result.confusion.diagonal().detach().cpu().numpy()
        probability = result.top1_probability.detach().cpu().numpy()
    class_ids = result.class_ids  # the model's class index of each row (a run may count only some)
    classes = []
    for k, name in enumerate(names):
        entry = {"name": name, "target_class": int(class_ids[k]),
                 "topChannels": {l: _top_channels(counts[l][k]) for l in result.layers},
                 "embed": embeds[k], "numOfInstances": int(images[k])}
        if predictions:
            n = int(images[k])
            entry.update(topOneAcc=float(correct[k] / n) if n else None, topOneAccCount=int(correct[k]),
                         accs=[round(float(probability[k] / n), 6)] if n else [])
        classes.append(entry)
    return classes


def is_imagenet(result: SummitResult, names: list[str]) -> bool:
    """Whether the rows are ImageNet classes: each row's class index is one of the 1000 and its
    name that class's name (as ``summit-fast run`` names ImageNet-labelled images)."""
    every = imagenet_class_names()
    return all(c < NUM_IMAGENET_CLASSES and name == every[c] for c, name in zip(result.class_ids, names))


def summit_name(imagenet_name: str) -> str:
    """A class's name as Summit writes it: the first synonym, lower case, spaces as underscores
    (``"white wolf, Arctic wolf, ..."`` -> ``"white_wolf"``)."""
    return imagenet_name.split(",")[0].strip().lower().replace(" ", "_")


def summit_class_list(result: SummitResult, embeds: list[dict]) -> list[dict]:
    """imagenet.json, Summit's class list (of ImageNet classes) in the form Summit's viewer reads:
    per class ``name`` (:func:`summit_name`), ``synset`` (WordNet id), ``target_class``,
    ``numOfInstances``, ``topOneAcc`` and ``topOneAccCount`` (from the confusion's diagonal; 0
    without predictions or images), ``accs`` (each image's top-1 probability in percent, rounded
    to a whole percent, as strings like Summit's, ascending: ``[]`` unless the result holds all
    the class's images' probabilities, i.e. predictions were recorded by a summit_fast that
    counted them), ``topChannels`` and ``embed`` for every summary layer; a class without counts
    in a layer is placed at the centre (mean) of the other classes' positions there, or (0, 0)."""
    counts = {l: result.activation[l].detach().cpu().numpy() for l in result.layers}
    images = result.images_per_class.detach().cpu().numpy()
    correct = result.confusion.diagonal().detach().cpu().numpy()
    histogram = result.top1_probability_histogram.detach().cpu().numpy()
    names, wnids = imagenet_class_names(), imagenet_wnids()
    centres = {l: _centre([e[l] for e in embeds]) for l in result.layers}
    classes = []
    for k, c in enumerate(result.class_ids):
        n = int(images[k])
        complete = n > 0 and int(histogram[k].sum()) == n
        classes.append({
            "name": summit_name(names[c]), "synset": wnids[c], "target_class": int(c), "numOfInstances": n,
            "topOneAcc": float(correct[k] / n) if n else 0.0, "topOneAccCount": int(correct[k]),
            "accs": [str(p) for p in np.repeat(np.arange(histogram.shape[1]), histogram[k])] if complete else [],
            "topChannels": {l: _top_channels(counts[l][k]) for l in result.layers},
            "embed": {l: embeds[k][l] or centres[l] for l in result.layers},
        })
    return classes


def _centre(positions: list[dict | None]) -> dict:
    """The mean of the given positions (None: none), or (0, 0) when there are none."""
    xy = np.array([[p["x"], p["y"]] for p in positions if p is not None]).reshape(-1, 2)
    x, y = xy.mean(axis=0) if len(xy) else (0.0, 0.0)
    return {"x": round(float(x), 5), "y": round(float(y), 5)}


def class_embedding(result: SummitResult, method: str = "auto") -> tuple[list[dict], dict]:
    """Per class ``{layer: {"x", "y"} or None}`` from its activation count rows, and the
    description of the method used (see :func:`embed_rows`)."""
    return embed_rows({l: result.activation[l].detach().cpu().numpy() for l in result.layers}, method)


def embed_rows(counts: dict[str, np.ndarray], method: str = "auto") -> tuple[list[dict], dict]:
    """A 2-D position per class and layer from per-layer count rows ``{layer: (K, C)}`` (layers
    first to last): UMAP (cosine, Summit's settings, each layer initialised from the previous)
    or PCA of the unit-length rows; None where a class's row is all zero."""
    rows = {}
    for l, a in counts.items():
        a = np.asarray(a, dtype=np.float64)
        norms = np.linalg.norm(a, axis=1, keepdims=True)
        rows[l] = np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)
    present = {l: np.linalg.norm(r, axis=1) > 0 for l, r in rows.items()}
    fewest = min(int(p.sum()) for p in present.values())
    if method == "auto":
        method = "umap" if _umap_installed() and fewest > UMAP_PARAMS["n_neighbors"] else "pca"
    if method == "umap":
        if not _umap_installed():
            raise ValueError("embedding='umap' needs umap-learn: pip install umap-learn (or use embedding='pca')")
        if fewest < 3:
            raise ValueError(f"UMAP needs at least 3 classes with counts in every layer; one layer has {fewest}")
        positions, info = _umap(rows, present), {"method": "umap", **UMAP_PARAMS, "init": "previous layer"}
    else:
        positions, info = _pca(rows, present), {"method": "pca", "input": "unit-length activation count rows",
                                                "init": "axes flipped to agree with the previous layer"}
    num_classes = len(next(iter(rows.values())))
    embeds = [{} for _ in range(num_classes)]
    for l, xy in positions.items():
        for k in range(num_classes):
            embeds[k][l] = ({"x": round(float(xy[k, 0]), 5), "y": round(float(xy[k, 1]), 5)}
                            if present[l][k] else None)
    return embeds, info


def _pca(rows: dict, present: dict) -> dict[str, np.ndarray]:
    positions, previous = {}, None
    for l, r in rows.items():
        xy = np.zeros((len(r), 2))
        sub = r[present[l]]
        if len(sub):
            u, s, _ = np.linalg.svd(sub - sub.mean(axis=0), full_matrices=False)
            rank = min(2, len(s))
            xy[present[l], :rank] = u[:, :rank] * s[:rank]
        if previous is not None:
            xy *= np.where((xy * previous).sum(axis=0) < 0, -1.0, 1.0)
        positions[l] = previous = xy
    return positions


def _umap(rows: dict, present: dict) -> dict[str, np.ndarray]:
    import umap  # optional dependency

    positions, previous, previous_mask = {}, None, None
    for l, r in rows.items():
        mask = present[l]
        init = "spectral"
        if previous is not None:  # classes absent from the previous layer start at its centre
            init = np.where(previous_mask[:, None], previous, previous[previous_mask].mean(axis=0))[mask]
        params = dict(UMAP_PARAMS, n_neighbors=min(UMAP_PARAMS["n_neighbors"], int(mask.sum()) - 1))
        xy = np.zeros((len(r), 2))
        xy[mask] = umap.UMAP(n_components=2, init=init, n_jobs=_UMAP_THREADS, **params).fit_transform(r[mask])
        positions[l], previous, previous_mask = xy, xy, mask
    return positions


def _umap_installed() -> bool:
    return importlib.util.find_spec("umap") is not None


def _top_channels(row: np.ndarray) -> list[dict]:
    nonzero = np.flatnonzero(row)
    order = nonzero[np.lexsort((nonzero, -row[nonzero]))]
    return [{"c": int(c), "i": int(row[c])} for c in order]


def _has_predictions(result: SummitResult) -> bool:
    return bool(result.params.get("predictions"))


def _class_names(result: SummitResult, class_names) -> list[str]:
    names = class_names if class_names is not None else result.class_names
    if names is None:
        return [f"class {c}" for c in result.class_ids]  # the model's class index, as the viewer shows
    names = list(names)
    model_classes = result.params.get("num_classes")
    if len(names) == model_classes and len(names) != result.num_classes:
        names = [names[c] for c in result.class_ids]  # one name per model class: those of the counted ones
    if len(names) != result.num_classes:
        raise ValueError(f"{len(names)} class names given for {result.num_classes} classes"
                         + (f" (or one for each of the model's {model_classes})" if model_classes else ""))
    if not all(isinstance(n, str) for n in names):
        raise TypeError("class names must be strings")
    return names


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and not (out_dir / INDEX_FILE).exists():
        clash = [n for n in ("ag", CLASSES_FILE, SUMMIT_CLASSES_FILE) if (out_dir / n).exists()]
        if clash:
            raise ValueError(f"{out_dir} holds {', '.join(clash)} but is not a summit_fast export; "
                             "refusing to overwrite (choose another --out)")


def _write_json(path: Path, value) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
