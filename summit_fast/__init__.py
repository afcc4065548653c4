"""summit_fast: dataset-wide activation and influence aggregation for CNNs — a fast Summit.

``summit_fast.aggregate(model, loader)`` counts, per class, which channels of each summary layer
fire most (SPEC.md A) and which earlier channels most influence them (SPEC.md B), and returns a
:class:`SummitResult`.
"""

import importlib

from .aggregate import Aggregator, aggregate
from .backends import BackendUnavailable, backend_names, get_backend, unavailable_reason
from .checkpoint import CheckpointMismatch
from .discovery import ConvEdge, DiscoveryError, ModelGraph
from .distributed import ShardSampler
from .result import ResultFormatError, SummitResult
from .rules import Mass, TopK, mass, topk

__version__ = "0.1.0"

__all__ = [
    "Aggregator", "BackendUnavailable", "CheckpointMismatch", "ConvEdge", "DiscoveryError", "Mass", "ModelGraph", "ResultFormatError",
    "ShardSampler", "SummitResult", "TopK", "aggregate", "backend_names", "get_backend", "mass", "topk", "unavailable_reason",
]

# Submodules a user reaches as attributes (``summit_fast.graph.class_graph``), imported on first use.
_SUBMODULES = ("examples", "export", "graph", "images", "imagenet", "models", "patches", "viewer")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
