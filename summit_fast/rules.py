"""Channel selection rules for activation aggregation (SPEC.md A, step 2)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mass:
    """Select the shortest prefix of channels (by clamped max activation, descending, ties by
    ascending index) whose sum reaches ``tau`` times the image's total. Summit's released data
    used ``tau = 0.01``."""

    tau: float = 0.01

    def __post_init__(self):
        if not (0.0 < float(self.tau) <= 1.0):
            raise ValueError(f"mass(tau): tau must be in (0, 1], got {self.tau!r}")

    def to_json(self) -> dict:
        return {"rule": "mass", "tau": float(self.tau)}


@dataclass(frozen=True)
class TopK:
    """Select the ``k`` channels with the largest max activation, ties by ascending index."""

    k: int

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"topk(k): k must be a positive int, got {self.k!r}")

    def to_json(self) -> dict:
        return {"rule": "topk", "k": int(self.k)}


SelectionRule = Mass | TopK


def mass(tau: float = 0.01) -> Mass:
    """The mass rule (the default): see :class:`Mass`."""
    return Mass(float(tau))


def topk(k: int) -> TopK:
    """The top-k rule: see :class:`TopK`."""
    return TopK(k)


def rule_from_json(d: dict) -> SelectionRule:
    """Inverse of ``rule.to_json()``."""
    if d.get("rule") == "mass":
        return Mass(float(d["tau"]))
    if d.get("rule") == "topk":
        return TopK(int(d["k"]))
    raise ValueError(f"unknown selection rule in manifest: {d!r}")
