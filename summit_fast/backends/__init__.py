"""The backend registry: one signature per op (see :class:`base.Backend`), several implementations.

``get_backend("auto", device)`` picks, per op, the fastest backend that can run on the device
(from recorded measurements); an explicit name that cannot run raises :class:`BackendUnavailable`
with the reason. :func:`choose_backend` says which backend that is, and why, in words.
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
OPS = ("activation", "influence")
# Preference order of "auto", per device type and op, from the measurements recorded in
# bench/RESULTS.md. On a GPU, triton is measured faster than torch for both ops; the cuda
# backend comes after triton until its own GPU numbers are recorded.
_AUTO_ORDER = {"cuda": {"activation": ["triton", "cuda", "torch"], "influence": ["triton", "cuda", "torch"]},
               "cpu": {"activation": ["cpu", "torch"], "influence": ["cpu", "torch"]}}


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
    choice = _auto_choice(device)
    chosen = set(choice.values())
    if len(chosen) == 1:
        [name] = chosen
        what = f"backend auto -> {name}: the fastest available for {device.type} tensors"
    else:
        name = PerOpBackend.name_for(choice)
        what = "backend auto -> " + ", ".join(f"{op}: {b}" for op, b in choice.items()) + \
            f": the fastest available per op for {device.type} tensors"
    reasons = {other: unavailable_reason(other, device) for other in _REGISTRY if other not in chosen}
    others = "; ".join(f"{other}: {reason}" for other, reason in reasons.items() if reason is not None)
    return name, what + (f" ({others})" if others else "")


def _auto_choice(device: torch.device) -> dict[str, str]:
    """Per op, the first backend of its preference order that can run on ``device``."""
    choice = {}
    for op in OPS:
        order = _AUTO_ORDER.get(device.type, {}).get(op, ["torch"])
        usable = [b for b in order if b in _REGISTRY and unavailable_reason(b, device) is None]
        if not usable:
            raise BackendUnavailable(f"no backend can run on device {device}")
        choice[op] = usable[0]
    return choice


class PerOpBackend(Backend):
    """Each op on its own backend: what ``auto`` gives when the fastest backend differs per op."""

    def __init__(self, **by_op: Backend):
        self.by_op = by_op
        self.name = self.name_for({op: b.name for op, b in by_op.items()})

    @staticmethod
    def name_for(choice: dict[str, str]) -> str:
        """The name recorded in ``result.params["backend"]``: every backend that counts, "+"-joined."""
        return "+".join(sorted(set(choice.values())))

    def activation_update(self, *args, **kwargs) -> None:
        self.by_op["activation"].activation_update(*args, **kwargs)

    def influence_update(self, *args, **kwargs) -> None:
        self.by_op["influence"].influence_update(*args, **kwargs)


def get_backend(name: str = "auto", device: torch.device | str = "cpu", **options) -> Backend:
    """An instance of backend ``name`` for ``device`` (``"auto"``: the best available, per op).
    ``options`` go to the constructor of the backend (with ``"auto"``, of each chosen backend)."""
    device = torch.device(device)
    if name != "auto":
        return _load(choose_backend(name, device)[0])(**options)
    choice = _auto_choice(device)
    made = {b: _load(b)(**options) for b in dict.fromkeys(choice.values())}
    if len(made) == 1:
        return next(iter(made.values()))
    return PerOpBackend(**{op: made[b] for op, b in choice.items()})
