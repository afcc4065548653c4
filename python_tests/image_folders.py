"""Tiny synthetic image folders for tests: a few small random PNGs per class sub-folder."""

from pathlib import Path

import numpy as np

N_PER_CLASS = 3


def write_images(folder: Path, classes=("cat", "dog"), seed: int = 0) -> Path:
    """``N_PER_CLASS`` random 32x24 PNGs, ``0.png``, ``1.png``, ..., in each class sub-folder of
    ``folder`` (created if needed; existing files of the same names are replaced); returns ``folder``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls in classes:
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(N_PER_CLASS):
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / cls / f"{i}.png")
    return folder
