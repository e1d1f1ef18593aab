"""Levenberg-Marquardt on the variable-projection residual against independent references."""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from array_api_compat import array_namespace

from arn_sklearn._kernels._assignment import SIMILARITIES, similarity, softmax
from arn_sklearn._kernels._lifting import lift
from arn_sklearn._kernels._parametrisation import _Parametrisation
from arn_sklearn._learning import _gauss_newton, _varpro
from arn_sklearn._learning._gauss_newton import (
    _Point,
    chunk_rows,
    fit_gauss_newton,
    jacobian_pass,
    output_jacobian,
    schur_hessian,
)
from arn_sklearn._learning._varpro import fit_varpro, reduced_objective

xp = array_namespace(np.empty(0))


@pytest.fixture(params=["pairs", "lifted"])
def form(request, monkeypatch):
    """Both ways of summing the passes (anchor pairs x quadratic features, or the
    lifted block), forced whatever the sizes would choose: the references below
    must hold for each."""
    pairs = request.param == "pairs"
    for module in (_gauss_newton, _varpro):
        monkeypatch.setattr(module, "pair_form_pays", lambda *args: pairs)
    return request.param


def problem(seed=0, n=40, d=3, t=2):
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, t)), rng.uniform(0.5, 2.0, size=n)


def model_output(X, anchors, log_softness, W, kind):
    """The ARN output for lifted weights W, written out independently of the kernels."""
    n, d = X.shape
    A = softmax(math.exp(log_softness) * similarity(X, anchors, kind, xp), xp)
    X1 = np.hstack([X, np.ones((n, 1))])
    per_anchor = np.einsum("ij,kjt->ikt", X1, W.reshape(anchors.shape[0], d + 1, -1))
    return np.einsum("ik,ikt->it", A, per_anchor)


def central_jacobian(f, theta, eps=1e-6):
    columns = []
    for j in range(theta.size):
        step = np.zeros(theta.size)
        step[j] = eps
        columns.append((f(theta + step) - f(theta - step)) / (2 * eps))
    return np.stack(columns, axis=-1)


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("scaled, n_targets", [(False, 1), (True, 2), (False, 3)])
def test_output_jacobian_matches_central_differences(kind, scaled, n_targets):
    X, _, _ = problem(t=n_targets)
    anchors = np.random.RandomState(1).normal(size=(4, 3))
    W = np.random.RandomState(2).normal(size=(4 * 4, n_targets))
    params = _Parametrisation(anchors.shape, 0.8, kind, learn_softness=True, scaled=scaled)
    theta = params.pack(anchors, 0.8)
    C, log_k = params.unpack(theta)
    S = similarity(X, C, kind, xp)
    A = softmax(math.exp(log_k) * S, xp)
    X1 = np.hstack([X, np.ones((X.shape[0], 1))])
    P = np.einsum("ij,kjt->ikt", X1, W.reshape(4, 4, n_targets))
    out, B = output_jacobian(X, C, math.exp(log_k), S, A, P, params, kind, xp)
    np.testing.assert_allclose(out, model_output(X, C, log_k, W, kind), rtol=1e-12)
    expected = central_jacobian(lambda t: model_output(X, *params.unpack(t), W, kind), theta)
    assert np.linalg.norm(B - expected) <= 1e-7 * np.linalg.norm(expected)
    # Written into a reused, larger buffer full of garbage (the Jacobian pass's path).
    buffer = np.full((X.shape[0] + 5, n_targets, theta.size), np.nan)
    out2, B2 = output_jacobian(X, C, math.exp(log_k), S, A, P, params, kind, xp, out=buffer)
    np.testing.assert_allclose(out2, out, rtol=1e-12)
    assert np.linalg.norm(B2 - expected) <= 1e-7 * np.linalg.norm(expected)


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("scaled, learn_softness", [(False, True), (True, True), (False, False)])
def test_jacobian_pass_gradient_is_the_reduced_gradient(kind, scaled, learn_softness, form):
    # 2 B^T r / sum(w) at the ridge solution against central differences of the
    # reduced objective (which re-solves the regressors), in small chunks.
    X, Y, w = problem()
    anchors = np.random.RandomState(1).normal(size=(4, 3))
    params = _Parametrisation(anchors.shape, 0.8, kind, learn_softness, scaled)
    theta = params.pack(anchors, 0.8)
    point = _Point(theta, params, X, Y, w, kind, 0.3, xp, rows=7)
    squared, Btr, _, _ = jacobian_pass(
        X,
        Y,
        w,
        point.anchors,
        point.softness,
        kind,
        point.W,
        point.y_mean,
        point.kept,
        7,
        params,
        xp,
    )

    def loss(t):
        return reduced_objective(*params.unpack(t), X, Y, w, kind, 0.3, xp, gradient=False)[0]

    expected = central_jacobian(loss, theta)
    assert np.linalg.norm(2 * Btr / w.sum() - expected) <= 1e-6 * np.linalg.norm(expected)
    # The objective from the statistics equals the one from the residuals.
    assert point.loss == pytest.approx((squared + 0.3 * np.sum(point.W**2)) / w.sum(), rel=1e-10)
    assert point.loss == pytest.approx(loss(theta), rel=1e-10)


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize(
    "scaled, learn_softness, n_targets", [(False, True, 2), (True, True, 1), (False, False, 3)]
)
def test_schur_hessian_is_the_joint_gauss_newton_matrix_with_w_eliminated(
    kind, scaled, learn_softness, n_targets, form
):
    # Dense reference: the Jacobian of the joint residual [sqrt(w) (Phi W - y); sqrt(alpha) W]
    # in (theta, W), by central differences in theta; its normal matrix's Schur
    # complement on the theta block.
    X, Y, w = problem(t=n_targets)
    alpha = 0.3
    anchors = np.random.RandomState(1).normal(size=(4, 3))
    params = _Parametrisation(anchors.shape, 0.8, kind, learn_softness, scaled)
    theta = params.pack(anchors, 0.8)
    point = _Point(theta, params, X, Y, w, kind, alpha, xp, rows=11)
    _, _, BtB, M = jacobian_pass(
        X,
        Y,
        w,
        point.anchors,
        point.softness,
        kind,
        point.W,
        point.y_mean,
        point.kept,
        11,
        params,
        xp,
    )
    H = schur_hessian(BtB, M, point.stats.factorize(alpha, xp), xp)

    sw = np.sqrt(w)[:, None, None]
    B = sw * central_jacobian(lambda t: model_output(X, *params.unpack(t), point.W, kind), theta)
    n, t, p = B.shape
    C, log_k = params.unpack(theta)
    Phi = np.sqrt(w)[:, None] * lift(
        X, softmax(math.exp(log_k) * similarity(X, C, kind, xp), xp), xp
    )
    q = Phi.shape[1]
    # Rows (i, target), columns [theta, W[:, 0], ..., W[:, t-1]].
    J = np.zeros((n * t + q * t, p + q * t))
    for target in range(t):
        J[target::t, :p][:n] = B[:, target, :]
        J[target : n * t : t, p + target * q : p + (target + 1) * q] = Phi
        J[n * t + target * q : n * t + (target + 1) * q, p + target * q : p + (target + 1) * q] = (
            math.sqrt(alpha) * np.eye(q)
        )
    N = J.T @ J
    expected = N[:p, :p] - N[:p, p:] @ np.linalg.solve(N[p:, p:], N[p:, :p])
    np.testing.assert_allclose(H, expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())


class _ThreadPool:
    """A pool of real threads with a chosen count (the machine's BLAS may have one)."""

    def __init__(self, n_threads):
        self.n_threads = n_threads

    def run(self, tasks):
        with ThreadPoolExecutor(self.n_threads) as executor:
            for future in [executor.submit(task) for task in tasks]:
                future.result()


@pytest.mark.parametrize("n_threads", [2, 3])
@pytest.mark.parametrize("matrices", [True, False])
def test_jacobian_pass_over_threads_sums_the_same_terms(n_threads, matrices, form):
    # The chunks spread over threads (each summing its own terms) give the
    # sequential pass's terms, which the tests above check against references.
    X, Y, w = problem(n=60)
    anchors = np.random.RandomState(1).normal(size=(4, 3))
    params = _Parametrisation(anchors.shape, 0.8, "euclidean", learn_softness=True)
    point = _Point(params.pack(anchors, 0.8), params, X, Y, w, "euclidean", 0.3, xp, rows=7)
    args = (X, Y, w, point.anchors, point.softness, "euclidean", point.W, point.y_mean)
    sequential = jacobian_pass(*args, point.kept, 7, params, xp, matrices=matrices)
    threaded = jacobian_pass(
        *args, point.kept, 7, params, xp, matrices=matrices, pool=_ThreadPool(n_threads)
    )
    for a, b in zip(sequential, threaded, strict=True):
        if a is None:
            assert b is None
        else:
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n_threads", [2, 3])
def test_closed_form_pass_over_threads_gives_the_sequential_statistics(n_threads, form):
    # Each thread accumulates its own statistics; their sum, the solution and
    # the kept (S, A) per chunk (in row order) are the sequential pass's.
    X, Y, w = problem(n=60)
    anchors = np.random.RandomState(1).normal(size=(4, 3))
    params = _Parametrisation(anchors.shape, 0.8, "euclidean", learn_softness=True)
    theta = params.pack(anchors, 0.8)
    sequential = _Point(theta, params, X, Y, w, "euclidean", 0.3, xp, rows=7)
    threaded = _Point(theta, params, X, Y, w, "euclidean", 0.3, xp, 7, _ThreadPool(n_threads))
    np.testing.assert_allclose(threaded.stats.gram, sequential.stats.gram, rtol=1e-12)
    np.testing.assert_allclose(threaded.W, sequential.W, rtol=1e-10, atol=1e-12)
    assert threaded.loss == pytest.approx(sequential.loss, rel=1e-10)
    assert len(threaded.kept) == len(sequential.kept) == 9
    for (S1, A1), (S2, A2) in zip(threaded.kept, sequential.kept, strict=True):
        np.testing.assert_array_equal(S1, S2)
        np.testing.assert_array_equal(A1, A2)


def teacher_problem(n=1000, seed=0):
    """Targets that an ARN of 3 anchors reproduces exactly (a zero-residual problem)."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 2))
    anchors = np.array([[1.0, 0.0], [-1.0, 0.5], [0.0, -1.2]])
    W = rng.normal(size=(9, 1))
    start = anchors + 0.15 * rng.normal(size=anchors.shape)
    return X, model_output(X, anchors, math.log(2.0), W, "euclidean"), start


def test_gauss_newton_converges_in_a_few_steps_on_a_zero_residual_problem():
    # Where the residual vanishes Gauss-Newton converges fast; L-BFGS, from the
    # same start on the same objective, needs several times more passes.
    X, Y, start = teacher_problem()
    w = np.ones(X.shape[0])
    settings = dict(max_iter=200, tol=1e-10, n_iter_no_change=5)
    _, _, lbfgs = fit_varpro(X, Y, w, start, 1.5, "euclidean", 1e-10, xp, **settings)
    _, _, newton = fit_gauss_newton(X, Y, w, start, 1.5, "euclidean", 1e-10, xp, **settings)
    assert newton.converged
    assert newton.best_loss <= 1e-10 * Y.var()
    assert newton.n_iter <= 10 and newton.n_iter < lbfgs.n_iter / 2
    curve = np.array(newton.loss_curve)
    assert np.all(np.diff(curve) <= 0)  # only decreasing steps are accepted


def test_chunk_rows_bounds_the_jacobian_block():
    rows = chunk_rows(64, 30, 8, 64 * 30 + 1)
    assert 256 <= rows and rows * 8 * (64 * 30 + 1) * 8 <= 64 * 2**20


def test_with_a_validation_score_the_last_step_is_not_linearised(monkeypatch):
    # The score decides stopping: the step that ends the run needs no Jacobian
    # pass, and every recorded objective is still the exact one (from residuals).

    X, Y, start = teacher_problem(n=300)
    w = np.ones(X.shape[0])
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return jacobian_pass(*args, **kwargs)

    monkeypatch.setattr(_gauss_newton, "jacobian_pass", counted)
    kept = []

    def score(anchors, softness, W, y_mean):
        kept.append((np.array(anchors), softness))
        return 0.0  # never improves: the run stops after n_iter_no_change steps

    _, _, history = fit_gauss_newton(
        X, Y, w, start, 1.5, "euclidean", 1e-6, xp, n_iter_no_change=3, validation_score=score
    )
    accepted = len(kept) - 1  # (the start's score is the first)
    assert history.n_iter == 3 and accepted >= 1
    assert len(calls) == 1 + accepted - 1  # the start, and each accepted point but the last
    # Each accepted point's objective is on the curve: from the residuals where it was
    # linearised, from the statistics (a few digits cancel) for the last one.
    for index, (anchors, softness) in enumerate(kept[1:], start=1):
        exact = reduced_objective(
            anchors, math.log(softness), X, Y, w, "euclidean", 1e-6, xp, gradient=False
        )[0]
        error = min(abs(np.array(history.loss_curve) / exact - 1.0))
        assert error < (1e-6 if index == accepted else 1e-10)


def test_a_callable_alpha_is_chosen_from_the_start_and_kept():
    # alpha="auto": the minimisers call alpha(anchors, softness, stats) once, with
    # the start's statistics, and then minimise the objective of that penalty.
    X, Y, start = teacher_problem(n=300)
    w = np.ones(X.shape[0])
    seen = []

    def choose(anchors, softness, stats):
        seen.append((np.array(anchors), softness, stats.weight_sum))
        return 1e-3

    for minimise in (fit_gauss_newton, fit_varpro):
        seen.clear()
        fixed = minimise(X, Y, w, start, 1.5, "euclidean", 1e-3, xp, max_iter=3)
        chosen = minimise(X, Y, w, start, 1.5, "euclidean", choose, xp, max_iter=3)
        assert len(seen) == 1 and seen[0][1] == 1.5 and seen[0][2] == pytest.approx(300)
        np.testing.assert_array_equal(seen[0][0], start)
        assert chosen[2].alpha == 1e-3
        np.testing.assert_allclose(chosen[0], fixed[0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(chosen[2].loss_curve, fixed[2].loss_curve, rtol=1e-9)


@pytest.mark.parametrize("kind", SIMILARITIES)
def test_pair_form_through_the_array_api_gives_numpys_sums(kind, monkeypatch):
    # The namespace-generic code (the path CuPy takes) against numpy's fast path.
    strict = pytest.importorskip("array_api_strict")
    for module in (_gauss_newton, _varpro):
        monkeypatch.setattr(module, "pair_form_pays", lambda *args: True)
    X, Y, w = problem(n=56, t=2)  # 8 chunks of 7 rows: no slice past the end
    anchors = np.random.RandomState(1).normal(size=(4, 3))
    params = _Parametrisation(anchors.shape, 0.8, kind, learn_softness=True, scaled=True)
    theta = params.pack(anchors, 0.8)
    results = []
    for space, arrays in ((xp, (X, Y, w)), (strict, [strict.asarray(a) for a in (X, Y, w)])):
        point = _Point(theta, params, *arrays, kind, 0.3, space, rows=7)
        args = (*arrays, point.anchors, point.softness, kind, point.W, point.y_mean, point.kept)
        results.append((point.loss, *jacobian_pass(*args, 7, params, space)))
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-11, atol=1e-12)
