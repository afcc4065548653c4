"""Shared test setup.

Triton kernels run through the Triton interpreter when no GPU is present; TRITON_INTERPRET must
be set before triton (or any kernel module) is imported, hence here, at collection time.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
