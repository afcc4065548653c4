"""The backend registry: one signature per op (see :class:`base.Backend`), several implementations.

``get_backend("auto", device)`` picks the fastest backend that can run on the device; an explicit
name that cannot run raises :class:`BackendUnavailable` with the reason. :func:`choose_backend`
says which backend that is, and why, in words.
"""

from __future__ import annotations

import importlib

import torch

from .base import Backend

# name -> "module:Class", imported lazily so a missing optional dependency only affects its backend.
_REGISTRY: dict[str, str] = {
    "torch": "summit_fast.backends.torch_ref:TorchBackend",
    "cpu": "summit_fast.backends.cpu:CpuBackend",
    "triton": "summit_fast.backends.triton:TritonBackend",
    "cuda": "summit_fast.backends.cuda:CudaBackend",
}
# Preference order of "auto", per device type.
_AUTO_ORDER = {"cuda": ["triton", "torch"], "cpu": ["cpu", "torch"]}


class BackendUnavailable(RuntimeError):
    """A requested backend cannot run here; the message says why."""


def register_backend(name: str, target: str) -> None:
    """Register a backend class, given as ``"module:ClassName"``."""
    _REGISTRY[name] = target


def backend_names() -> list[str]:
    return list(_REGISTRY)


def _load(name: str) -> type[Backend]:
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def unavailable_reason(name: str, device: torch.device | str = "cpu") -> str | None:
    """None if backend ``name`` can run on ``device``, otherwise the reason in words."""
    device = torch.device(device)
    if name not in _REGISTRY:
        return f"unknown backend {name!r}; known backends: {', '.join(_REGISTRY)}"
    try:
        return _load(name).unavailable_reason(device)
    except ImportError as exc:
        return f"backend {name!r} could not be imported: {exc}"


def choose_backend(name: str = "auto", device: torch.device | str = "cpu") -> tuple[str, str]:
    """The backend :func:`get_backend` gives for ``name`` on ``device``, and why, in one line,
    e.g. ``("cpu", "backend auto -> cpu: the fastest available for cpu tensors (triton: ...)")``:
    with ``"auto"`` the line names the backends that cannot run here and their reasons."""
    device = torch.device(device)
    if name != "auto":
        reason = unavailable_reason(name, device)
        if reason is not None:
            raise BackendUnavailable(f"backend {name!r} cannot run on {device}: {reason}")
        return name, f"backend {name}: as requested"
    for candidate in _AUTO_ORDER.get(device.type, ["torch"]):
        if candidate in _REGISTRY and unavailable_reason(candidate, device) is None:
            reasons = {other: unavailable_reason(other, device) for other in _REGISTRY if other != candidate}
            others = "; ".join(f"{other}: {reason}" for other, reason in reasons.items() if reason is not None)
            return candidate, (f"backend auto -> {candidate}: the fastest available for {device.type} tensors"
                               + (f" ({others})" if others else ""))
    raise BackendUnavailable(f"no backend can run on device {device}")


def get_backend(name: str = "auto", device: torch.device | str = "cpu", **options) -> Backend:
    """An instance of backend ``name`` for ``device`` (``"auto"``: the best available)."""
    return _load(choose_backend(name, device)[0])(**options)
