"""Second moments through anchor pairs against the lifted block, written out naively."""

import numpy as np
import pytest
from array_api_compat import array_namespace

from arn_sklearn._kernels._moments import (
    MAX_PAIR_WIDTH,
    cross_from_pairs,
    gram_from_pairs,
    inputs_transposed,
    lifted_moment_sums,
    lifted_moments,
    n_symmetric_pairs,
    pair_form_pays,
    quadratic_features,
    symmetric_pair_products,
)

xp = array_namespace(np.empty(0))


def lifted(X, A):
    """``kron(a_i, [x_i, 1])`` row by row, with plain loops over anchors."""
    X1 = np.hstack([X, np.ones((X.shape[0], 1))])
    return np.hstack([A[:, [k]] * X1 for k in range(A.shape[1])])


def softmax_rows(rng, n, m):
    E = np.exp(rng.normal(size=(n, m)))
    return E / E.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("n_anchors, n_features, n_targets", [(1, 1, 1), (4, 3, 2), (7, 5, 3)])
def test_lifted_moments_are_the_lifted_blocks_weighted_sums(n_anchors, n_features, n_targets):
    rng = np.random.RandomState(0)
    n = 37
    X, Y = rng.normal(size=(n, n_features)), rng.normal(size=(n, n_targets))
    w, A = rng.uniform(0.1, 3.0, size=n), softmax_rows(rng, n, n_anchors)
    # Two chunks added term by term, as the passes do.
    halves = [lifted_moment_sums(X[r], Y[r], w[r], A[r], xp) for r in (slice(0, 20), slice(20, n))]
    sums = [a + b for a, b in zip(*halves, strict=True)]
    gram, zty, z_sum = lifted_moments(sums, n_anchors, xp)
    Z = lifted(X, A)
    np.testing.assert_allclose(gram, Z.T @ (w[:, None] * Z), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(gram, gram.T)
    np.testing.assert_allclose(zty, Z.T @ (w[:, None] * Y), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(z_sum, Z.T @ w, rtol=1e-12)
    np.testing.assert_allclose(sums[2], w @ Y, rtol=1e-12)
    np.testing.assert_allclose(sums[3], w @ Y**2, rtol=1e-12)
    assert sums[4] == pytest.approx(w.sum(), rel=1e-14)


def test_pair_products_and_quadratic_features_list_each_pair_once():
    rng = np.random.RandomState(1)
    U = rng.normal(size=(5, 9))  # (m, rows)
    products = symmetric_pair_products(U, xp)
    expected = [U[k] * U[j] for k in range(5) for j in range(k, 5)]
    np.testing.assert_array_equal(products, np.array(expected))
    # With a leading axis, the products are summed over it.
    V = rng.normal(size=(3, 5, 9))
    summed = [sum(V[t, k] * V[t, j] for t in range(3)) for k in range(5) for j in range(k, 5)]
    np.testing.assert_allclose(symmetric_pair_products(V, xp), np.array(summed), rtol=1e-14)
    X = rng.normal(size=(9, 2))
    X1T = inputs_transposed(X, xp)
    np.testing.assert_array_equal(X1T, np.vstack([X.T, np.ones(9)]))
    assert quadratic_features(X1T, xp).shape == (n_symmetric_pairs(3), 9)


def test_cross_from_pairs_gathers_each_anchor_pair_and_target():
    # M[(k, p), t, (l, q)] = sum_i u_ik x1_ip v_tli x_iq, against a plain einsum.
    rng = np.random.RandomState(2)
    m, d, t, n = 3, 2, 2, 11
    X = rng.normal(size=(n, d))
    X1T = inputs_transposed(X, xp)
    U, V = rng.normal(size=(m, n)), rng.normal(size=(t, m, n))
    products = (U[:, None, None, :] * V.transpose(1, 0, 2)[None]).reshape(-1, n)
    T = products @ quadratic_features(X1T, xp).T
    M = cross_from_pairs(T, m, d + 1, t, d, xp)
    expected = np.einsum("ki,pi,tli,iq->kptlq", U, X1T, V, X).reshape(m * (d + 1), t, m * d)
    np.testing.assert_allclose(M, expected, rtol=1e-12, atol=1e-13)
    # A Gram block restricted to the first inputs: the x part only.
    T = symmetric_pair_products(U, xp) @ quadratic_features(X1T, xp).T
    G, Gx = gram_from_pairs(T, m, d + 1, xp), gram_from_pairs(T, m, d + 1, xp, inputs=d)
    keep = [k * (d + 1) + q for k in range(m) for q in range(d)]
    np.testing.assert_array_equal(Gx, G[np.ix_(keep, keep)])


def test_pair_form_is_chosen_where_it_was_measured_faster():
    def closed_form(m, d):
        pairs, lifted_size = n_symmetric_pairs(m), m * (d + 1)
        return pair_form_pays(pairs, d, pairs, lifted_size**2, lifted_size)

    assert closed_form(16, 16) and closed_form(16, 10)  # report.py data, Friedman #1
    assert not closed_form(2, 1)  # tiny blocks: the products cost more than they save
    # Past the width cap, the lifted block whatever the flops say.
    assert not pair_form_pays(MAX_PAIR_WIDTH, 3, 0, 1e12, 0)
