"""Small networks with random weights for tests: an Inception-like one with branches,
bottlenecks, a pooled branch and concatenation, and a plain sequential CNN."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Concat(nn.Module):
    def forward(self, tensors):
        return torch.cat(tensors, dim=1)


class TinyInception(nn.Module):
    """stem(3->6) -> mix1 (10 ch) -> mix2 (11 ch) -> 5 classes; each mix has a 1x1 branch,
    a 1x1 bottleneck + 3x3 branch and a 3x3 max-pool + 1x1 branch."""

    SUMMARY_LAYERS = ["mix1", "mix2"]
    INPUT_SHAPE = (3, 9, 9)
    # (conv, source, target, target_offset) as discovery should find them
    EXPECTED_EDGES = {
        ("mix1_1x1", "stem", "mix1", 0), ("mix1_3x3_bottleneck", "stem", "mix1_3x3_bottleneck", 0),
        ("mix1_3x3", "mix1_3x3_bottleneck", "mix1", 3), ("mix1_pool_reduce", "stem", "mix1", 8),
        ("mix2_1x1", "mix1", "mix2", 0), ("mix2_3x3_bottleneck", "mix1", "mix2_3x3_bottleneck", 0),
        ("mix2_3x3", "mix2_3x3_bottleneck", "mix2", 4), ("mix2_pool_reduce", "mix1", "mix2", 9),
    }

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        for name, c_in, (c1, c3r, c3, cp) in (("mix1", 6, (3, 4, 5, 2)), ("mix2", 10, (4, 3, 5, 2))):
            self.add_module(f"{name}_1x1", nn.Conv2d(c_in, c1, 1))
            self.add_module(f"{name}_3x3_bottleneck", nn.Conv2d(c_in, c3r, 1))
            self.add_module(f"{name}_3x3", nn.Conv2d(c3r, c3, 3, padding=1))
            self.add_module(f"{name}_pool_reduce", nn.Conv2d(c_in, cp, 1))
            self.add_module(name, Concat())
        self.head = nn.Linear(11, num_classes)

    def _mix(self, name, x):
        conv = lambda n, t: F.relu(getattr(self, f"{name}_{n}")(t))  # noqa: E731
        return getattr(self, name)((conv("1x1", x), conv("3x3", conv("3x3_bottleneck", x)),
                                    conv("pool_reduce", F.max_pool2d(x, 3, 1, 1))))

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self._mix("mix2", self._mix("mix1", x))
        return self.head(x.mean(dim=(2, 3)))


class TinySequential(nn.Module):
    """conv -> relu -> conv(stride 2) -> relu -> conv(groups 2, dilation 2) -> relu -> 4 classes."""

    SUMMARY_LAYERS = ["features.1", "features.3", "features.5"]

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2), nn.ReLU(),
        )
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.features(x).amax(dim=(2, 3)))


class TwoResidualBlocks(nn.Module):
    """block1 = relu(conv0(x)); block2 = relu(conv2(relu(conv1(block1))) + block1): a residual
    identity from block1 into block2, beside the conv chain conv1 -> conv2."""

    SUMMARY_LAYERS = ["block1", "block2"]

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 6, 3, padding=1)
        self.block1 = nn.ReLU()
        self.conv1 = nn.Conv2d(6, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 1)
        self.block2 = nn.ReLU()
        self.head = nn.Linear(6, num_classes)

    def forward(self, x):
        y1 = self.block1(self.conv0(x))
        y2 = self.block2(self.conv2(F.relu(self.conv1(y1))) + y1)
        return self.head(y2.mean(dim=(2, 3)))
