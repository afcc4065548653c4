"""GPU benchmark of the Triton and CUDA backends against the torch backend on the same GPU.

Per op, at InceptionV1 shapes (batch 256, 224 px), bf16 and fp32 (and, for influence, bf16
inputs with fp32 weights, which is what autocast hands over), NCHW and channels_last:
- activation update (mass(0.01)) per summary layer mixed3a..mixed5b: median time
  (triton.testing.do_bench, which flushes L2 between runs), achieved GB/s of the activations
  read once, that as a fraction of the device copy bandwidth measured in the same run
  (target >= 80%), and the speedup over the torch backend;
- influence update (k=5, every output position) per conv edge (1x1, 3x3_bottleneck, 3x3,
  5x5_bottleneck, 5x5, pool_reduce; the 3x3/5x5 inputs pre-padded as in the model): time,
  GB/s of the input, TFLOP/s of 2*B*C_out*C_in*H_out*W_out*kh*kw (the conv's own FLOPs; 1x1
  edges use the exact max/min shortcut, so there it is an equivalent rate), and the speedup
  over torch (target >= 10x).
Every op's counts are also compared with the torch backend's ("same" = identical counts). The
data are random, not dyadic: two backends may sum a score's products in different orders, so a
few differing counts there can only be near-ties decided by the last bit of a score, and are
expected; exactness is what the tests check, on data without near-ties.
End to end: images/s on InceptionV1 with pre-loaded GPU batches: forward only, + activation,
+ influence (target >= 10,000 images/s with both in steady state), each as a whole
``summit_fast.aggregate`` call (setup included: graph discovery, weights digest, count
allocation) and in steady state (a warm ``Aggregator.update`` over 20 batches). The Triton
and CUDA rows run first: they are the headline, and they compile the kernels that the bf16
channels_last op rows reuse. A backend that cannot run (cuda in a build without nvcc) is left
out with its reason printed. The torch backend's whole runs, the slowest rows, come last, so
that a run cut short by its budget still has every op table.

Ops are timed through the backends' internal entry points (``_activation_update``,
``_influence_update``): the public methods first check the labels on the host, which
synchronises with the GPU, and that check is not the kernels' cost. TF32 is turned off so
that torch's fp32 convs compute what the Triton kernels compute (IEEE fp32).

    python bench/bench_gpu.py --out DIR            # everything (several minutes: each kernel
                                                   # variant compiles once, seconds each)
    python bench/bench_gpu.py --out DIR --quick    # bf16 end to end; ops at mixed3b/4d/5b,
                                                   # influence at mixed4d, two configs each
    python bench/bench_gpu.py --out DIR --sweep    # also: ops under other tile sizes

Tables are printed as they complete and written to DIR/bench_gpu.md and DIR/bench_gpu.json
after every section, so a run cut short by ``--budget-s`` or a timeout still leaves results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import traceback
import warnings

import torch

NUM_CLASSES = 1008
INFLUENCE_K = 5
# Summary layer: (input channels, spatial size, 1x1, 3x3_bottleneck, 3x3, 5x5_bottleneck, 5x5,
# pool_reduce) -- SPEC.md B's table; the layer's channels are 1x1 + 3x3 + 5x5 + pool_reduce.
MIXED = {
    "mixed3a": (192, 28, 64, 96, 128, 16, 32, 32),
    "mixed3b": (256, 28, 128, 128, 192, 32, 96, 64),
    "mixed4a": (480, 14, 192, 96, 204, 16, 48, 64),
    "mixed4b": (508, 14, 160, 112, 224, 24, 64, 64),
    "mixed4c": (512, 14, 128, 128, 256, 24, 64, 64),
    "mixed4d": (512, 14, 112, 144, 288, 32, 64, 64),
    "mixed4e": (528, 14, 256, 160, 320, 32, 128, 128),
    "mixed5a": (832, 7, 256, 160, 320, 48, 128, 128),
    "mixed5b": (832, 7, 384, 192, 384, 48, 128, 128),
}
# Op configurations: name -> (input dtype, weight dtype); weights matter for influence only.
DTYPES = {"bf16": (torch.bfloat16, torch.bfloat16), "bf16, fp32 W": (torch.bfloat16, torch.float32),
          "fp32": (torch.float32, torch.float32)}
FULL_CONFIGS = [(d, layout) for d in DTYPES for layout in ("nchw", "nhwc")]
QUICK_CONFIGS = [("bf16, fp32 W", "nhwc"), ("fp32", "nchw")]
# The GPU backends timed against the torch backend, in table order.
FAST_BACKENDS = ("triton", "cuda")


def layer_channels(layer: str) -> tuple[int, int]:
    _, size, c1, _, c3, _, c5, cp = MIXED[layer]
    return c1 + c3 + c5 + cp, size


def conv_edges(layer: str):
    """(edge, C_in, C_out, kernel, input size) of the layer's six convs; 3x3/5x5 pre-padded."""
    c_in, s, c1, c3r, c3, c5r, c5, cp = MIXED[layer]
    return [("1x1", c_in, c1, 1, s), ("3x3_bottleneck", c_in, c3r, 1, s), ("3x3", c3r, c3, 3, s + 2),
            ("5x5_bottleneck", c_in, c5r, 1, s), ("5x5", c5r, c5, 5, s + 4), ("pool_reduce", c_in, cp, 1, s)]


class Run:
    """Collects result rows per section and rewrites the output files after each section."""

    def __init__(self, out: str, budget_s: float):
        self.out, self.deadline = out, time.monotonic() + budget_s
        self.sections: dict[str, dict] = {}
        os.makedirs(out, exist_ok=True)

    def time_left(self) -> bool:
        return time.monotonic() < self.deadline

    def section(self, name: str, columns: list[str], note: str = "") -> list:
        self.sections[name] = {"columns": columns, "rows": [], "note": note}
        print(f"\n## {name}\n{note}\n| " + " | ".join(columns) + " |", flush=True)
        return self.sections[name]["rows"]

    def add(self, name: str, row: list) -> None:
        self.sections[name]["rows"].append(row)
        print("| " + " | ".join(_fmt(v) for v in row) + " |", flush=True)
        self.save()

    def save(self) -> None:
        with open(os.path.join(self.out, "bench_gpu.json"), "w") as f:
            json.dump(self.sections, f, indent=1, default=str)
        lines = []
        for name, sec in self.sections.items():
            lines += [f"## {name}", sec["note"], "", "| " + " | ".join(sec["columns"]) + " |",
                      "|" + "---|" * len(sec["columns"])]
            lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in sec["rows"]]
            lines.append("")
        with open(os.path.join(self.out, "bench_gpu.md"), "w") as f:
            f.write("\n".join(lines))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def bench_ms(fn, slow: bool = False) -> float:
    """Median milliseconds of fn() (do_bench; few repetitions for slow reference ops)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=2 if slow else 25, rep=20 if slow else 100, return_mode="median")


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy of 1 GiB: (read + write bytes) / time."""
    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / ms / 1e6


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if layout == "nhwc" else t


def _diff(a: torch.Tensor, b: torch.Tensor) -> str:
    n = int((a != b).sum())
    return "same" if n == 0 else f"{n} differ"


def activation_inputs(batch: int, c: int, s: int, dtype: torch.dtype, layout: str):
    """(activations, labels, zero counts) of one summary layer."""
    acts = _layout(torch.rand(batch, c, s, s, device="cuda", dtype=dtype), layout)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device="cuda")
    return acts, labels, torch.zeros(NUM_CLASSES, c, dtype=torch.int32, device="cuda")


def influence_inputs(batch: int, c_in: int, c_out: int, k: int, size: int, dname: str, layout: str):
    """(input, weight, labels, zero counts) of one conv edge in configuration ``dname``."""
    x_dtype, w_dtype = DTYPES[dname]
    x = _layout(torch.rand(batch, c_in, size, size, device="cuda", dtype=x_dtype), layout)
    weight = (torch.randn(c_out, c_in, k, k, device="cuda") * 0.05).to(w_dtype)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device="cuda")
    return x, weight, labels, torch.zeros(NUM_CLASSES, c_out, c_in, dtype=torch.int32, device="cuda")


def fast_backends(names):
    """Instances of the backends to time against torch, by name; those that cannot run here are
    left out with their reason printed (e.g. cuda in a build without nvcc)."""
    from summit_fast.backends import get_backend, unavailable_reason

    out = {}
    for name in names:
        reason = unavailable_reason(name, "cuda")
        if reason is None:
            out[name] = get_backend(name, "cuda")
        else:
            print(f"[bench_gpu] backend {name} left out: {reason}", flush=True)
    return out


def bench_activation(run: Run, batch: int, layers, configs, copy_gbs: float, backends) -> None:
    from summit_fast.backends.torch_ref import TorchBackend
    from summit_fast.rules import mass

    name = "Activation update"
    run.section(name, ["layer", "shape", "dtype", "layout", "backend", "us", "GB/s", "of copy", "torch us",
                       "speedup", "counts vs torch"],
                f"mass(0.01), batch {batch}; copy bandwidth {copy_gbs:,.0f} GB/s")
    ref, rule = TorchBackend(), mass(0.01)
    # Only the input dtype matters here: one row per (input dtype, layout).
    configs = list(dict.fromkeys((DTYPES[d][0], layout) for d, layout in configs))
    for layer in layers:
        c, s = layer_channels(layer)
        for dtype, layout in configs:
            if not run.time_left():
                return
            acts, labels, want = activation_inputs(batch, c, s, dtype, layout)
            ref._activation_update(acts, labels, want, rule, None)
            expected = want.clone()  # one update's counts, before the timing loops add more
            t_ref = bench_ms(lambda: ref._activation_update(acts, labels, want, rule, None), slow=True)
            for bname, backend in backends.items():
                got = torch.zeros_like(want)
                backend._activation_update(acts, labels, got, rule, None)
                same = _diff(got, expected)
                t = bench_ms(lambda: backend._activation_update(acts, labels, got, rule, None))
                gbs = acts.numel() * acts.element_size() / t / 1e6
                run.add(name, [layer, f"{batch}x{c}x{s}x{s}", str(dtype).removeprefix("torch."), layout, bname,
                               t * 1e3, gbs, f"{gbs / copy_gbs:.0%}", t_ref * 1e3, t_ref / t, same])


def bench_influence(run: Run, batch: int, layers, configs, copy_gbs: float, backends) -> None:
    from summit_fast.backends.torch_ref import TorchBackend
    from summit_fast.convspec import ConvSpec

    name = "Influence update"
    run.section(name, ["edge", "C_in->C_out", "k", "input", "dtype", "layout", "backend", "us", "GB/s", "of copy",
                       "TFLOP/s", "torch us", "speedup", "counts vs torch"],
                f"k={INFLUENCE_K}, every output position, batch {batch}; copy bandwidth {copy_gbs:,.0f} GB/s")
    ref, conv = TorchBackend(), ConvSpec()
    for layer in layers:
        for edge, c_in, c_out, k, size in conv_edges(layer):
            for dname, layout in configs:
                if not run.time_left():
                    return
                x, weight, labels, want = influence_inputs(batch, c_in, c_out, k, size, dname, layout)
                ref._influence_update(x, weight, conv, labels, want, INFLUENCE_K, 1)
                expected = want.clone()  # one update's counts, before the timing loops add more
                t_ref = bench_ms(lambda: ref._influence_update(x, weight, conv, labels, want, INFLUENCE_K, 1),
                                 slow=True)
                out = size - k + 1
                flops = 2 * batch * c_out * c_in * out * out * k * k
                for bname, backend in backends.items():
                    got = torch.zeros_like(want)
                    backend._influence_update(x, weight, conv, labels, got, INFLUENCE_K, 1)
                    same = _diff(got, expected)
                    t = bench_ms(lambda: backend._influence_update(x, weight, conv, labels, got, INFLUENCE_K, 1))
                    gbs = x.numel() * x.element_size() / t / 1e6
                    run.add(name, [f"{layer}_{edge}", f"{c_in}->{c_out}", f"{k}x{k}", f"{size}x{size}", dname,
                                   layout, bname, t * 1e3, gbs, f"{gbs / copy_gbs:.0%}", flops / t / 1e9,
                                   t_ref * 1e3, t_ref / t, same])
                    del got
                del want, expected  # the next edge's counts can be large (K x C_out x C_in int32)


# Tile sizes tried by --sweep (fields of summit_fast.kernels.common.Tiles; {} = defaults),
# and which fields each kind of op reads: other fields would only repeat the default's time.
SWEEP_TILES = [{}, {"num_warps": 4}, {"num_warps": 16}, {"reduce_tile": 2048}, {"reduce_tile": 8192},
               {"score_tile": 4096}, {"score_tile": 16384}, {"dot_positions": 32}, {"dot_positions": 128},
               {"dot_targets": 32}, {"dot_targets": 128}]
SWEEP_FIELDS = {"activation": {"num_warps", "reduce_tile"},
                "1x1": {"num_warps", "reduce_tile", "score_tile"},
                "kxk": {"num_warps", "score_tile", "dot_positions", "dot_targets"}}
# (op, layer, edge or None, configuration, layout)
SWEEP_OPS = [("activation", "mixed3b", None, "bf16", "nhwc"), ("activation", "mixed3b", None, "fp32", "nchw"),
             ("activation", "mixed5b", None, "bf16", "nhwc"),
             ("influence", "mixed4d", "1x1", "bf16, fp32 W", "nhwc"), ("influence", "mixed4d", "1x1", "fp32", "nchw"),
             ("influence", "mixed4d", "3x3", "bf16, fp32 W", "nhwc"), ("influence", "mixed4d", "3x3", "bf16", "nhwc"),
             ("influence", "mixed4d", "3x3", "fp32", "nchw"), ("influence", "mixed4d", "5x5", "bf16, fp32 W", "nhwc")]


def bench_tile_sweep(run: Run, batch: int) -> None:
    """Each op's time under other tile sizes, against the defaults in the same run; the counts
    must not change ("same" = identical to the defaults' counts)."""
    from summit_fast.backends.triton import TritonBackend
    from summit_fast.convspec import ConvSpec
    from summit_fast.kernels.common import override_tiles
    from summit_fast.rules import mass

    name = "Tile sweep"
    run.section(name, ["op", "dtype", "layout", "tiles", "triton us", "vs defaults", "counts vs defaults"],
                f"batch {batch}; each op under each tile setting that it reads (Tiles in kernels/common.py)")
    tri, rule, conv = TritonBackend(), mass(0.01), ConvSpec()
    for op, layer, edge, dname, layout in SWEEP_OPS:
        if op == "activation":
            c, s = layer_channels(layer)
            acts, labels, counts = activation_inputs(batch, c, s, DTYPES[dname][0], layout)
            label, kind = f"activation {layer}", "activation"

            def update(counts, acts=acts, labels=labels):
                tri._activation_update(acts, labels, counts, rule, None)
        else:
            _, c_in, c_out, k, size = next(e for e in conv_edges(layer) if e[0] == edge)
            x, weight, labels, counts = influence_inputs(batch, c_in, c_out, k, size, dname, layout)
            label, kind = f"influence {layer}_{edge}", "1x1" if k == 1 else "kxk"

            def update(counts, x=x, weight=weight, labels=labels):
                tri._influence_update(x, weight, conv, labels, counts, INFLUENCE_K, 1)
        default_us = default_counts = None  # SWEEP_TILES starts with the defaults
        for tiles in SWEEP_TILES:
            if not set(tiles) <= SWEEP_FIELDS[kind]:
                continue
            if not run.time_left():
                return
            try:
                with override_tiles(**tiles):
                    got = torch.zeros_like(counts)
                    update(got)
                    us = bench_ms(lambda: update(counts)) * 1e3
            except Exception as exc:  # e.g. a tile too large for shared memory: the other rows still count
                run.add(name, [label, dname, layout, _tiles_label(tiles), f"error: {type(exc).__name__}", "-", "-"])
                continue
            if not tiles:
                default_us, default_counts = us, got
            run.add(name, [label, dname, layout, _tiles_label(tiles), us,
                           "-" if default_us is None else f"{default_us / us:.2f}x",
                           "-" if default_counts is None else _diff(got, default_counts)])
        del counts, default_counts


def _tiles_label(tiles: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in tiles.items()) or "defaults"


def end_to_end_inputs(batch: int, n_batches: int) -> tuple:
    """InceptionV1 on the GPU and ``n_batches`` pre-loaded batches of ``batch`` random images
    (in its input range) with labels: what every end-to-end row runs on."""
    from summit_fast.models import inception_v1

    return inception_v1().cuda().eval(), [(torch.rand(batch, 3, 224, 224, device="cuda") * 255 - 117,
                                           torch.randint(0, NUM_CLASSES, (batch,), device="cuda"))
                                          for _ in range(n_batches)]


def bench_end_to_end(run: Run, inputs: tuple, configs, backends) -> None:
    """Rows of images/s for ``backends`` under ``configs``; the first call of a run also times
    the forward pass alone."""
    import summit_fast

    model, batches = inputs
    batch, n_batches = batches[0][0].shape[0], len(batches)
    name = "End to end (InceptionV1)"
    with_forward = name not in run.sections
    if with_forward:
        run.section(name, ["config", "backend", "work", "images/s", "host syncs per batch"],
                    f"whole call: one aggregate() over {n_batches} pre-loaded GPU batches of {batch} x 3x224x224 "
                    "after one warm-up call (setup included); steady state: a warm Aggregator.update over the same "
                    "batches, cycled; host syncs: CUDA synchronisations of a 2-batch run minus a 1-batch run (torch's sync debug mode)")

    def images_per_s(fn) -> float:
        fn(batches[:1])  # warm-up: kernel compilation, graph discovery
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn(batches)
        torch.cuda.synchronize()
        return n_batches * batch / (time.perf_counter() - start)

    def syncs_per_batch(fn) -> int:
        def syncs(data) -> int:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    fn(data)
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            return sum("synchroniz" in str(w.message) for w in caught)

        return syncs(batches[:2]) - syncs(batches[:1])

    for label, amp_dtype, channels_last in configs:
        options = {"amp_dtype": amp_dtype, "channels_last": channels_last}
        model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext

        def forward(data):
            with torch.inference_mode(), autocast():
                for images, _ in data:
                    model(images.contiguous(memory_format=torch.channels_last) if channels_last else images)

        if not run.time_left():
            return
        if with_forward:
            run.add(name, [label, "-", "forward only", images_per_s(forward), syncs_per_batch(forward)])
        for backend in backends:
            for influence in (False, True):
                if not run.time_left():
                    return
                work = "+ activation + influence" if influence else "+ activation"
                def run_aggregate(data, backend=backend, influence=influence):
                    summit_fast.aggregate(model, data, backend=backend, influence=influence, progress=False, **options)

                try:
                    ips, syncs = images_per_s(run_aggregate), syncs_per_batch(run_aggregate)
                    steady = steady_images_per_s(model, batches, backend=backend, influence=influence, **options)
                except Exception as exc:  # keep going: the other rows still mean something
                    traceback.print_exc()
                    ips = steady = f"error: {type(exc).__name__}: {exc}"
                    syncs = "-"
                run.add(name, [label, backend, work + " (whole call)", ips, syncs])
                run.add(name, [label, backend, work + f" (steady state, {STEADY_UPDATES} updates)", steady, syncs])


# Warm Aggregator.update calls timed for the steady-state rows (the pre-loaded batches, cycled).
STEADY_UPDATES = 20


def steady_images_per_s(model, batches, **options) -> float:
    """Images/s of a warm ``Aggregator.update`` over ``STEADY_UPDATES`` batches: what a long run
    costs per batch, without the whole call's setup (graph discovery, the weights digest, the
    count allocation and the first batch's kernel compilation)."""
    import summit_fast

    aggregator = summit_fast.Aggregator(model, **options)
    aggregator.update(*batches[0])  # setup and compilation, untimed
    torch.cuda.synchronize()
    start = time.perf_counter()
    for n in range(STEADY_UPDATES):
        aggregator.update(*batches[n % len(batches)])
    torch.cuda.synchronize()
    return STEADY_UPDATES * batches[0][0].shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results_gpu", help="folder for bench_gpu.md and bench_gpu.json")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--quick", action="store_true",
                        help="bf16 end to end; two configs of ops at mixed3b/4d/5b, influence at mixed4d")
    parser.add_argument("--e2e-batches", type=int, default=4)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--sweep", action="store_true",
                        help="also time ops under other tile sizes (after the op tables, before torch's whole runs)")
    parser.add_argument("--budget-s", type=float, default=1e9, help="stop starting new rows after this many seconds")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA GPU")
    import triton

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    run = Run(args.out, args.budget_s)
    props = torch.cuda.get_device_properties(0)
    run.section("Device", ["device", "memory GiB", "SMs", "torch", "triton", "copy GB/s"])
    copy_gbs = copy_bandwidth_gbs()
    run.add("Device", [props.name, props.total_memory / 2**30, props.multi_processor_count, torch.__version__,
                       triton.__version__, copy_gbs])
    e2e = [("bf16 autocast, channels_last", torch.bfloat16, True)]
    if not args.quick:
        e2e.append(("fp32, NCHW", None, False))
    e2e_inputs = None if args.skip_e2e else end_to_end_inputs(args.batch, args.e2e_batches)
    fast = fast_backends(FAST_BACKENDS)
    if e2e_inputs:
        bench_end_to_end(run, e2e_inputs, e2e, backends=tuple(fast))
    configs = QUICK_CONFIGS if args.quick else FULL_CONFIGS
    bench_activation(run, args.batch, ["mixed3b", "mixed4d", "mixed5b"] if args.quick else list(MIXED), configs,
                     copy_gbs, fast)
    bench_influence(run, args.batch, ["mixed4d"] if args.quick else list(MIXED), configs, copy_gbs, fast)
    if args.sweep:
        bench_tile_sweep(run, args.batch)
    if e2e_inputs:  # last: the torch backend's whole runs are the slowest rows
        bench_end_to_end(run, e2e_inputs, e2e, backends=("torch",))
    if not run.time_left():
        print(f"\nstopped early: --budget-s {args.budget_s:g} reached; rows above are complete", flush=True)
    run.save()


if __name__ == "__main__":
    main()
