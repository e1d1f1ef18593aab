"""The float32-screened top-k selection against float64 references.

``top_k_assignments`` picks candidates with a float32 GEMM and re-scores them
in float64 (``_topk._Screen``). Its anchors must be those of the float64
similarity except at genuine ties, defined numerically: two similarities of a
row closer than ``TIE_ULPS`` float64 roundings of the row's scale (the size of
the terms of its dot products, ``(||x|| + max ||c||)^2`` for the squared
distance, ``||x|| max ||c||`` for the dot products, 1 for the cosine).
"""

import numpy as np
import pytest

from arn_sklearn._kernels import _topk
from arn_sklearn._kernels._assignment import SIMILARITIES
from arn_sklearn._kernels._topk import top_k_assignments

TIE_ULPS = 64
EPS = np.finfo(np.float64).eps


def reference_similarity(X, C, kind):
    """Float64 similarity from the plain formulas (no GEMM expansion for euclidean)."""
    if kind == "euclidean":
        return -np.array([np.sum((C - x) ** 2, axis=1) for x in X])
    dot = X @ C.T
    if kind == "dot":
        return dot
    if kind == "absdot":
        return np.abs(dot)
    xn = np.maximum(np.linalg.norm(X, axis=1), 1e-12)
    cn = np.maximum(np.linalg.norm(C, axis=1), 1e-12)
    return dot / xn[:, None] / cn[None, :]


def row_scale(X, C, kind):
    x, c = np.linalg.norm(X, axis=1), np.linalg.norm(C, axis=1).max()
    if kind == "euclidean":
        return (x + c) ** 2
    return x * c if kind in ("dot", "absdot") else np.ones(X.shape[0])


def check_against_reference(X, C, kind, k, softness=0.7):
    idx, vals = top_k_assignments(X, C, kind, softness, k, np)
    S = reference_similarity(X, C, kind)
    ref = np.argsort(-S, axis=1, kind="stable")[:, :k]
    tol = TIE_ULPS * EPS * row_scale(X, C, kind)
    ours_s = np.take_along_axis(S, idx, axis=1)
    ref_s = np.take_along_axis(S, ref, axis=1)
    differ = np.any(idx != ref, axis=1)
    # Where the anchors differ, rank by rank they are tied with the reference's.
    assert np.all(np.abs(ours_s - ref_s)[differ] <= tol[differ, None])
    # Distinct anchors per row, in decreasing similarity.
    assert np.all(np.diff(np.sort(idx, axis=1), axis=1) > 0)
    assert np.all(np.diff(ours_s, axis=1) <= tol[:, None])
    # The assignments: the renormalised softmax of the reference similarities,
    # to within what the similarities' own rounding (softness x tol) allows.
    D = softness * (ours_s - ours_s[:, :1])
    expected = np.exp(D) / np.exp(D).sum(axis=1, keepdims=True)
    rtol = 1e-12 + 4 * softness * tol
    assert np.all(np.abs(vals - expected) <= rtol[:, None] * expected + 1e-300)
    return idx, differ


def spy_on_float64_rows(monkeypatch):
    """A list that receives the number of rows of each float64 block computed."""
    recomputed = []
    finish = _topk._finish_block

    def spy(A, prep, out):
        recomputed.append(A.shape[0])
        return finish(A, prep, out)

    monkeypatch.setattr(_topk, "_finish_block", spy)
    return recomputed


def float64_only(monkeypatch):
    monkeypatch.setattr(_topk._Screen, "usable", lambda self, A: False)


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("k", [1, 4, 8])
@pytest.mark.parametrize("scale", [1.0, 1e-6, 1e6])
def test_random_inputs_match_float64_reference(kind, k, scale):
    rng = np.random.RandomState(k)
    X = scale * rng.normal(size=(3000, 30)) + scale
    C = scale * rng.normal(size=(200, 30)) + scale
    _, differ = check_against_reference(X, C, kind, k)
    assert differ.mean() < 1e-3  # the data has no genuine ties to speak of


@pytest.mark.parametrize("kind", SIMILARITIES)
def test_screened_equals_float64_path(kind, monkeypatch):
    # Blocks of 64 rows: many blocks, on every thread.
    monkeypatch.setattr(_topk, "_SCREEN_BLOCK_BYTES", 4 * 300 * 64)
    rng = np.random.RandomState(0)
    X, C = rng.normal(size=(5000, 12)), rng.normal(size=(300, 12))
    recomputed = spy_on_float64_rows(monkeypatch)
    idx, vals = top_k_assignments(X, C, kind, 1.3, 4, np)
    assert sum(recomputed) < 0.02 * X.shape[0]  # the screen did the work
    float64_only(monkeypatch)
    idx64, vals64 = top_k_assignments(X, C, kind, 1.3, 4, np)
    np.testing.assert_array_equal(idx, idx64)
    np.testing.assert_allclose(vals, vals64, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", SIMILARITIES)
def test_exact_ties_go_to_the_lower_index(kind):
    # Duplicated anchors and rows half-way between two anchors: exact ties in
    # float64 and float32 alike, at and across the k-th place.
    rng = np.random.RandomState(1)
    base = rng.normal(size=(40, 6))
    C = np.vstack([base, base[::-1]])  # every anchor twice
    X = np.vstack([base[:20] + 1e-3 * rng.normal(size=(20, 6)), 0.5 * (base[:20] + base[20:])])
    for k in (1, 2, 3):
        idx, _ = check_against_reference(X, C, kind, k)
        # A duplicated anchor has bit-for-bit the same similarity as its
        # twin: the lower index comes first (the midpoints' ties, exact in
        # the plain formula but not in the GEMM's, may go either way).
        same = np.all(C[idx[:, 1:]] == C[idx[:, :-1]], axis=2)
        assert k == 1 or same.sum() >= 20
        assert np.all(idx[:, 1:][same] > idx[:, :-1][same])


def test_near_ties_below_float32_resolution_fall_back_to_float64(monkeypatch):
    # Groups of 4 anchors 1e-9 apart: float32 cannot order them, float64 can,
    # and the screen's k + 1 candidates leave some of each group out. The
    # rows must be recomputed, not settled among the candidates.
    rng = np.random.RandomState(2)
    base = rng.normal(size=(50, 8))
    C = np.vstack([base + 1e-9 * rng.normal(size=base.shape) for _ in range(4)])
    X = base + 0.05 * rng.normal(size=base.shape)
    recomputed = spy_on_float64_rows(monkeypatch)
    for kind in SIMILARITIES:
        for k in (1, 2):
            idx, _ = check_against_reference(X, C, kind, k)
            S = reference_similarity(X, C, kind)
            np.testing.assert_array_equal(idx, np.argsort(-S, axis=1, kind="stable")[:, :k])
    assert sum(recomputed) >= 8 * X.shape[0]  # every row had its near tie


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e20, 1e200])
def test_extreme_magnitudes_match_float64_reference(kind, scale):
    # Beyond float32's range the selection is the float64 one (below its
    # normal range the error bound sends every row there; above, the screen
    # is not used), and it stays exact.
    rng = np.random.RandomState(3)
    X = scale * rng.normal(size=(400, 5))
    C = scale * rng.normal(size=(60, 5))
    if scale > 1e100:
        # The plain formulas overflow: compare in units of the scale.
        idx, _ = top_k_assignments(X, C, kind, 1.0, 4, np)
        S = reference_similarity(X / scale, C / scale, kind)
        ref = np.argsort(-S, axis=1, kind="stable")[:, :4]
        np.testing.assert_array_equal(idx, ref)
        return
    check_against_reference(X, C, kind, 4, softness=min(1.0, 1.0 / scale**2))


def test_mixed_magnitudes_in_one_block():
    # One block holding rows of very different sizes: the bound is per row.
    rng = np.random.RandomState(4)
    X = rng.normal(size=(600, 10)) * np.logspace(-8, 8, 600)[:, None]
    C = rng.normal(size=(80, 10)) * 10.0
    for kind in SIMILARITIES:
        check_against_reference(X, C, kind, 3, softness=1e-9)
