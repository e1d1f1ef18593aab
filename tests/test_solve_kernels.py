import numpy as np
import pytest

from arn_sklearn._kernels._solve import blocked_cholesky_solve


@pytest.mark.parametrize("p, block", [(50, 7), (64, 16), (30, 64)])
def test_blocked_cholesky_solve_matches_numpy(p, block):
    rng = np.random.RandomState(p)
    B = rng.normal(size=(3 * p, p))
    system = np.asfortranarray(B.T @ B + 0.1 * np.eye(p))
    rhs = rng.normal(size=(p, 3))
    expected = np.linalg.solve(system, rhs)
    got = blocked_cholesky_solve(system.copy(order="F"), rhs, block=block)
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10)


def test_blocked_cholesky_rejects_indefinite_system():
    system = np.asfortranarray(np.diag([1.0, 2.0, -1.0, 3.0]))
    with pytest.raises(np.linalg.LinAlgError):
        blocked_cholesky_solve(system, np.ones((4, 1)), block=2)


def test_tiled_gram_update_matches_syrk_upper_triangle():
    from arn_sklearn._model._statistics import _tiled_gram_update, symmetrize_upper

    rng = np.random.RandomState(0)
    Z = rng.normal(size=(40, 23))
    gram = np.asfortranarray(rng.normal(size=(23, 23)))
    start = np.triu(gram + gram.T)
    got = _tiled_gram_update(np.asfortranarray(start), Z, tile=5)
    expected = start + Z.T @ Z
    np.testing.assert_allclose(np.triu(got), np.triu(expected), atol=1e-12)
    full = np.triu(expected) + np.triu(expected, 1).T
    np.testing.assert_allclose(symmetrize_upper(got, np), full, atol=1e-12)


def _stats(p=60, t=3, seed=0):
    from arn_sklearn._model._statistics import SufficientStatistics

    rng = np.random.RandomState(seed)
    Z = rng.normal(size=(4 * p, p))
    Y = rng.normal(size=(4 * p, t))
    return SufficientStatistics(
        gram=Z.T @ Z,
        zty=Z.T @ Y,
        z_sum=Z.sum(axis=0),
        y_sum=Y.sum(axis=0),
        y_sq_sum=(Y**2).sum(axis=0),
        weight_sum=float(4 * p),
        n_samples=4 * p,
    )


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("order", ["C", "F"])
def test_lapack64_solve_matches_numpy_and_respects_overwrite(overwrite, order):
    from arn_sklearn._kernels._solve import _solve_large_numpy, centered_rhs

    stats = _stats()
    gram = np.array(stats.gram, order=order)
    original = gram.copy()
    rhs, _ = centered_rhs(stats, np)
    expected = np.linalg.solve(original + 0.3 * np.eye(60), rhs)
    got = _solve_large_numpy(gram, rhs, 0.3, overwrite)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    if not overwrite:
        np.testing.assert_array_equal(gram, original)


def test_solve_ridge_overwrite_gives_the_same_solution():
    from arn_sklearn._kernels._solve import solve_ridge

    stats = _stats()
    W, y_mean = solve_ridge(stats, 0.3, np)
    W2, y_mean2 = solve_ridge(_stats(), 0.3, np, overwrite=True)
    np.testing.assert_allclose(W2, W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y_mean2, y_mean)


def test_lapack64_singular_system_warns_and_is_finite():
    from scipy.linalg import LinAlgWarning

    from arn_sklearn._kernels._solve import _solve_large_numpy

    rng = np.random.RandomState(0)
    Z = rng.normal(size=(50, 10))
    Z[:, 3] = Z[:, 2]  # collinear: singular at alpha=0
    rhs = Z.T @ rng.normal(size=(50, 2))
    gram = Z.T @ Z
    with pytest.warns(LinAlgWarning):
        W = _solve_large_numpy(gram, rhs, 0.0, True)
    assert np.all(np.isfinite(W))
    np.testing.assert_allclose(Z.T @ Z @ W, rhs, atol=1e-5 * np.abs(rhs).max())


def test_factorize_dense_lapack64_path_matches_numpy(monkeypatch):
    import arn_sklearn._kernels._solve as solve

    monkeypatch.setattr(solve, "_THREADED_POTRF_MAX", 10)
    rng = np.random.RandomState(0)
    Z = rng.normal(size=(80, 30))
    G = Z.T @ Z
    factor = solve.factorize_dense(G, 0.5, np)
    assert factor.lapack64
    B = rng.normal(size=(30, 4))
    expected = np.linalg.solve(G + 0.5 * np.eye(30), B)
    np.testing.assert_allclose(factor.solve(B), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(factor.solve(B[:, 0]), expected[:, 0], rtol=1e-10, atol=1e-12)
