"""A small CNN for 8x8 handwritten digits (scikit-learn's bundled ``load_digits``), used by the
built-in demo: it trains in seconds on a laptop CPU."""

from __future__ import annotations

import torch
import torch.nn as nn


class DigitsCNN(nn.Module):
    """Three conv blocks (16, 32, 48 channels) and a linear head; 10 classes."""

    SUMMARY_LAYERS = ["block1", "block2", "block3"]
    INPUT_SHAPE = (1, 8, 8)

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.block1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.block2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 48, 3, padding=1)
        self.block3 = nn.ReLU()
        self.head = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(self.conv1(x))
        x = self.pool(self.block2(self.conv2(x)))
        x = self.block3(self.conv3(x))
        return self.head(x.amax(dim=(2, 3)))


def digits_cnn(num_classes: int = 10) -> DigitsCNN:
    """A randomly initialised :class:`DigitsCNN`."""
    return DigitsCNN(num_classes)


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits as (images (N, 1, 8, 8) in [0, 1], labels (N,) int64)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("the digits data come from scikit-learn: pip install 'summit-fast[demo]'") from exc
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(digits.target, dtype=torch.int64)


def train_digits_cnn(images: torch.Tensor, labels: torch.Tensor, epochs: int = 15, seed: int = 0) -> DigitsCNN:
    """Train a :class:`DigitsCNN` with Adam (a few seconds on 2 cores); returned in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), 64):
            idx = order[start:start + 64]
            loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
