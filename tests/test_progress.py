"""verbose progress of the accumulation passes."""

import re

import numpy as np
from array_api_compat import array_namespace

from arn_sklearn._kernels._lifting import iter_chunks
from arn_sklearn._kernels._topk import top_k_assignments
from arn_sklearn._model._blocksparse import BlockSparseStatistics
from arn_sklearn._utils._progress import Progress

xp = array_namespace(np.empty(0))


class FakeClock:
    def __init__(self, step):
        self.now, self.step = 0.0, step

    def __call__(self):
        self.now += self.step
        return self.now


def test_verbose_1_prints_lines_every_interval_not_every_chunk(capsys):
    progress = Progress("accumulated", 1, interval=5.0, clock=FakeClock(1.0))
    for _ in range(12):
        progress.chunk(100)
    progress.done()
    lines = capsys.readouterr().out.splitlines()
    # 12 chunks of 1 s each: a line at 5 s and 10 s, and the closing one.
    assert len(lines) == 3
    rows = [int(re.match(r"\[ARN\] (\d+) rows accumulated \(([\d,]+) rows/s", s)[1]) for s in lines]
    assert rows == [500, 1000, 1200]


def test_verbose_1_is_silent_for_a_short_pass(capsys):
    progress = Progress("accumulated", 1, interval=5.0, clock=FakeClock(0.1))
    for _ in range(3):
        progress.chunk(100)
    progress.done()
    assert capsys.readouterr().out == ""


def test_block_sparse_accumulation_prints_per_chunk_timing_at_verbose_2(capsys):
    rng = np.random.RandomState(0)
    X, Y = rng.normal(size=(300, 2)), rng.normal(size=(300, 1))
    anchors = X[:5]
    BlockSparseStatistics.zeros(5, 2, 1, xp).accumulate(
        iter_chunks(X, Y, np.ones(300), 100),
        lambda c: top_k_assignments(c, anchors, "euclidean", 1.0, 2, xp),
        xp,
        verbose=2,
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert re.match(
        r"\[ARN\] chunk 2: 100 rows in [\d.]+ s; 300 rows accumulated, \d+ anchor", lines[2]
    )
