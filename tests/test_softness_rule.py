"""``auto_softness(top_k=...)`` against the plain bisection it speeds up.

The rule evaluates, per bisection step, only the rows whose bounds can reach
the median; the result must be the very number the plain bisection (the
median over every row at every step) gives.
"""

import numpy as np
import pytest
from array_api_compat import array_namespace

from arn_sklearn._anchors._init import (
    AUTO_SOFTNESS_LOG_RATIO,
    AUTO_SOFTNESS_TOP_K_OUTSIDE_MASS,
    auto_softness,
)
from arn_sklearn._kernels._assignment import similarity


def plain_rule(X, anchors, kind, top_k):
    S = np.sort(similarity(X, anchors, kind, np), axis=1)
    softness = AUTO_SOFTNESS_LOG_RATIO / np.median(S[:, -1] - S[:, -2])
    D = S[:, -1:] - S[:, ::-1]

    def outside(K):
        E = np.exp(-K * D)
        return np.median(E[:, top_k:].sum(axis=1) / E.sum(axis=1))

    if outside(softness) <= AUTO_SOFTNESS_TOP_K_OUTSIDE_MASS:
        return softness
    lo = hi = softness
    while outside(hi) > AUTO_SOFTNESS_TOP_K_OUTSIDE_MASS and hi < softness * 2.0**40:
        lo, hi = hi, hi * 4.0
    for _ in range(30):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if outside(mid) > AUTO_SOFTNESS_TOP_K_OUTSIDE_MASS else (lo, mid)
    return hi


@pytest.mark.parametrize("kind", ["euclidean", "dot", "absdot", "cosine"])
@pytest.mark.parametrize("n", [1, 2, 501, 2000])
@pytest.mark.parametrize("top_k", [1, 3])
def test_auto_softness_equals_plain_bisection(kind, n, top_k):
    rng = np.random.RandomState(n + top_k)
    X = rng.normal(size=(n, 6)) * rng.uniform(0.2, 3.0, size=6)
    anchors = np.vstack([rng.normal(size=(40, 6)), rng.normal(size=(1, 6)).repeat(3, axis=0)])
    K = auto_softness(X, anchors, kind, array_namespace(X), np.random.RandomState(0), top_k=top_k)
    assert K == plain_rule(X, anchors, kind, top_k)
    assert K >= auto_softness(X, anchors, kind, array_namespace(X), np.random.RandomState(0))
