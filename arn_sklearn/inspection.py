"""Visual inspection of ARN predictions (matplotlib, extra ``examples``)."""

import numpy as np

from ._utils._optional import import_optional

__all__ = ["LocalExplanationDisplay"]


class LocalExplanationDisplay:
    """One sample's exact per-feature contributions next to the dataset's spread.

    An ARN prediction is exactly ``f(x) = a(x) + sum_j A_j(x) x_j`` (see
    :meth:`ARNRegressor.local_linear <arn_sklearn.ARNRegressor.local_linear>`),
    so ``A_j(x) x_j`` is feature ``j``'s contribution to this prediction,
    measured from ``x_j = 0`` (the training mean after a ``StandardScaler``).
    The plot draws, per feature, a box plot of the contributions over all rows
    of ``X`` and the chosen sample's contribution as a marker.

    Create it with :meth:`from_estimator`; the constructor takes the computed
    values, following scikit-learn's ``Display`` conventions.

    Parameters
    ----------
    contributions : ndarray of shape (n_samples, n_features)
        ``A_j(x_i) x_ij`` for every row.
    sample_index : int
        Row of ``contributions`` that is explained.
    intercept : float
        ``a(x)`` of the explained sample.
    feature_names : list of str
    target_name : str, default="y"
        Label of the explained output.

    Attributes
    ----------
    figure_ : matplotlib Figure
    ax_ : matplotlib Axes
    sample_contributions_ : ndarray of shape (n_features,)
    prediction_ : float
        ``intercept + sum(sample_contributions_)``, the model's prediction.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from arn_sklearn import ARNRegressor
    >>> from arn_sklearn.inspection import LocalExplanationDisplay
    >>> X, y = load_diabetes(return_X_y=True, as_frame=True)
    >>> model = make_pipeline(StandardScaler(), ARNRegressor(8, alpha=10.0, random_state=0))
    >>> model = model.fit(X, y)
    >>> display = LocalExplanationDisplay.from_estimator(model, X, sample_index=3)
    >>> bool(abs(display.prediction_ - model.predict(X.iloc[[3]])[0]) < 1e-8)
    True
    >>> display.ax_.get_xlabel()
    'contribution to y'
    """

    def __init__(self, contributions, sample_index, intercept, feature_names, target_name="y"):
        self.contributions = contributions
        self.sample_index = sample_index
        self.intercept = intercept
        self.feature_names = feature_names
        self.target_name = target_name

    @classmethod
    def from_estimator(
        cls, estimator, X, sample_index=0, *, feature_names=None, target_index=0, ax=None
    ):
        """Explain ``X[sample_index]`` with a fitted ARN model (or a pipeline ending in one).

        Parameters
        ----------
        estimator : fitted ARNRegressor, DeepARNRegressor or Pipeline
            A pipeline's last step must have ``local_linear``; the steps
            before it transform ``X`` and the contributions are those of the
            transformed features.
        X : array-like of shape (n_samples, n_features)
            Rows whose contributions make the spread (e.g. the training set).
        sample_index : int, default=0
            Row of ``X`` to explain.
        feature_names : list of str, default=None
            Defaults to the names the model saw (pipeline output names, or
            ``feature_names_in_``), else ``x0, x1, ...``.
        target_index : int, default=0
            Output to explain for multi-output models.
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when None.

        Returns
        -------
        display : LocalExplanationDisplay
        """
        model, Xt, names = _final_step(estimator, X)
        if not hasattr(model, "local_linear"):
            raise TypeError(
                f"{type(model).__name__} has no local_linear method; expected a fitted "
                "ARNRegressor or DeepARNRegressor (or a Pipeline ending in one)."
            )
        coef, intercept = model.local_linear(Xt)
        Xt = np.asarray(Xt, dtype=np.float64)
        n_samples, n_features = Xt.shape
        if not -n_samples <= sample_index < n_samples:
            raise ValueError(f"sample_index={sample_index} is out of range for {n_samples} rows.")
        coef, intercept = np.asarray(coef), np.asarray(intercept)
        if coef.ndim == 3:
            n_targets = coef.shape[1]
            if not -n_targets <= target_index < n_targets:
                raise ValueError(
                    f"target_index={target_index} is out of range for {n_targets} targets."
                )
            coef, intercept = coef[:, target_index, :], intercept[:, target_index]
            target_name = f"y[{target_index}]"
        elif target_index not in (0, -1):
            raise ValueError(f"target_index={target_index} given for a single-output model.")
        else:
            target_name = "y"
        if feature_names is None:
            feature_names = names if names is not None else [f"x{j}" for j in range(n_features)]
        feature_names = [str(name) for name in feature_names]
        if len(feature_names) != n_features:
            raise ValueError(
                f"feature_names has {len(feature_names)} names for {n_features} features."
            )
        display = cls(
            contributions=coef * Xt,
            sample_index=sample_index,
            intercept=float(intercept[sample_index]),
            feature_names=feature_names,
            target_name=target_name,
        )
        return display.plot(ax=ax)

    def plot(self, ax=None):
        """Draw the box plots and the sample's contributions.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when None.

        Returns
        -------
        display : LocalExplanationDisplay
            ``self``, with ``figure_`` and ``ax_`` set.
        """
        plt = import_optional("matplotlib.pyplot", "examples", "LocalExplanationDisplay")
        if ax is None:
            height = 1.0 + 0.35 * len(self.feature_names)
            _, ax = plt.subplots(figsize=(6.4, height))
        contributions = np.asarray(self.contributions)
        sample = contributions[self.sample_index]
        self.sample_contributions_ = sample
        self.prediction_ = self.intercept + float(np.sum(sample))
        # Largest contribution of this sample at the top.
        order = np.argsort(np.abs(sample))
        positions = np.arange(len(order))
        style = {
            "positions": positions,
            "widths": 0.6,
            "showfliers": False,
            "patch_artist": True,
            "boxprops": {"facecolor": "0.9", "edgecolor": "0.5"},
            "medianprops": {"color": "0.5"},
            "whiskerprops": {"color": "0.5"},
            "capprops": {"color": "0.5"},
        }
        columns = [contributions[:, j] for j in order]
        try:
            ax.boxplot(columns, orientation="horizontal", **style)
        except TypeError:  # matplotlib < 3.10
            ax.boxplot(columns, vert=False, **style)
        colors = np.where(sample[order] >= 0, "tab:red", "tab:blue")
        ax.scatter(sample[order], positions, c=colors, marker="D", zorder=3, label="this sample")
        ax.axvline(0.0, color="0.3", linewidth=0.8)
        ax.set_yticks(positions, [self.feature_names[j] for j in order])
        ax.set_xlabel(f"contribution to {self.target_name}")
        ax.set_title(
            f"sample {self.sample_index}: {self.target_name} = {self.prediction_:.4g} "
            f"= {self.intercept:.4g} (local intercept) + contributions",
            fontsize="medium",
        )
        ax.legend(loc="lower right", fontsize="small")
        self.ax_ = ax
        self.figure_ = ax.figure
        return self


def _final_step(estimator, X):
    """The model that explains, ``X`` as it receives it, and its feature names."""
    steps = getattr(estimator, "steps", None)
    if steps is None:
        names = getattr(estimator, "feature_names_in_", None)
        names = list(names) if names is not None else _column_names(X)
        return estimator, X, names
    head, model = estimator[:-1], estimator[-1]
    Xt = head.transform(X)
    try:
        names = list(head.get_feature_names_out())
    except (AttributeError, ValueError, TypeError):
        names = _column_names(Xt)
    return model, Xt, names


def _column_names(X):
    columns = getattr(X, "columns", None)
    return [str(c) for c in columns] if columns is not None else None
