"""A fitted Deep ARN: a residual stack of fitted layers, ``h <- h + f_l(h)``, then a last layer."""

from dataclasses import dataclass, replace

from .._kernels import _explain
from .._kernels._gradients import make_layer, network_predict
from ._layer import row_chunks


@dataclass(frozen=True)
class FittedNetwork:
    """Fitted ARN layers (dense assignments), every one but the last a residual map.

    Parameters
    ----------
    layers : tuple of FittedLayer
        The residual layers map to ``n_features`` outputs; the last one to the
        targets, its intercepts carrying the target mean.
    """

    layers: tuple

    @property
    def similarity(self):
        return self.layers[-1].assignment.similarity

    def moved(self, convert):
        """The same network with every array passed through ``convert``."""
        return replace(self, layers=tuple(layer.moved(convert) for layer in self.layers))

    def predict(self, X, xp):
        """Outputs of the rows ``X`` (in ``xp``), shape (n, t), float64."""
        layers = [
            make_layer(
                layer.assignment.anchors, layer.coef, layer.intercept, layer.assignment.softness, xp
            )
            for layer in self.layers
        ]
        return network_predict(xp.astype(X, xp.float64), layers, self.similarity, xp)

    def local_linear(self, X, xp):
        """``(coef, intercept)`` of the exact affine decomposition of each prediction."""
        return self._explain(X, _explain.network_local_linear, xp)

    def jacobian(self, X, xp):
        """The exact Jacobian ``df/dx`` of each row, shape (n, t, d)."""
        return self._explain(X, _explain.network_jacobian, xp)[0]

    def _explain(self, X, kernel, xp):
        layers = [
            {
                "anchors": xp.astype(layer.assignment.anchors, xp.float64),
                "coef": xp.astype(layer.coef, xp.float64),
                "intercept": xp.astype(layer.intercept, xp.float64),
                "softness": layer.assignment.softness,
            }
            for layer in self.layers
        ]
        rows = min(_explain.chunk_rows(*layer["coef"].shape) for layer in layers)
        parts = []
        for chunk in row_chunks(xp.astype(X, xp.float64), rows):
            out = kernel(chunk, layers, self.similarity, None, xp)
            parts.append(out if isinstance(out, tuple) else (out,))
        return tuple(xp.concat(list(p), axis=0) for p in zip(*parts, strict=True))
