import numpy as np
import pytest

from arn_sklearn._solve import blocked_cholesky_solve


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
    from arn_sklearn._lifting import _tiled_gram_update, symmetrize_upper

    rng = np.random.RandomState(0)
    Z = rng.normal(size=(40, 23))
    gram = np.asfortranarray(rng.normal(size=(23, 23)))
    start = np.triu(gram + gram.T)
    got = _tiled_gram_update(np.asfortranarray(start), Z, tile=5)
    expected = start + Z.T @ Z
    np.testing.assert_allclose(np.triu(got), np.triu(expected), atol=1e-12)
    full = np.triu(expected) + np.triu(expected, 1).T
    np.testing.assert_allclose(symmetrize_upper(got, np), full, atol=1e-12)
