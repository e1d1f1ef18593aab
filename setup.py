"""Compiled kernels: optional Cython extensions (the metadata lives in pyproject.toml).

Each kernel is an ``arn_sklearn/_kernels/<name>.pyx`` listed in ``KERNELS``: adding one
is one line. Every extension is optional: without a C compiler (or without Cython, when
building from a checkout with an old pip) the package still installs and the numpy
paths run. No ``-march=native``: wheels and sdists must run on any x86-64/arm64 CPU.
"""

import os

from setuptools import Extension, setup

KERNELS = [
    "arn_sklearn._kernels._pair_gram_c",
    "arn_sklearn._kernels._block_cg_gram",
]


def extensions():
    try:
        from Cython.Build import cythonize
    except ImportError:  # build-system requires Cython; a bare `setup.py` call may not have it
        return []
    flags = [] if os.name == "nt" else ["-O3"]
    modules = [
        Extension(
            name,
            [name.replace(".", "/") + ".pyx"],
            extra_compile_args=flags,
            optional=True,
        )
        for name in KERNELS
    ]
    ext = cythonize(
        modules,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
    for e in ext:  # cythonize copies the extensions: keep them optional
        e.optional = True
    return ext


setup(ext_modules=extensions())
