"""Rows per chunk: one rule for every streamed pass.

A chunk's widest temporary is held near a byte budget: large enough for BLAS
to run at full speed, small enough that memory does not grow with the rows.
"""

# The default budget of a chunk's widest temporary, and the fewest rows a chunk holds.
CHUNK_BYTES = 64 * 2**20
MIN_CHUNK_ROWS = 256


def rows_for(width, budget=CHUNK_BYTES, minimum=MIN_CHUNK_ROWS, itemsize=8):
    """Rows whose widest temporary (``width`` items of ``itemsize`` bytes a row) fits ``budget``.

    Examples
    --------
    >>> rows_for(1024)  # 64 MiB of float64 rows 1024 wide
    8192
    >>> rows_for(10**7)  # never fewer than 256 rows
    256
    """
    return int(max(minimum, budget // (itemsize * max(width, 1))))
