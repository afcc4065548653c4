"""Benchmark of the native CPU backend against the torch reference (issue 3).

Per op and shape: median times of the float32 torch reference (TorchBackend) and the cpu
backend, the speedup, and how close the cpu backend gets to the machine's floor: achieved
GB/s of the activation update against the memory-read bandwidth measured here (a large tensor
sum), and GFLOP/s of the influence update against the measured float32 matmul throughput.
Shapes are InceptionV1's nine summary layers and conv edges at batch 16 and 224 px, and three
MobileNetV2 blocks (1x1 expand, 3x3 depthwise, 1x1 project), all taken from the bundled models
with forward hooks. Last, end-to-end ``summit_fast.aggregate`` against the plain forward pass.

    python bench/bench_cpu.py            # everything, about 5 minutes on 2 cores
    python bench/bench_cpu.py --quick    # three InceptionV1 layers, one MobileNetV2 block
    python bench/bench_cpu.py --threads 1  # single-threaded (stable on a shared machine)
    python bench/bench_cpu.py --ops activation --channels-last  # the activation update alone, NHWC

The load average (1 min) is printed at the start and end: on a shared machine, numbers taken
under load are not comparable (a two-thread parallel region waits for a descheduled thread).

Influence GFLOP counts the definition (2 * B * C_out * C_in/groups * kh * kw * positions), which
is also the FLOP count of the conv itself; for 1x1 convs the backends use the exact max/min
shortcut instead, so their "GFLOP/s" there is an equivalent rate, not arithmetic done. Where
k >= C_in/groups (depthwise convs) every source is kept and the cpu backend computes no scores at
all; those edges are listed but left out of the target summary.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch
import torch.nn as nn

import summit_fast
from summit_fast._native import native
from summit_fast.backends.cpu import CpuBackend
from summit_fast.backends.torch_ref import TorchBackend
from summit_fast.convspec import ConvSpec
from summit_fast.models import inception_v1, mobilenet_v2
from summit_fast.rules import mass

BATCH = 16
NUM_CLASSES = 1000
INFLUENCE_K = 5
INCEPTION_BRANCHES = ("1x1", "3x3_bottleneck", "3x3", "5x5_bottleneck", "5x5", "pool_reduce")
MOBILENET_BLOCKS = ("features.3", "features.13", "features.17")  # 56 px, 14 px, 7 px
OPS = ("activation", "influence", "aggregate")


def median_time(fn, repeats: int, before=None) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up; ``before()`` runs
    untimed ahead of each."""
    fn()
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def seconds(fn) -> float:
    """Wall time of one run of ``fn()``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def capture_shapes(model: nn.Module, layers, convs) -> tuple[dict, dict]:
    """Output shapes of ``layers`` and (input shape, conv module) of ``convs`` for one 224 px image."""
    outputs, inputs, hooks = {}, {}, []
    modules = dict(model.named_modules())
    for name in layers:
        hooks.append(modules[name].register_forward_hook(lambda m, i, o, n=name: outputs.__setitem__(n, o.shape)))
    for name in convs:
        hooks.append(modules[name].register_forward_hook(lambda m, i, o, n=name: inputs.__setitem__(n, (i[0].shape, m))))
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    return outputs, inputs


def model_cases(quick: bool):
    """(activation cases, influence cases): (label, shape) and (label, input shape, conv module)."""
    net = inception_v1()
    layers = ["mixed3b", "mixed4d", "mixed5b"] if quick else net.SUMMARY_LAYERS
    convs = [f"{layer}_{branch}_pre_relu_conv" for layer in layers for branch in INCEPTION_BRANCHES]
    outs, ins = capture_shapes(net, layers, convs)
    act = [(f"InceptionV1 {n}", outs[n]) for n in layers]
    inf = [(f"{n.removesuffix('_pre_relu_conv')}", *ins[n]) for n in convs]

    mnet = mobilenet_v2()
    blocks = MOBILENET_BLOCKS[1:2] if quick else MOBILENET_BLOCKS
    modules = dict(mnet.named_modules())
    convs = [n for n in modules if n.startswith(tuple(b + "." for b in blocks)) and isinstance(modules[n], nn.Conv2d)]
    outs, ins = capture_shapes(mnet, blocks, convs)
    act += [(f"MobileNetV2 {b}", outs[b]) for b in blocks]
    for n in convs:
        shape, conv = ins[n]
        kind = "depthwise" if conv.groups > 1 else ("expand" if conv.out_channels > conv.in_channels else "project")
        inf.append((f"MobileNetV2 {n} ({kind})", shape, conv))
    return act, inf


def measure_read_bandwidth() -> float:
    """GB/s of torch summing a 512 MiB float32 tensor (default threads)."""
    x = torch.ones(128 * 1024 * 1024)
    return x.numel() * 4 / median_time(x.sum, 5) / 1e9


def measure_matmul_gflops() -> float:
    """float32 GFLOP/s of a 2048^3 matmul (default threads): the arithmetic floor."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    return 2 * 2048**3 / median_time(lambda: a @ b, 5) / 1e9


def bench_activation(cases, repeats, bandwidth, channels_last=False):
    ref, cpu = TorchBackend(torch.float32), CpuBackend()
    flush = torch.ones(16 * 1024 * 1024)  # 64 MiB, read before each run: activations start cold
    rows = []
    for label, shape in cases:
        acts = torch.randn(BATCH, *shape[1:])
        if channels_last:
            acts = acts.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, NUM_CLASSES, (BATCH,))
        counts = torch.zeros(NUM_CLASSES, shape[1], dtype=torch.int32)
        t_ref = median_time(lambda: ref.activation_update(acts, labels, counts, mass(0.01)), repeats, flush.sum)
        t_cpu = median_time(lambda: cpu.activation_update(acts, labels, counts, mass(0.01)), repeats * 3, flush.sum)
        gbs = acts.numel() * 4 / t_cpu / 1e9
        rows.append((label, "x".join(map(str, acts.shape)), t_ref, t_cpu, t_ref / t_cpu, gbs, gbs / bandwidth))
        print(f"  {label}: torch {t_ref * 1e3:.2f} ms, cpu {t_cpu * 1e3:.2f} ms", flush=True)
    return rows


def bench_influence(cases, repeats, matmul):
    ref, cpu = TorchBackend(torch.float32), CpuBackend()
    rows = []
    for label, shape, conv in cases:
        spec = ConvSpec.from_module(conv)
        weight = conv.weight.detach()
        x = torch.randn(BATCH, *shape[1:])
        labels = torch.randint(0, NUM_CLASSES, (BATCH,))
        counts = torch.zeros(NUM_CLASSES, *weight.shape[:2], dtype=torch.int32)
        ho, wo = spec.output_size(shape[2], shape[3], *weight.shape[2:])
        gflop = 2 * BATCH * weight[0].numel() * weight.shape[0] * ho * wo / 1e9
        t_ref = median_time(lambda: ref.influence_update(x, weight, spec, labels, counts, INFLUENCE_K), repeats)
        t_cpu = median_time(lambda: cpu.influence_update(x, weight, spec, labels, counts, INFLUENCE_K), repeats * 3)
        kernel = "x".join(map(str, weight.shape[2:]))
        desc = f"{shape[1]}->{weight.shape[0]} {kernel}{' g' + str(spec.groups) if spec.groups > 1 else ''} @{shape[2]}"
        all_kept = weight.shape[1] <= INFLUENCE_K  # every source kept: counted without scores
        rate = None if all_kept else gflop / t_cpu
        floor = None if all_kept or kernel == "1x1" else rate / matmul
        rows.append((label, desc, gflop, t_ref, t_cpu, t_ref / t_cpu, rate, floor))
        print(f"  {label}: torch {t_ref * 1e3:.1f} ms, cpu {t_cpu * 1e3:.2f} ms", flush=True)
    return rows


def bench_aggregate(batches: int, classes: int = 1008):
    """Seconds per batch of the plain forward pass, aggregate(activations only) and
    aggregate(activations + influence): (whole ``aggregate`` call / batches, steady state).
    Labels are drawn from the first ``classes`` of the model's 1008 (fewer classes: fewer
    first writes into fresh count rows per batch).
    The whole call includes the first batch, which discovers the model's graph and allocates
    the count tensors; the steady state is ``Aggregator.update`` on an aggregator that has
    already seen a batch (what ``aggregate`` loops over), timed interleaved with the forward."""
    model = inception_v1()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(BATCH, 3, 224, 224, generator=g) * 50, torch.randint(0, classes, (BATCH,), generator=g))
            for _ in range(batches)]
    options = dict(backend="cpu", num_classes=1008)

    def forward():
        with torch.no_grad():
            for images, _ in data:
                model(images)

    whole = {infl: seconds(lambda: summit_fast.aggregate(model, data, progress=False, influence=infl, **options))
             for infl in (False, True)}
    warm = {infl: summit_fast.Aggregator(model, influence=infl, **options) for infl in (False, True)}
    for aggregator in warm.values():
        aggregator.update(*data[0])
    steady = {"forward": [], False: [], True: []}
    for _ in range(2):
        steady["forward"].append(seconds(forward))
        for infl, aggregator in warm.items():
            steady[infl].append(seconds(lambda: [aggregator.update(x, y) for x, y in data]))
    per_batch = {key: statistics.median(ts) / batches for key, ts in steady.items()}
    t_forward = per_batch["forward"]
    return [("plain forward (no_grad)", t_forward, t_forward),
            ("aggregate, activation only", whole[False] / batches, per_batch[False]),
            ("aggregate, activation + influence", whole[True] / batches, per_batch[True])]


def geomean(xs):
    xs = list(xs)
    return float(torch.tensor(xs).log().mean().exp())


def bench_and_print_influence(inf_cases, repeats, matmul):
    inf = bench_influence(inf_cases, repeats, matmul)
    print("\n### Influence update (float32 NCHW, k = 5, K = 1000, spatial_stride 1)\n")
    print("| conv edge | C_in->C_out kernel @px | GFLOP | torch ms | cpu ms | speedup | cpu GFLOP/s | of matmul |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, desc, gflop, t_ref, t_cpu, speedup, rate, frac in inf:
        print(f"| {label} | {desc} | {gflop:.2f} | {t_ref * 1e3:.1f} | {t_cpu * 1e3:.2f} | {speedup:.1f}x | "
              f"{'all kept' if rate is None else f'{rate:.1f}'} | {'-' if frac is None else f'{frac:.0%}'} |")

    scored = [r for r in inf if r[6] is not None]
    inf_speed = [r[5] for r in scored]
    print(f"\n- influence >= 10x the torch reference: min {min(inf_speed):.1f}x, geomean {geomean(inf_speed):.1f}x; "
          f"{sum(s >= 10 for s in inf_speed)}/{len(inf_speed)} edges that compute scores meet it")
    print(f"- all influence edges together: torch {sum(r[3] for r in inf):.2f} s, cpu {sum(r[4] for r in inf):.3f} s "
          f"({sum(r[3] for r in inf) / sum(r[4] for r in inf):.0f}x); without the all-kept edges "
          f"{sum(r[3] for r in scored) / sum(r[4] for r in scored):.0f}x")


def print_aggregate(batches, classes):
    rows = bench_aggregate(batches, classes)
    print(f"\n### End to end: InceptionV1 (random weights), {batches} batches of {BATCH} at 224 px, "
          f"labels from {classes} classes\n")
    print("| run | s/batch, whole run | vs forward | s/batch, steady state | vs forward |")
    print("|---|---:|---:|---:|---:|")
    fwd_all, fwd_steady = rows[0][1], rows[0][2]
    for label, t_all, t_steady in rows:
        print(f"| {label} | {t_all:.2f} | {t_all / fwd_all:.2f}x | {t_steady:.2f} | {t_steady / fwd_steady:.2f}x |")
    print(f"\n- activation only <= 1.2x forward: {rows[1][1] / fwd_all:.2f}x whole run, "
          f"{rows[1][2] / fwd_steady:.2f}x steady state")
    print(f"- activation + influence <= 3x forward: {rows[2][1] / fwd_all:.2f}x whole run, "
          f"{rows[2][2] / fwd_steady:.2f}x steady state")
    print(f"- activation + influence <= 1.2x forward in steady state (influence-engine issue): "
          f"{rows[2][2] / fwd_steady:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="three InceptionV1 layers, one MobileNetV2 block")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the torch reference (cpu: 3x)")
    parser.add_argument("--batches", type=int, default=3, help="batches of 16 for the aggregate timing")
    parser.add_argument("--classes", type=int, default=1008, help="labels of the aggregate timing drawn from this "
                        "many classes (of 1008)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="threads of torch and of the OpenMP kernels (default: torch's default); on a shared "
                             "machine 1 gives stable numbers, as a parallel region waits for descheduled threads")
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS), help="what to measure (default: all)")
    parser.add_argument("--channels-last", action="store_true", help="activation inputs in channels_last")
    args = parser.parse_args()
    if args.quick:
        args.batches = 1
    torch.set_num_threads(args.threads)
    native.set_num_threads(args.threads)

    print(f"# {datetime.date.today()} {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"{native.num_threads()} OpenMP threads, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}",
          flush=True)
    bandwidth, matmul = measure_read_bandwidth(), measure_matmul_gflops()
    print(f"# measured: memory read {bandwidth:.1f} GB/s (512 MiB sum), float32 matmul {matmul:.0f} GFLOP/s", flush=True)
    act_cases, inf_cases = model_cases(args.quick)
    if "activation" in args.ops:
        act = bench_activation(act_cases, args.repeats, bandwidth, args.channels_last)
        layout = "channels_last" if args.channels_last else "NCHW"
        print(f"\n### Activation update (float32 {layout}, mass(0.01), K = 1000, cold cache)\n")
        print("| layer | shape | torch ms | cpu ms | speedup | cpu GB/s | of read BW |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for label, shape, t_ref, t_cpu, speedup, gbs, frac in act:
            print(f"| {label} | {shape} | {t_ref * 1e3:.2f} | {t_cpu * 1e3:.2f} | {speedup:.1f}x | {gbs:.1f} | {frac:.0%} |")
        act_speed = [r[4] for r in act]
        act_frac = [r[6] for r in act]
        print("\n### Targets\n")
        print(f"- activation >= 3x the torch reference: min {min(act_speed):.1f}x, geomean {geomean(act_speed):.1f}x; "
              f"{sum(s >= 3 for s in act_speed)}/{len(act_speed)} shapes meet it")
        print(f"- activation >= 60% of read bandwidth: min {min(act_frac):.0%}, median "
              f"{statistics.median(act_frac):.0%}; {sum(f >= 0.6 for f in act_frac)}/{len(act_frac)} shapes meet it")
    if "influence" in args.ops:
        bench_and_print_influence(inf_cases, args.repeats, matmul)
    if "aggregate" in args.ops and hasattr(summit_fast, "aggregate"):
        print_aggregate(args.batches, args.classes)
    print(f"\n# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
