"""Comparing two results of the same images that were computed by different forward passes
(other batch sizes, processes, thread counts or memory layouts)."""

import torch

from summit_fast import SummitResult


def assert_same_counts(got: SummitResult, want: SummitResult) -> None:
    """Every count of ``got`` equals ``want``'s exactly; the two float quantities read from the
    model's outputs are compared with a tolerance: a conv's or softmax's output can differ in its
    last bit between batch sizes, thread counts or memory layouts, so the dataset examples'
    values and each image's top-1 probability (hence the fixed-point sum) may differ slightly."""
    mine, theirs = got.tensors(), want.tensors()
    assert mine.keys() == theirs.keys()
    for key, t in mine.items():
        if key.endswith("/value"):
            torch.testing.assert_close(t, theirs[key])
        elif key not in ("top1_probability_fixed", "top1_probability_histogram"):
            assert torch.equal(t, theirs[key]), key
    # Float32 probabilities a few ulps (~1e-7) apart; an image more or less would change its
    # class's sum by its probability (>= 1/K), far beyond this tolerance on test-sized data.
    torch.testing.assert_close(got.top1_probability, want.top1_probability, rtol=1e-5, atol=1e-6)
    # Such a probability could also round to the next whole percent: the same images per class,
    # each in the same bin or the next (at most one image a class across any bin boundary).
    histogram, wanted = got.top1_probability_histogram, want.top1_probability_histogram
    assert torch.equal(histogram.sum(1), wanted.sum(1))
    moved = (histogram.cumsum(1) - wanted.cumsum(1)).abs()
    assert moved.numel() == 0 or int(moved.max()) <= 1
