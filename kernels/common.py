"""Pieces shared by the Triton kernels: the per-channel spatial reduction and its tile sizes,
and the top-k count update.

Both the activation update (SPEC.md A, max only) and the 1x1 influence shortcut (SPEC.md B, max
and min) reduce a (B, C, H, W) view with arbitrary strides over its positions. Positions are
walked as a flat index p = y * W + x; the division happens once per position tile, not per
element, so NCHW, channels_last and strided views (sampled grids) need no copy.
"""

import contextlib
import dataclasses
import math

import triton
import triton.language as tl


@dataclasses.dataclass(frozen=True)
class Tiles:
    """Tile sizes and warps of every launch, read when a kernel is launched.

    The defaults are not yet tuned on a GPU: 16 reduction elements per thread kept registers
    near 64-110 on sm_90 under Triton 3.9 (``bench/triton_compile_check.py``). ``bench_gpu.py
    --sweep`` times alternatives; :func:`override_tiles` sets them. Counts never depend on them.
    """

    num_warps: int = 8
    reduce_tile: int = 4096  # elements of a (channels x positions) reduction tile
    score_tile: int = 8192  # elements of a (targets x sources) score block
    product_tile: int = 4096  # elements of a kxk (targets x positions) tile without tl.dot
    dot_positions: int = 64  # positions per tl.dot tile (16 at the least)
    dot_targets: int = 64  # targets per tl.dot tile, at the most (16 at the least)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            least = 16 if field.name.startswith("dot_") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least or value & (value - 1):
                raise ValueError(f"Tiles.{field.name} must be a power of two >= {least}, got {value!r}")


TILES = Tiles()


@contextlib.contextmanager
def override_tiles(**changes):
    """Launch with other tile sizes inside the block (benchmarks and tests), e.g.
    ``with override_tiles(num_warps=4, score_tile=4096): ...``."""
    global TILES
    previous = TILES
    TILES = dataclasses.replace(previous, **changes)
    try:
        yield TILES
    finally:
        TILES = previous


@triton.jit
def aligned(n, ALIGN: tl.constexpr):
    """``n`` itself, known to the compiler as a multiple of ALIGN (which divides n): masks such
    as ``offs < n`` then stay constant over ALIGN lanes, and loads under them can be vectors."""
    return (n // ALIGN) * ALIGN


def alignment(*values: int) -> int:
    """The ALIGN of :func:`aligned` for ``values``: the largest power of two up to 16 dividing all."""
    return math.gcd(16, *values)


@triton.jit
def spatial_extrema(x_ptr, b, offs_c, mask_c, s_b, s_c, n_pos, n_w, s_y, s_x, BLOCK_C: tl.constexpr,
                    BLOCK_P: tl.constexpr, WITH_MIN: tl.constexpr, FLAT_POS: tl.constexpr, ALIGN: tl.constexpr):
    """Max (and, if WITH_MIN, min) in float32 over the n_pos positions (rows of n_w) of the
    channels offs_c of image b. Empty grids give -inf / +inf. The sizes, strides and constants
    are those :func:`reduction_args` gives for the tensor at x_ptr.

    FLAT_POS > 0 (see :func:`flat_positions`): channel c's positions are the FLAT_POS elements
    from c * FLAT_POS. With that size known at compile time, the compiler sees contiguous,
    aligned runs and vectorises the loads; the runtime sizes and strides are then unused."""
    s_b, s_y, s_x = aligned(s_b, ALIGN), aligned(s_y, ALIGN), aligned(s_x, ALIGN)
    base = x_ptr + b.to(tl.int64) * s_b
    run_max = tl.full([BLOCK_C, BLOCK_P], float("-inf"), tl.float32)
    run_min = tl.full([BLOCK_C, BLOCK_P], float("inf"), tl.float32)
    if FLAT_POS > 0:
        rows = base + offs_c[:, None] * FLAT_POS
        n = FLAT_POS
    else:
        rows = base + offs_c[:, None] * s_c
        n = n_pos
    for p0 in range(0, n, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        if FLAT_POS > 0:
            off_p = p
        else:
            off_p = (p // n_w) * s_y + (p % n_w) * s_x
        mask = mask_c[:, None] & (p < n)[None, :]
        v = tl.load(rows + off_p[None, :], mask=mask, other=float("-inf")).to(tl.float32)
        # Elementwise running extrema; the cross-thread reduction happens once, after the loop.
        run_max = tl.maximum(run_max, v)
        if WITH_MIN:
            run_min = tl.minimum(run_min, tl.where(mask, v, float("inf")))
    return tl.max(run_max, axis=1), tl.min(run_min, axis=1)


@triton.jit
def count_top(scores, mask_rows, offs_s, n_valid, n_take, row_ptrs):
    """row_ptrs[r][s] += 1 for the n_take largest scores[r, s] (s < n_valid) of every row r,
    ties by lower s: n_take rounds of (max, lowest index holding it). Cheap for the small k
    of top-k rules; NaN scores are never picked."""
    avail = mask_rows[:, None] & (offs_s < n_valid)[None, :]
    for _ in range(n_take):
        best = tl.max(tl.where(avail, scores, float("-inf")), axis=1)
        pick = tl.min(tl.where(avail & (scores == best[:, None]), offs_s[None, :], n_valid), axis=1)
        tl.atomic_add(row_ptrs + pick, 1, mask=mask_rows & (pick < n_valid), sem="relaxed")
        avail = avail & (offs_s[None, :] != pick[:, None])


def flat_positions(n_h: int, n_w: int, s_c: int, s_y: int, s_x: int) -> int:
    """n_h * n_w if each channel's positions are one contiguous run starting at c * n_h * n_w
    (a contiguous NCHW image, or such a view), else 0: spatial_extrema's FLAT_POS."""
    n_pos = n_h * n_w
    rows_adjacent = n_h == 1 or s_y == n_w
    return n_pos if n_pos > 1 and s_x == 1 and rows_adjacent and s_c == n_pos else 0


def reduction_args(x) -> dict:
    """Keyword arguments of a kernel that reduces x (B, C, H, W), in any strides, with
    spatial_extrema: C, n_pos, n_w, the strides, and the constants BLOCK_C, BLOCK_P, FLAT_POS and
    ALIGN. Its grid is (cdiv(C, BLOCK_C), B).

    Such a kernel leaves the sizes unspecialised (``do_not_specialize``: fewer compiled variants
    per network), but FLAT_POS (a contiguous NCHW input's H*W: one variant per spatial size),
    ALIGN (channels_last: the power of two dividing C and the strides; see :func:`aligned`) and
    the strides are compile-time, so that loads vectorise."""
    _, c, h, w = x.shape
    s_b, s_c, s_y, s_x = x.stride()
    block_c, block_p = reduce_tiles(c, h * w, channels_contiguous=s_c == 1)
    return dict(C=c, n_pos=h * w, n_w=max(1, w), s_b=s_b, s_c=s_c, s_y=s_y, s_x=s_x, BLOCK_C=block_c,
                BLOCK_P=block_p, FLAT_POS=flat_positions(h, w, s_c, s_y, s_x), ALIGN=alignment(c, s_b, s_y, s_x))


def reduce_tiles(n_c: int, n_pos: int, channels_contiguous: bool) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P) for spatial_extrema: long runs along the contiguous axis, so that
    loads coalesce in NCHW (positions contiguous) and channels_last (channels contiguous)."""
    n_c2, n_pos2 = triton.next_power_of_2(max(1, n_c)), triton.next_power_of_2(max(1, n_pos))
    tile = TILES.reduce_tile
    if channels_contiguous:
        block_c = min(n_c2, 128, tile)
        return block_c, max(1, min(n_pos2, tile // block_c))
    block_p = min(n_pos2, 1024, tile)
    return max(1, min(n_c2, tile // block_p)), block_p
