"""Progress lines of long streamed passes (``verbose``)."""

import time

# Seconds between two progress lines at verbose=1.
PROGRESS_INTERVAL = 5.0


class Progress:
    """Print ``[ARN]`` progress of a pass over rows.

    ``verbose=1``: one line every ``interval`` seconds (rows done, rate,
    elapsed), and a last one when the pass ends if any was printed;
    ``verbose >= 2``: one line per chunk with its own time.

    Examples
    --------
    >>> progress = Progress("accumulated", verbose=2)
    >>> progress.chunk(1000)  # doctest: +ELLIPSIS
    [ARN] chunk 0: 1000 rows in ... s; 1000 rows accumulated
    """

    def __init__(self, what, verbose, interval=PROGRESS_INTERVAL, clock=time.perf_counter):
        self.what, self.verbose, self.interval, self.clock = what, verbose, interval, clock
        self.start = self.last_chunk = self.last_line = clock()
        self.rows = self.chunks = 0
        self.printed = False

    def chunk(self, n_rows, detail=""):
        """Count a chunk of ``n_rows`` rows just done."""
        now = self.clock()
        self.rows += n_rows
        if self.verbose >= 2:
            print(
                f"[ARN] chunk {self.chunks}: {n_rows} rows in {now - self.last_chunk:.2f} s; "
                f"{self.rows} rows {self.what}{detail}",
                flush=True,
            )
        elif self.verbose == 1 and now - self.last_line >= self.interval:
            self._line(now, detail)
        self.chunks += 1
        self.last_chunk = now

    def done(self, detail=""):
        """Close the pass: a final line at verbose=1 if progress was shown."""
        if self.verbose == 1 and self.printed:
            self._line(self.clock(), detail)

    def _line(self, now, detail):
        elapsed = now - self.start
        rate = self.rows / elapsed if elapsed > 0 else float("inf")
        print(
            f"[ARN] {self.rows} rows {self.what} ({rate:,.0f} rows/s, {elapsed:.1f} s){detail}",
            flush=True,
        )
        self.last_line = now
        self.printed = True
