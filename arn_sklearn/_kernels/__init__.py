"""Numerical kernels: arrays and an array namespace in, arrays out."""
