"""The closed form: anchors and softness fixed at the start, one pass, one solve.

``fit`` and the first ``partial_fit`` start a layer from the rows they get;
later ``partial_fit`` calls add rows to its statistics and solve again, so
fitting in chunks gives the same model as one fit on all rows.
"""

from sklearn.utils import check_random_state

from .._learning._starts import initial_anchors
from .._model._layer import check_fits_memory, closed_form_layer, make_assignment
from .._utils._arrays import to_numpy
from .._utils._validation import check_target_count


def fit_closed_form(X, Y, w, n_anchors, spec, *, batch_size, random_state, backend):
    """A new closed-form layer on the rows ``(X, Y, w)``.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    Y : array of shape (n_samples, n_targets), float64
    w : array of shape (n_samples,), float64
    n_anchors : int
    spec : StartSpec
        Anchors, similarity, softness, ``top_k`` and ``alpha``.
    batch_size : int or None
    random_state : int, RandomState instance or None
    backend : Backend
        Where the pass and the solve run.

    Returns
    -------
    FittedLayer
        In the compute namespace, with its statistics.
    """
    check_fits_memory(n_anchors, spec.top_k, X.shape[1], Y.shape[1], batch_size)
    # KMeans, k-plane and the softness rule run on the host.
    anchors, softness = initial_anchors(
        to_numpy(X), to_numpy(w), n_anchors, spec, check_random_state(random_state), to_numpy(Y)
    )
    assignment = make_assignment(
        backend.to_compute(anchors), spec.similarity, softness, spec.top_k, spec.linear_solver
    )
    xp = backend.xp
    X, Y, w = (backend.to_compute(a) for a in (X, Y, w))
    return closed_form_layer(
        assignment, X, Y, w, spec.alpha, xp, batch_size=batch_size, verbose=spec.verbose
    )


def partial_fit_closed_form(layer, X, Y, w, alpha, *, batch_size, backend, verbose=0):
    """``layer``'s statistics plus the rows ``(X, Y, w)``, solved again (same anchors)."""
    check_target_count(Y, layer.stats.zty.shape[1], "earlier calls to partial_fit had")
    xp = backend.xp
    X, Y, w = (backend.to_compute(a) for a in (X, Y, w))
    return closed_form_layer(
        layer.assignment.moved(backend.to_compute),
        X,
        Y,
        w,
        alpha,
        xp,
        stats=layer.stats,
        batch_size=batch_size,
        verbose=verbose,
    )
