"""The counts file of a saved result (format 2): one safetensors file that holds everything a
load needs, so that one rename publishes a save whole.

The header's metadata (safetensors' str -> str dict) holds the manifest (JSON) and a SHA-256 of
the stored tensors; a load reads both from the same open file as the tensors, so it never sees
the manifest of one save with the counts of another.

Compact storage (the default, lossless): each integer tensor is stored in the narrowest of
uint8, int8, int16, int32 and int64 that holds its smallest and largest value, and, when that
is smaller, as its nonzero values (under its own name) plus their flat row-major positions
(under ``sparse_index/<name>``, int32, or int64 past 2**31 - 1 elements). Floats are stored as
they are. :func:`decode` restores the shapes and dtypes the manifest gives.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path

import torch

MANIFEST_KEY = "summit_fast.manifest"
CHECKSUM_KEY = "summit_fast.sha256"
INDEX_PREFIX = "sparse_index/"  # result tensor names start with activation/, influence/, ...
_NARROW = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def write(path: str | os.PathLike, tensors: dict[str, torch.Tensor], manifest: dict, compact: bool = True) -> None:
    """Write ``tensors`` (compactly when ``compact``) and ``manifest`` to the file ``path``."""
    from safetensors.torch import save_file

    stored = encode(tensors) if compact else {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(stored, str(path), metadata={MANIFEST_KEY: json.dumps(manifest), CHECKSUM_KEY: checksum(stored)})


def read(path: str | os.PathLike) -> tuple[str | None, dict[str, torch.Tensor]]:
    """The manifest text and the stored tensors of the file ``path``, from one read of one open
    file (the manifest is None for a format-1 file, whose manifest is manifest.json).
    ValueError when the file is no safetensors file or its tensors do not match their checksum.

    The bytes are read once and parsed here: safetensors' ``safe_open`` (0.8) reads the header
    and maps the tensors through two opens of the path, so a save renamed over the file between
    them gave one save's header with another's tensors (caught by the checksum, but a failed load)."""
    from safetensors.torch import load

    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError("it is shorter than a safetensors header")
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    metadata = header.get("__metadata__") or {} if isinstance(header, dict) else {}
    stored = load(data)
    if MANIFEST_KEY in metadata and metadata.get(CHECKSUM_KEY) != checksum(stored):
        raise ValueError("its checksum does not match its tensors")
    return metadata.get(MANIFEST_KEY), stored


def checksum(stored: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the stored tensors' names, dtypes, shapes and bytes (independent of where the
    file puts them)."""
    digest = hashlib.sha256()
    for key in sorted(stored):
        t = stored[key]
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.contiguous().numpy())
    return digest.hexdigest()


def encode(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The compact stored form of ``tensors`` (CPU tensors; see the module docstring)."""
    stored = {}
    for key, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        if t.is_floating_point() or not t.numel():
            stored[key] = t
            continue
        low, high = (int(v) for v in torch.aminmax(t))
        narrow = next(d for d in _NARROW if torch.iinfo(d).min <= low and high <= torch.iinfo(d).max)
        index_dtype = torch.int32 if t.numel() <= torch.iinfo(torch.int32).max else torch.int64
        nonzero = int(torch.count_nonzero(t))
        if nonzero * (index_dtype.itemsize + narrow.itemsize) < t.numel() * narrow.itemsize:
            flat = t.view(-1)
            index = flat.nonzero().view(-1)
            stored[key], stored[INDEX_PREFIX + key] = flat[index].to(narrow), index.to(index_dtype)
        else:
            stored[key] = t.to(narrow)
    return stored


def decode(stored: dict[str, torch.Tensor], specs: dict[str, tuple[tuple[int, ...], torch.dtype]],
           zeros=torch.zeros) -> dict[str, torch.Tensor]:
    """The tensors of ``specs`` (name -> shape, dtype) from their stored form (compact or not);
    ValueError naming the tensor when the stored tensors do not fit ``specs``. ``zeros(shape,
    dtype)`` allocates what a sparse tensor is scattered into."""
    names = set(specs) | {INDEX_PREFIX + k for k in specs}
    if not set(specs) <= set(stored) or not set(stored) <= names:
        raise ValueError(f"holds tensors {sorted(set(stored) ^ set(specs))[:5]} that do not match its manifest")
    return {key: _decode(key, stored[key], stored.get(INDEX_PREFIX + key), shape, dtype, zeros)
            for key, (shape, dtype) in specs.items()}


def _decode(key: str, values: torch.Tensor, index: torch.Tensor | None, shape: tuple[int, ...],
            dtype: torch.dtype, zeros) -> torch.Tensor:
    numel = math.prod(shape)
    if index is not None and (dtype.is_floating_point or index.dtype not in (torch.int32, torch.int64)
                              or index.dim() != 1):
        raise ValueError(f"tensor {key!r} has sparse positions of {index.dtype} {tuple(index.shape)}, expected a "
                         "1-D int32 or int64 tensor (and an integer tensor)")
    expected = shape if index is None else (index.numel(),)  # sparse: one value per position
    if tuple(values.shape) != expected or not _holds(dtype, values.dtype):
        narrower = "" if dtype.is_floating_point else " or a narrower integer type"
        raise ValueError(f"tensor {key!r} is {values.dtype} {tuple(values.shape)}, "
                         f"expected {dtype} {expected}{narrower}")
    if index is None:
        return values.to(dtype)
    if index.numel() and (int(index[0]) < 0 or int(index[-1]) >= numel or not bool((index[1:] > index[:-1]).all())):
        raise ValueError(f"tensor {key!r} has sparse positions that are not increasing within [0, {numel})")
    dense = zeros((numel,), dtype=dtype)
    dense[index.long()] = values.to(dtype)
    return dense.view(shape)


def _holds(dtype: torch.dtype, stored: torch.dtype) -> bool:
    """Whether every value of type ``stored`` is exact in ``dtype``."""
    if dtype.is_floating_point or stored.is_floating_point or stored == torch.bool:
        return dtype == stored
    wide, narrow = torch.iinfo(dtype), torch.iinfo(stored)
    return wide.min <= narrow.min and narrow.max <= wide.max
