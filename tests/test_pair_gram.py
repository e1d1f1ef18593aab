"""Pair blocks by top-k set groups against the naive lifted sums."""

import numpy as np
import pytest

from arn_sklearn._kernels._pair_gram import large_set_blocks


@pytest.mark.parametrize("min_rows", [1, 5, 10**6])
def test_large_set_blocks_equal_naive_sums_over_handled_rows(min_rows):
    rng = np.random.RandomState(0)
    b, m, k, d1, t1 = 500, 7, 3, 4, 3
    # Few anchors: every 3-set recurs, some sets often.
    idx = np.stack([rng.choice(m, k, replace=False) for _ in range(b)])
    idx[:200] = [4, 1, 6]  # one large group, slots in any order
    vals = rng.dirichlet(np.ones(k), size=b)
    w = rng.uniform(0, 2, b)
    X1 = np.hstack([rng.normal(size=(b, d1 - 1)), np.ones((b, 1))])
    Y1 = np.hstack([rng.normal(size=(b, t1 - 1)), np.ones((b, 1))])
    zty1 = np.zeros((m, d1, t1))
    keys, blocks, handled = large_set_blocks(X1, Y1, idx, vals, w, m, zty1, min_rows=min_rows)
    if min_rows > b:
        assert keys.size == 0 and not handled.any() and not zty1.any()
        return
    assert handled[:200].all() and np.all(np.diff(keys) > 0)
    A = np.zeros((b, m))
    np.put_along_axis(A, idx, vals, axis=1)
    A[~handled] = 0.0
    Z = (A[:, :, None] * X1[:, None, :]).reshape(b, m * d1)
    G = (Z.T @ (w[:, None] * Z)).reshape(m, d1, m, d1)
    for key, block in zip(keys, blocks, strict=True):
        a, c = divmod(int(key), m)
        assert a <= c
        np.testing.assert_allclose(block, G[a, :, c, :], atol=1e-12)
    # Every non-zero upper block is among the keys.
    nonzero = {(a, c) for a in range(m) for c in range(a, m) if np.abs(G[a, :, c, :]).max() > 0}
    assert nonzero == {divmod(int(key), m) for key in keys}
    np.testing.assert_allclose(zty1.reshape(m * d1, t1), Z.T @ (w[:, None] * Y1), atol=1e-12)
