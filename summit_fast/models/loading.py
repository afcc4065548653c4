"""The bundled models by name, with their weights: random (seeded) or from a state-dict file,
which is refused in one line when it is not this model's (how it differs, with examples)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from .._text import few, spread

MODELS = ("inception_v1", "mobilenet_v2", "resnet18", "resnet50", "vgg16")  # what `summit-fast run` offers
RANDOM_WEIGHTS_SEED = 0


def load_model(name: str, weights: Path | None, tf_padding: bool = False):
    """A bundled model by name, with weights from a state-dict file; without one, random weights
    drawn with seed :data:`RANDOM_WEIGHTS_SEED` (the same in every process and every run, so
    that ranks aggregate one network and a rerun resumes its checkpoint).

    A file that is not a state dict, or not one of this model, is refused with a one-line
    ``ValueError`` saying how it differs (keys missing, unexpected, of another shape, with a few
    examples and what the model's keys look like) rather than PyTorch's list of every key.
    """
    from .. import models

    if tf_padding and name != "mobilenet_v2":
        raise ValueError("--tf-padding applies to mobilenet_v2 only")
    factory = getattr(models, name)
    options = {"tf_padding": True} if tf_padding else {}
    if weights is None:
        with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's generator
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            return factory(None, **options)
    state = read_state_dict(weights)
    try:
        return factory(state, **options)
    except RuntimeError:  # load_state_dict's: explain it shortly, if the keys or shapes are the cause
        problem = state_dict_mismatch(factory(None, **options).state_dict(), state, name)
        if problem is None:
            raise
        raise ValueError(f"--weights {weights} {problem}") from None


def read_state_dict(path: Path) -> Mapping:
    """The mapping ``torch.load(path, weights_only=True)`` finds in ``path``; ``ValueError``
    (one line, naming ``--weights``) when there is none."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and format errors alike mean: not a readable state-dict file
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise ValueError(f"--weights {path}: torch.load cannot read it as a state-dict file "
                         f"({type(exc).__name__}: {first})") from None
    if not isinstance(state, Mapping):
        raise ValueError(f"--weights {path} holds a {type(state).__name__}, not a state dict "
                         "(a mapping of parameter names to tensors)")
    return state


def state_dict_mismatch(expected: Mapping, given: Mapping, name: str) -> str | None:
    """How state dict ``given`` differs from model ``name``'s ``expected`` one, in one line (how
    many keys are missing, unexpected or of another shape, with examples, and what the model's
    keys look like); None if the keys and shapes agree."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    reshaped = [k for k in expected if k in given and isinstance(given[k], torch.Tensor)
                and tuple(given[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or reshaped):
        return None
    parts = []
    if len(missing) == len(expected):
        parts.append(f"none of {name}'s {len(expected)} keys is in the file")
    elif missing:
        parts.append(f"{len(missing)} of {name}'s {len(expected)} keys are missing (e.g. {few(missing)})")
    if len(unexpected) == len(given):
        parts.append(f"none of the file's {len(given)} keys is {name}'s (they look like {spread(unexpected)})")
    elif unexpected:
        parts.append(f"{len(unexpected)} of the file's {len(given)} keys are not {name}'s (e.g. {few(unexpected)})")
    if reshaped:
        k = reshaped[0]
        parts.append(f"{len(reshaped)} tensors have another shape (e.g. {k}: {tuple(given[k].shape)} in the file, "
                     f"{tuple(expected[k].shape)} in {name})")
    parts.append(f"{name}'s keys look like {spread(list(expected))}")
    nested = [k for k, v in given.items() if isinstance(v, Mapping)]
    if nested:
        parts.append(f"the file's entry {nested[0]!r} is itself a mapping: if it holds the weights, save it alone")
    elif given and all(str(k).startswith("module.") for k in given):
        parts.append("the file's keys start with 'module.' (saved from DataParallel or DistributedDataParallel): "
                     "remove that prefix")
    return f"does not fit {name}: {'; '.join(parts)}"
