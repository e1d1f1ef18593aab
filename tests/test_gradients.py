"""Analytic gradients and optimisers against independent references."""

import numpy as np
import pytest
from array_api_compat import array_namespace
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer

from arn_sklearn import ARNRegressor
from arn_sklearn._kernels._assignment import SIMILARITIES
from arn_sklearn._kernels._gradients import network_backward, network_forward, objective
from arn_sklearn._kernels._lifting import pack_weights
from arn_sklearn._learning._optim import STEP_DECAY, STEP_EPOCHS, Adam, SGDMomentum

xp = array_namespace(np.empty(0))


def random_network(n_layers, n_features, n_targets, seed, n_anchors=4):
    rng = np.random.RandomState(seed)
    layers = []
    for index in range(n_layers):
        n_out = n_targets if index == n_layers - 1 else n_features
        layers.append(
            {
                "anchors": rng.normal(size=(n_anchors, n_features)),
                "weights": 0.3 * rng.normal(size=(n_anchors * (n_features + 1), n_out)),
                "log_softness": np.asarray(np.log(rng.uniform(0.5, 1.5))),
            }
        )
    return layers


def central_difference(f, value, eps=1e-6):
    """Central finite differences of scalar ``f`` at every entry of ``value``."""
    grad = np.zeros(value.shape)
    for index in np.ndindex(value.shape):
        step = np.zeros(value.shape)
        step[index] = eps
        grad[index] = (f(value + step) - f(value - step)) / (2 * eps)
    return grad


def relative_error(got, expected):
    return np.linalg.norm(got - expected) / np.linalg.norm(expected)


def problem(seed=0, n=25, d=3, t=2):
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, t)), rng.uniform(0.5, 2.0, size=n)


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("n_layers", [1, 3])
def test_parameter_gradients_match_central_differences(kind, n_layers):
    X, Y, w = problem()
    layers = random_network(n_layers, X.shape[1], Y.shape[1], seed=1)
    penalty = 0.05
    _, grads = objective(layers, X, Y, w, penalty, kind, xp)
    for index, layer in enumerate(layers):
        for name in ("anchors", "weights", "log_softness"):

            def loss(value, index=index, name=name):
                changed = [dict(lay) for lay in layers]
                changed[index][name] = value
                return float(objective(changed, X, Y, w, penalty, kind, xp, gradient=False)[0])

            expected = central_difference(loss, layer[name])
            got = np.asarray(grads[index][name])
            assert relative_error(got, expected) <= 1e-6, (index, name)


@pytest.mark.parametrize("kind", SIMILARITIES)
def test_softness_gradient_is_the_log_gradient_over_k(kind):
    # dJ/dK = dJ/dlogK / K, checked against a difference in K itself.
    X, Y, w = problem(seed=2)
    layers = random_network(1, X.shape[1], Y.shape[1], seed=3)
    K = float(np.exp(layers[0]["log_softness"]))
    _, grads = objective(layers, X, Y, w, 0.0, kind, xp)

    def loss_at(k):
        changed = [dict(layers[0], log_softness=np.asarray(np.log(k)))]
        return float(objective(changed, X, Y, w, 0.0, kind, xp, gradient=False)[0])

    expected = (loss_at(K + 1e-6) - loss_at(K - 1e-6)) / 2e-6
    assert abs(float(grads[0]["log_softness"]) / K - expected) <= 1e-6 * abs(expected)


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("n_layers", [1, 2])
def test_input_gradient_matches_central_differences(kind, n_layers):
    X, Y, _ = problem(seed=4, n=6)
    layers = random_network(n_layers, X.shape[1], Y.shape[1], seed=5)
    G = np.random.RandomState(6).normal(size=Y.shape)

    def inner(value):
        return float(np.sum(network_forward(value, layers, kind, xp)[0] * G))

    _, caches = network_forward(X, layers, kind, xp)
    _, grad_X = network_backward(caches, G, kind, xp, input_grad=True)
    assert relative_error(grad_X, central_difference(inner, X)) <= 1e-6


def test_objective_is_equation_10_over_total_weight():
    # A naive per-sample, per-anchor evaluation of eq. (10).
    X, Y, w = problem(seed=7, n=12)
    layers = random_network(1, X.shape[1], Y.shape[1], seed=8)
    anchors, weights = layers[0]["anchors"], layers[0]["weights"]
    K = float(np.exp(layers[0]["log_softness"]))
    d = X.shape[1]
    total = 0.0
    for x, y, wi in zip(X, Y, w, strict=True):
        s = -np.array([np.sum((x - c) ** 2) for c in anchors])
        a = np.exp(K * s - np.max(K * s))
        a /= a.sum()
        f = sum(
            a[k] * (weights[k * (d + 1) : (k + 1) * (d + 1)].T @ np.append(x, 1.0))
            for k in range(len(a))
        )
        total += wi * np.sum((f - y) ** 2)
    alpha = 0.3
    expected = (total + alpha * np.sum(weights**2)) / w.sum()
    got = float(objective(layers, X, Y, w, alpha / w.sum(), "euclidean", xp, gradient=False)[0])
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kind", SIMILARITIES)
def test_closed_form_is_stationary_in_the_regressors(kind):
    # The closed form minimises the objective over the regressors for its
    # anchors: the weight gradient vanishes there, the anchor gradient not.
    X, Y, w = problem(seed=9, n=200)
    model = ARNRegressor(4, similarity=kind, softness=0.7, alpha=0.5, random_state=0)
    model.fit(X, Y, sample_weight=w)
    y_mean = np.average(Y, axis=0, weights=w)
    layer = {
        "anchors": model.anchors_,
        "weights": pack_weights(model.coef_, model.intercept_ - y_mean, xp),
        "log_softness": np.asarray(np.log(model.softness_)),
    }
    _, grads = objective([layer], X, Y - y_mean, w, 0.5 / w.sum(), kind, xp)
    scale = np.linalg.norm(layer["weights"])
    assert np.linalg.norm(grads[0]["weights"]) <= 1e-9 * scale
    assert np.linalg.norm(grads[0]["anchors"]) > 1e-6


def test_adam_matches_scikit_learn_adam():
    rng = np.random.RandomState(0)
    params = [{"anchors": rng.normal(size=(3, 2)), "weights": rng.normal(size=(9, 1))}]
    reference = [params[0]["anchors"].copy(), params[0]["weights"].copy()]
    ours = Adam(0.01)
    theirs = AdamOptimizer(reference, learning_rate_init=0.01)
    for _ in range(5):
        grads = [{"anchors": rng.normal(size=(3, 2)), "weights": rng.normal(size=(9, 1))}]
        params = ours.step(params, grads, ("anchors", "weights"), epoch=0)
        theirs.update_params(reference, [grads[0]["anchors"], grads[0]["weights"]])
    np.testing.assert_allclose(params[0]["anchors"], reference[0], rtol=1e-12)
    np.testing.assert_allclose(params[0]["weights"], reference[1], rtol=1e-12)


def test_sgd_momentum_and_step_schedule():
    params = [{"weights": np.array([1.0])}]
    sgd = SGDMomentum(0.1, momentum=0.9)
    grad = [{"weights": np.array([2.0])}]
    params = sgd.step(params, grad, ("weights",), epoch=0)  # v = -0.2
    params = sgd.step(params, grad, ("weights",), epoch=STEP_EPOCHS)  # v = -0.18 - 0.1
    assert params[0]["weights"][0] == pytest.approx(1.0 - 0.2 - (0.9 * 0.2 + STEP_DECAY * 0.2))
    assert sgd.rate(2 * STEP_EPOCHS) == pytest.approx(0.1 * STEP_DECAY**2)
