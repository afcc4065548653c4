"""Model graph discovery: which Conv2d modules connect consecutive summary layers.

One recorded forward pass (a ``TorchFunctionMode`` plus module hooks) follows every tensor's
channels back to an *anchor*: the model input, a summary layer's output, or a conv's output.
Channel-preserving ops (ReLU, BatchNorm, pooling, padding, LRN, dropout, same-shape
elementwise ops such as residual additions) keep a tensor's channel origins; ``torch.cat`` on
the channel dim concatenates them with offsets; anything else makes the tensor opaque.

A conv edge's *source* is the anchor its input comes from (a summary layer, or an intermediate
conv output such as an Inception bottleneck); its *target* is the summary layer its output is
concatenated into (with a channel offset), or its own output as an intermediate that a later
conv on the way to the next summary layer reads. The first summary layer's previous node is
the last anchor that every conv path into it shares (InceptionV1: conv2d2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from .convspec import ConvSpec

INPUT = "input"
_MAX_CHAIN = 16  # convs between two summary layers (MobileNetV2 has 3; InceptionV1 2)


class DiscoveryError(ValueError):
    """The model's conv edges could not be found; the message names the layer or conv."""


@dataclass(frozen=True)
class ConvEdge:
    """One conv on a path between consecutive summary layers.

    ``source``/``target`` name a summary layer, the input, or an intermediate (named after the
    conv that produces it). The conv's output channel j is channel ``target_offset + j`` of
    ``target``; its input channel i is channel i of ``source``.
    """

    conv: str
    source: str
    target: str
    target_offset: int
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    spec: ConvSpec

    @property
    def sources_per_target(self) -> int:
        """Sources each output channel reads: ``in_channels / groups`` (the counts' last dim)."""
        return self.in_channels // self.spec.groups

    def source_channel(self, j, s):
        """The input channel of source ``s`` (an index within target ``j``'s group)."""
        return (j // (self.out_channels // self.spec.groups)) * self.sources_per_target + s

    def dense(self, counts: torch.Tensor) -> torch.Tensor:
        """Expand counts (..., C_out, C_in/groups) to (..., C_out, C_in), zeros outside each group."""
        if self.spec.groups == 1:
            return counts
        out = counts.new_zeros(*counts.shape[:-1], self.in_channels)
        j = torch.arange(self.out_channels, device=counts.device).view(-1, 1)
        s = torch.arange(self.sources_per_target, device=counts.device).view(1, -1)
        index = self.source_channel(j, s).expand(*counts.shape)
        return out.scatter_(-1, index, counts)

    def to_json(self) -> dict:
        d = asdict(self)
        d["spec"] = self.spec.to_json()
        d["kernel_size"] = list(self.kernel_size)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ConvEdge":
        return cls(d["conv"], d["source"], d["target"], int(d["target_offset"]), int(d["in_channels"]),
                   int(d["out_channels"]), tuple(d["kernel_size"]), ConvSpec.from_json(d["spec"]))


@dataclass(frozen=True)
class Skip:
    """Channels that reach a summary layer without passing a conv (a residual identity, a
    pooled branch): channels [source_offset, +channels) of ``source`` are channels
    [target_offset, +channels) of ``target``. A skip from the previous summary layer is counted
    (see :meth:`ModelGraph.counted_skips`); others are only recorded."""

    source: str
    target: str
    source_offset: int
    target_offset: int
    channels: int

    @property
    def key(self) -> str:
        """The name of its counts in ``SummitResult.skip``."""
        return f"{self.source}->{self.target}@{self.target_offset}"


@dataclass(frozen=True)
class ModelGraph:
    """What discovery found: summary layers in order, every node's channel count, the conv
    edges and the skip connections."""

    layers: list[str]
    input_node: str  # the node before the first summary layer
    channels: dict[str, int]
    edges: list[ConvEdge]
    skips: list[Skip] = field(default_factory=list)

    def counted_skips(self) -> list[Skip]:
        """The skips from one summary layer to the next: they become identity edges of the
        attribution graph, weighted by how many images of the class select both ends."""
        index = {layer: i for i, layer in enumerate(self.layers)}
        return [s for s in self.skips if index.get(s.target, 0) >= 1 and s.source == self.layers[index[s.target] - 1]]

    def to_json(self) -> dict:
        return {"layers": list(self.layers), "input_node": self.input_node, "channels": dict(self.channels),
                "edges": [e.to_json() for e in self.edges], "skips": [asdict(s) for s in self.skips]}

    @classmethod
    def from_json(cls, d: dict) -> "ModelGraph":
        return cls(list(d["layers"]), d["input_node"], {k: int(v) for k, v in d["channels"].items()},
                   [ConvEdge.from_json(e) for e in d["edges"]], [Skip(**s) for s in d.get("skips", [])])


# A channel segment: channels [out_start, out_start+length) of a tensor are channels
# [anchor_start, anchor_start+length) of the anchor tensor.
_Seg = tuple[str, int, int, int]  # (anchor, anchor_start, out_start, length)


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


class _Recorder(TorchFunctionMode):
    """Propagates channel segments through every torch function call of one forward pass."""

    def __init__(self):
        super().__init__()
        self.segs: dict[int, list[_Seg]] = {}
        self.keep: list[torch.Tensor] = []  # keeps tensors alive so that id() stays unique

    def tag(self, t: torch.Tensor, segs: list[_Seg]) -> None:
        self.keep.append(t)
        self.segs[id(t)] = segs

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            segs = self._propagate(func, args, kwargs, out)
            if segs is not None:
                self.tag(out, segs)
            elif id(out) in self.segs:  # an opaque in-place result loses its old origin
                del self.segs[id(out)]
        return out

    def _propagate(self, func, args, kwargs, out) -> list[_Seg] | None:
        if func in (torch.cat, torch.concat):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            parts = args[0] if args else kwargs.get("tensors")
            if dim not in (1, -3):
                return None
            segs, offset = [], 0
            for p in parts:
                if id(p) not in self.segs:
                    return None
                segs += [(a, s, offset + o, n) for a, s, o, n in self.segs[id(p)]]
                offset += p.shape[1]
            return segs
        inputs = [t for t in _tensors(list(args) + list(kwargs.values())) if t.dim() == 4]
        same_shape = [t for t in inputs if t.shape == out.shape and id(t) in self.segs]
        if same_shape:  # elementwise (ReLU, BN, residual add): union of the inputs' origins
            return sorted({s for t in same_shape for s in self.segs[id(t)]}, key=lambda s: (s[2], s[0]))
        if inputs and inputs[0].shape[:2] == out.shape[:2] and id(inputs[0]) in self.segs:
            return self.segs[id(inputs[0])]  # pooling, padding, resizing: channels preserved
        return None


def _trace(model: nn.Module, images: torch.Tensor, layers: list[str]):
    """Run one forward pass; return (per-layer derived segments, per-layer channel counts,
    per-conv (name, input segments, module) in call order)."""
    modules = dict(model.named_modules())
    recorder = _Recorder()
    layer_segs: dict[str, list[_Seg] | None] = {}
    layer_channels: dict[str, int] = {}
    convs: list[tuple[str, list[_Seg] | None, nn.Conv2d]] = []
    handles = []

    def conv_hook(name):
        def hook(module, inputs, output):
            convs.append((name, recorder.segs.get(id(inputs[0])) if inputs else None, module))
            recorder.tag(output, [(name, 0, 0, output.shape[1])])
        return hook

    def layer_hook(name):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise DiscoveryError(f"summary layer {name!r} must output a 4-D (B, C, H, W) tensor, got {shape}")
            if name in layer_segs:
                raise DiscoveryError(f"summary layer {name!r} runs more than once per forward pass; "
                                     "choose a module that is called once (e.g. a block, not a shared ReLU)")
            layer_segs[name] = recorder.segs.get(id(output))
            layer_channels[name] = output.shape[1]
            recorder.tag(output, [(name, 0, 0, output.shape[1])])
        return hook

    for name, module in modules.items():
        if isinstance(module, nn.Conv2d) and name not in layers:
            handles.append(module.register_forward_hook(conv_hook(name)))
    for name in layers:
        handles.append(modules[name].register_forward_hook(layer_hook(name)))
    try:
        with recorder:
            recorder.tag(images, [(INPUT, 0, 0, images.shape[1])])
            model(images)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in layers if n not in layer_segs]
    if missing:
        raise DiscoveryError(f"summary layer(s) {missing} did not run in the forward pass")
    return layer_segs, layer_channels, convs


def discover(model: nn.Module, images: torch.Tensor, layers: list[str]) -> ModelGraph:
    """Find the conv edges between consecutive ``layers`` with one forward pass on ``images``."""
    layer_segs, layer_channels, conv_calls = _trace(model, images, layers)
    conv_source: dict[str, str] = {}
    conv_module: dict[str, nn.Conv2d] = {}
    for name, segs, module in conv_calls:
        if name in conv_module:
            raise DiscoveryError(f"conv {name!r} runs more than once per forward pass; pass edges= explicitly")
        conv_module[name] = module
        if segs is not None and len(segs) == 1 and segs[0][1] == 0 and segs[0][3] == module.in_channels:
            conv_source[name] = segs[0][0]

    def chain_back(conv: str, stop: str | None, layer: str) -> list[str]:
        """Convs from ``conv`` back to the anchor ``stop`` (None: as far as convs go)."""
        chain = [conv]
        while len(chain) <= _MAX_CHAIN:
            src = conv_source.get(chain[-1])
            if src is None:
                raise DiscoveryError(f"cannot tell where the input of conv {chain[-1]!r} (on the way into layer "
                                     f"{layer!r}) comes from; pass edges= explicitly")
            if src == stop or src not in conv_module:
                return chain
            chain.append(src)
        raise DiscoveryError(f"more than {_MAX_CHAIN} convs in a row before layer {layer!r}")

    edges: list[ConvEdge] = []
    skips: list[Skip] = []
    input_node = INPUT
    for li, layer in enumerate(layers):
        segs = layer_segs[layer] or []
        prev = layers[li - 1] if li else None
        whole_convs = {a: o for a, s, o, n in segs if a in conv_module and s == 0 and n == conv_module[a].out_channels}
        chains = {conv: chain_back(conv, prev, layer) for conv in whole_convs}
        # A conv whose output also feeds another branch reaches this layer through a skip (e.g.
        # ResNet's identity shortcut from the stem conv), not as a branch of its own.
        upstream = {c for chain in chains.values() for c in chain[1:]}
        direct = {conv: o for conv, o in whole_convs.items() if conv not in upstream}
        if not direct:
            raise DiscoveryError(f"no Conv2d found between {prev or 'the input'!r} and summary layer {layer!r}")
        skip_segs = [(a, s, o, n) for a, s, o, n in segs if a not in direct]
        if prev is None:  # first layer: the last anchor shared by every path into it, skips included
            paths = [_sources(chains[c][0], conv_source) for c in direct]
            paths += [[a] + _sources(a, conv_source) for a, *_ in skip_segs]
            prev = input_node = _nearest_shared(paths)
            chains = {c: chain[:chain.index(prev)] if prev in chain else chain for c, chain in chains.items()}
        for conv, offset in direct.items():
            chain = chains[conv]
            if conv_source[chain[-1]] != prev:
                raise DiscoveryError(f"conv {chain[-1]!r} on the way into layer {layer!r} reads "
                                     f"{conv_source[chain[-1]]!r}, not the previous layer {prev!r}")
            for i, name in enumerate(chain):
                target, target_offset = (layer, offset) if i == 0 else (name, 0)
                edges.append(_edge(name, conv_module[name], conv_source[name], target, target_offset))
        skips += [Skip(a, layer, s, o, n) for a, s, o, n in skip_segs]
    channels: dict[str, int] = {}
    for e in edges:
        channels.setdefault(e.source, e.in_channels)
        if e.target == e.conv:
            channels[e.conv] = e.out_channels
    channels.update(layer_channels)
    unique: dict[str, ConvEdge] = {}
    for e in edges:  # a conv shared by two branches (one bottleneck feeding two convs) appears once
        if unique.setdefault(e.conv, e) != e:
            raise DiscoveryError(f"conv {e.conv!r} plays two roles ({unique[e.conv].target!r} and {e.target!r}); "
                                 "pass edges= explicitly")
    return ModelGraph(list(layers), input_node, channels, list(unique.values()), skips)


def _edge(name: str, conv: nn.Conv2d, source: str, target: str, offset: int) -> ConvEdge:
    return ConvEdge(name, source, target, offset, conv.in_channels, conv.out_channels,
                    tuple(conv.kernel_size), ConvSpec.from_module(conv))


def _sources(conv: str, conv_source: dict[str, str]) -> list[str]:
    """The anchors behind ``conv``, nearest first (through the convs that produce them)."""
    out = []
    while conv in conv_source:
        conv = conv_source[conv]
        out.append(conv)
    return out


def _nearest_shared(paths: list[list[str]]) -> str:
    """The first anchor of ``paths[0]`` that every path passes through."""
    common = set(paths[0]).intersection(*paths[1:])
    for anchor in paths[0]:
        if anchor in common:
            return anchor
    raise DiscoveryError("the paths into the first summary layer share no common input")


def graph_from_edges(model: nn.Module, images: torch.Tensor, layers: list[str], edges: list) -> ModelGraph:
    """Build the graph from an explicit edge list, for models discovery cannot follow.

    Each item is a :class:`ConvEdge` or a dict with ``conv``, ``source``, ``target`` and
    ``target_offset``; geometry and channel counts are read from the conv modules.
    """
    modules = dict(model.named_modules())
    layer_channels: dict[str, int] = {}
    handles = [modules[name].register_forward_hook(
        lambda m, i, out, name=name: layer_channels.__setitem__(name, out.shape[1])) for name in layers]
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()
    built = []
    for item in edges:
        d = item.to_json() if isinstance(item, ConvEdge) else dict(item)
        missing = {"conv", "source", "target"} - set(d)
        if missing:
            raise DiscoveryError(f"edges: entry {d!r} lacks {sorted(missing)}")
        conv = modules.get(d["conv"])
        if not isinstance(conv, nn.Conv2d):
            raise DiscoveryError(f"edges: {d['conv']!r} is not a Conv2d module of the model")
        built.append(_edge(d["conv"], conv, d["source"], d["target"], int(d.get("target_offset", 0))))
    channels = dict(layer_channels)
    for e in built:
        channels.setdefault(e.source, e.in_channels)
        if e.target not in layers:
            channels[e.target] = e.out_channels
    first = [e.source for e in built if e.target == layers[0]]
    return ModelGraph(list(layers), first[0] if first else INPUT, channels, built)
