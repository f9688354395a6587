"""Triton kernels of ponder, shipped inside the wheel as ``ponder.kernels``."""
