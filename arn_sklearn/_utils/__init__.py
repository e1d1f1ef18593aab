"""Infrastructure: arrays and devices, backend, BLAS threads, memory, optional imports,
validation. Imports nothing else from the package.
"""
