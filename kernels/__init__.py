"""Device code shipped inside the wheel as ``summit_fast.kernels``: Triton kernels (``*.py``)
and the CUDA sources (``*.cu``) that CMake compiles into ``summit_fast._C``."""
