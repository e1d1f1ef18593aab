"""fit, partial_fit, predict and top-k over n, m and d; the GPU path where CuPy is."""

from .common import make_data  # noqa: I001  (sets up the import path first)

from arn_sklearn import ARNRegressor


class Fit:
    params = ([5_000, 20_000], [16, 64], [8, 30])
    param_names = ["n", "m", "d"]
    timeout = 300

    def setup(self, n, m, d):
        self.X, self.y, self.X_test, self.y_test = make_data(n, d)

    def _model(self, m):
        return ARNRegressor(n_anchors=m, random_state=0)

    def time_fit(self, n, m, d):
        self._model(m).fit(self.X, self.y)

    def peakmem_fit(self, n, m, d):
        self._model(m).fit(self.X, self.y)

    def track_test_r2(self, n, m, d):
        return self._model(m).fit(self.X, self.y).score(self.X_test, self.y_test)


class PartialFit:
    params = ([5_000, 20_000], [16, 64])
    param_names = ["n", "m"]

    def setup(self, n, m):
        self.X, self.y, _, _ = make_data(n, 16)
        self.model = ARNRegressor(n_anchors=m, random_state=0).partial_fit(self.X, self.y)

    def time_partial_fit(self, n, m):
        self.model.partial_fit(self.X, self.y)


class Predict:
    params = ([16, 64], [8, 30])
    param_names = ["m", "d"]

    def setup(self, m, d):
        X, y, self.X_test, _ = make_data(5_000, d)
        self.model = ARNRegressor(n_anchors=m, random_state=0).fit(X, y)
        self.X_big = self.X_test.repeat(20, axis=0)

    def time_predict(self, m, d):
        self.model.predict(self.X_big)

    def peakmem_predict(self, m, d):
        self.model.predict(self.X_big)


class TopK:
    """Top-k against the dense model (top_k=None) at a fixed n and d."""

    params = ([64, 256], [None, 2, 8])
    param_names = ["m", "top_k"]
    timeout = 300

    def setup(self, m, top_k):
        self.X, self.y, self.X_test, self.y_test = make_data(10_000, 16)
        self.model = ARNRegressor(n_anchors=m, top_k=top_k, anchors="random", random_state=0)

    def time_fit(self, m, top_k):
        self.model.fit(self.X, self.y)

    def peakmem_fit(self, m, top_k):
        self.model.fit(self.X, self.y)

    def track_test_r2(self, m, top_k):
        return self.model.fit(self.X, self.y).score(self.X_test, self.y_test)


class GPU:
    """device="cuda"; skipped (NotImplementedError in setup) without CuPy and a GPU."""

    params = ([64, 256],)
    param_names = ["m"]

    def setup(self, m):
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise NotImplementedError("no CUDA device")
        except Exception as exc:
            raise NotImplementedError(f"no GPU: {exc}") from exc
        self.X, self.y, _, _ = make_data(50_000, 30)

    def time_fit_cuda(self, m):
        ARNRegressor(n_anchors=m, device="cuda", anchors="random", random_state=0).fit(
            self.X, self.y
        )
