"""The Triton kernels, shipped inside the wheel as ``summit_fast.kernels``: one module per op
(``activation.py``, ``influence.py``; ``common.py`` holds what both share). The C++ versions of
the same ops are in ``csrc/cpu`` and ``csrc/cuda`` under the same names."""
