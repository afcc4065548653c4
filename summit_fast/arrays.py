"""Arrays of other libraries as torch tensors that share their memory (no copies).

The public entry points (``aggregate``, ``Aggregator.update``, the backends' ops) take torch
tensors, CuPy arrays, NumPy arrays and any object with ``__dlpack__`` (JAX, ...) or only
``__cuda_array_interface__`` (Numba, ...). :func:`as_tensor` turns each into a torch tensor
over the same memory, so counts passed as a NumPy or CuPy array are updated in place.
:func:`caller_stream` makes CuPy's current CUDA stream torch's while an update runs, so that
the work is ordered on the stream of a caller who uses CuPy. CuPy is an optional dependency,
imported only when a CuPy array is seen.
"""

from __future__ import annotations

import contextlib

import torch


def is_array(obj) -> bool:
    """Whether :func:`as_tensor` takes ``obj``: a torch tensor, or an object that exports
    DLPack or the CUDA array interface."""
    return (isinstance(obj, torch.Tensor) or hasattr(obj, "__dlpack__")
            or hasattr(obj, "__cuda_array_interface__"))


def foreign(*objs) -> bool:
    """Whether any of ``objs`` (None aside) is not a torch tensor: only then is anything converted."""
    return not all(obj is None or isinstance(obj, torch.Tensor) for obj in objs)


def as_tensor(obj, what: str, writable: bool = False) -> torch.Tensor:
    """``obj`` as a torch tensor sharing its memory: a torch tensor as is, an object with
    ``__dlpack__`` through :func:`torch.from_dlpack`, one with only
    ``__cuda_array_interface__`` through :func:`torch.as_tensor` (CUDA only).

    ``what`` names the argument in errors. ``writable``: the tensor is written in place
    (counts, outputs), so a read-only NumPy array is refused rather than written (DLPack
    does not carry the flag into torch, and writing a read-only mapping would crash).
    Anything else raises one TypeError line saying what is accepted.
    """
    if isinstance(obj, torch.Tensor):
        return obj
    if writable and not getattr(getattr(obj, "flags", None), "writeable", True):
        raise ValueError(f"{what}: the {type(obj).__name__} is read-only, but it is written in place; "
                         "pass a writable array (e.g. numpy.array(a) for a copy)")
    if hasattr(obj, "__dlpack__"):
        try:
            return torch.from_dlpack(obj)
        except (BufferError, RuntimeError, TypeError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TypeError(f"{what}: torch cannot share this {type(obj).__name__} through DLPack: {reason}") from None
    if hasattr(obj, "__cuda_array_interface__"):
        if not torch.cuda.is_available():
            raise ValueError(f"{what}: the {type(obj).__name__} is a CUDA array (__cuda_array_interface__), "
                             "but CUDA is not available to torch here")
        return torch.as_tensor(obj, device="cuda")
    raise TypeError(f"{what} must be a torch.Tensor or an array with __dlpack__ or __cuda_array_interface__ "
                    f"(NumPy, CuPy, JAX, ...), got {type(obj).__name__}")


def _is_cupy(obj) -> bool:
    # By module name, so that CuPy is imported only for its own arrays.
    return type(obj).__module__.startswith("cupy")


def caller_stream(*objs):
    """A context manager: while it is entered, torch's current CUDA stream is CuPy's current
    stream of the device of the first CuPy array among ``objs`` (a tuple or list among them
    is looked into, e.g. a loader's ``(images, labels)``), so every backend launches its
    kernels on the caller's stream; with no CuPy array among them it does nothing.

    Entered before :func:`as_tensor`: torch.from_dlpack then hands over on that same stream.
    """
    items = [item for obj in objs for item in (obj if isinstance(obj, (tuple, list)) else (obj,))]
    array = next((item for item in items if _is_cupy(item)), None)
    if array is None or not torch.cuda.is_available():
        return contextlib.nullcontext()
    import cupy  # optional: summit-fast[cupy]

    device = torch.device("cuda", array.device.id)
    with cupy.cuda.Device(device.index):
        pointer = cupy.cuda.get_current_stream().ptr
    # 0 is the legacy default stream, which torch's default stream is too.
    stream = torch.cuda.ExternalStream(pointer, device=device) if pointer else torch.cuda.default_stream(device)
    return torch.cuda.stream(stream)

