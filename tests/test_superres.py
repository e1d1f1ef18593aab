"""Tests of the super-resolution pipeline against independent references."""

import os
import re

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from arn_sklearn import ARNRegressor
from arn_sklearn._kernels._assignment import best_abs_dot
from arn_sklearn.superres import (
    APlusRegressor,
    PatchFeatures,
    SuperResolver,
    aplus_anchors,
    build_training_set,
    degrade,
    extract_patches,
    gradient_patch_features,
    imresize,
    luminance,
    modcrop,
    psnr,
    reconstruct_from_patches,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from arn_sklearn.superres._aplus import normalise_rows
from arn_sklearn.superres._cli import AUTO_TOP_K_ANCHORS, make_regressor
from arn_sklearn.superres._cli import main as cli_main


def _smooth_image(shape, seed=0):
    """A random but natural-looking image in [0, 1]: a few smooth blobs and edges."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    image = np.zeros(shape)
    for _ in range(6):
        cy, cx, w = rng.uniform(0, 1, 3)
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.02 + 0.05 * w))
    image += 0.3 * (np.sin(20 * xx + 10 * yy) > 0)
    return (image - image.min()) / (image.max() - image.min())


# ----------------------------------------------------------------- resize
def test_imresize_keys_kernel_at_integer_positions():
    # Upscaling by 3 puts every third output sample exactly on an input
    # sample, where Keys' kernel is 1 at 0 and 0 at +-1, +-2.
    lr = np.random.RandomState(0).uniform(size=(7, 5))
    up = imresize(lr, 3)
    assert up.shape == (21, 15)
    np.testing.assert_allclose(up[1::3, 1::3], lr, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_imresize_downscale_matches_hand_weights(scale):
    # An output pixel away from the border is the antialiased kernel
    # h(x) = cubic(x / s) / s centred at input coordinate u, normalised.
    rng = np.random.RandomState(scale)
    row = rng.uniform(size=12 * scale)
    out = imresize(row[None, :], 1.0 / scale)[0]
    assert out.shape == (12,)

    def keys(x):
        x = abs(x)
        if x <= 1:
            return 1.5 * x**3 - 2.5 * x**2 + 1
        return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2 if x <= 2 else 0.0

    j = 6  # 0-based output index, far from both borders
    u = (j + 1) * scale + 0.5 * (1 - scale) - 1  # 0-based input coordinate
    taps = np.arange(len(row))
    w = np.array([keys((u - t) / scale) for t in taps])
    assert out[j] == pytest.approx(w @ row / w.sum(), abs=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_imresize_interior_matches_pillow_bicubic(scale):
    # Pillow's BICUBIC is the same antialiased Keys kernel (a = -0.5) with the
    # same pixel-centre convention; only the borders differ (it truncates the
    # kernel where MATLAB mirrors the image).
    Image = pytest.importorskip("PIL.Image")
    image = np.random.RandomState(scale).uniform(size=(12 * scale, 9 * scale))
    pil = Image.fromarray(image.astype(np.float32))  # float32 -> mode "F"
    # (factor, Pillow's (width, height), border pixels left out)
    cases = ((1 / scale, (9, 12), 3), (scale, (9 * scale**2, 12 * scale**2), 3 * scale))
    for factor, size, m in cases:
        ref = np.asarray(pil.resize(size, Image.BICUBIC), dtype=np.float64)
        got = imresize(image.astype(np.float32), factor)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got[m:-m, m:-m], ref[m:-m, m:-m], atol=1e-6)


def test_imresize_keeps_constants_and_colour_axis():
    image = np.full((9, 12, 3), 0.25)
    np.testing.assert_allclose(imresize(image, 1 / 3), 0.25)
    assert imresize(image, 2).shape == (18, 24, 3)
    with pytest.raises(ValueError, match="2-D or 3-D"):
        imresize(np.zeros(4), 2)


# ------------------------------------------------------------------ color
def test_ycbcr_matches_matlab_convention_and_round_trips():
    rgb = np.random.RandomState(0).uniform(size=(4, 5, 3))
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-12)
    # MATLAB rgb2ycbcr: white -> Y = 235, black -> Y = 16 (of 255).
    assert rgb_to_ycbcr(np.ones((1, 1, 3)))[0, 0, 0] * 255 == pytest.approx(235.0)
    assert rgb_to_ycbcr(np.zeros((1, 1, 3)))[0, 0, 0] * 255 == pytest.approx(16.0)
    assert luminance(np.uint8([[0, 255]])).tolist() == [[0.0, 1.0]]


def test_psnr_against_hand_computed_value():
    ref = np.zeros((10, 10))
    est = np.full((10, 10), 7.0)  # the shaved border is wrong on purpose
    est[2:-2, 2:-2] = 0.0
    est[2:-2, 2:5] = 0.2  # half of the kept 6x6 pixels off by 0.2
    # MSE = 0.5 * 0.04 = 0.02 -> PSNR = 10 log10(1 / 0.02)
    assert psnr(ref, est, border=2) == pytest.approx(10 * np.log10(50.0), abs=1e-12)
    assert psnr(ref * 255, est * 255, border=2, data_range=255) == pytest.approx(
        10 * np.log10(50.0)
    )
    assert psnr(ref, ref) == np.inf
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(ref, ref[:5])


# ---------------------------------------------------------------- patches
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_patch_shapes_and_round_trip(scale):
    image = _smooth_image((10 * scale + 1, 8 * scale))
    patches = extract_patches(image, scale)
    p = 3 * scale
    # starts every `scale` pixels, plus one flush with the far border if needed
    n_rows = len(range(0, image.shape[0] - p + 1, scale)) + 1
    n_cols = len(range(0, image.shape[1] - p + 1, scale))
    assert patches.shape == (n_rows * n_cols, p * p)
    np.testing.assert_array_equal(patches[0], image[:p, :p].ravel())
    np.testing.assert_allclose(reconstruct_from_patches(patches, image.shape, scale), image)
    assert gradient_patch_features(image, scale).shape == (n_rows * n_cols, 4 * p * p)
    with pytest.raises(ValueError, match="needs"):
        reconstruct_from_patches(patches[1:], image.shape, scale)


def test_gradient_features_are_the_a_plus_filters():
    image = _smooth_image((12, 12))
    raw = gradient_patch_features(image, 2)
    p = 6
    # Interior pixel (3, 4) of the first patch: central differences.
    i, j = 3, 4
    assert raw[0, i * p + j] == pytest.approx(image[i, j + 1] - image[i, j - 1])
    assert raw[0, p * p + i * p + j] == pytest.approx(image[i + 1, j] - image[i - 1, j])
    d2 = (image[i, j + 2] - 2 * image[i, j] + image[i, j - 2]) / 2
    assert raw[0, 2 * p * p + i * p + j] == pytest.approx(d2)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_exact_residuals_reconstruct_the_original(scale):
    hr = modcrop(_smooth_image((47, 53)), scale)
    lr, mid = degrade(hr, scale)
    assert lr.shape == (hr.shape[0] // scale, hr.shape[1] // scale)
    assert mid.shape == hr.shape
    residuals = extract_patches(hr - mid, scale)
    np.testing.assert_allclose(mid + reconstruct_from_patches(residuals, hr.shape, scale), hr)


class _Oracle:
    """Returns the training targets for the training features (row by row)."""

    def fit(self, X, Y):
        self.X_, self.Y_ = X.copy(), Y.copy()
        return self

    def predict(self, X):
        np.testing.assert_allclose(X, self.X_)
        return self.Y_

    def get_params(self, deep=True):
        return {}

    def set_params(self, **params):
        return self


def test_perfect_prediction_through_the_super_resolver():
    # Features, normalisation, prediction and averaging compose to the
    # identity when the regressor is exact.
    scale = 3
    hr = modcrop(_smooth_image((40, 34)), scale)
    lr, _ = degrade(hr, scale)
    features, X, Y = build_training_set([hr], scale)
    model = SuperResolver(_Oracle(), scale=scale).fit_patches(features, X, Y)
    np.testing.assert_allclose(model.upscale_y(lr), hr, atol=1e-12)


def test_patch_features_pca_keeps_the_energy():
    images = [degrade(modcrop(_smooth_image((36, 36), s), 3), 3)[1] for s in range(3)]
    feats = PatchFeatures(scale=3, energy=0.99).fit(images)
    raw = feats.raw_features(images)
    assert raw.shape[1] == 4 * 81
    C = feats.components_
    np.testing.assert_allclose(C.T @ C, np.eye(feats.n_components_), atol=1e-10)
    kept = np.sum((raw @ C) ** 2) / np.sum(raw**2)
    assert kept >= 0.99 and kept == pytest.approx(feats.explained_energy_)
    # one fewer component would not keep the energy
    assert np.sum((raw @ C[:, :-1]) ** 2) / np.sum(raw**2) < 0.99
    with pytest.raises(ValueError, match="columns"):
        PatchFeatures(scale=2).fit(images).transform_raw(raw)


# ------------------------------------------------------------------- A+
def test_aplus_matches_its_formula_on_a_toy_problem():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 3))
    X[0] *= 0.01  # a nearly flat sample: target not rescaled (A+ rule)
    Y = np.column_stack([X[:, 0] * np.abs(X[:, 1]), np.sin(X[:, 2])])
    anchors = rng.normal(size=(3, 3))
    model = APlusRegressor(3, neighborhood_size=10, alpha=0.5, anchors=anchors).fit(X, Y)

    norms = np.sqrt((X**2).sum(axis=1))
    Xn = X / norms[:, None]
    Yn = Y / np.where(norms < 0.1, 1.0, norms)[:, None]
    C = anchors / np.sqrt((anchors**2).sum(axis=1))[:, None]
    np.testing.assert_allclose(model.anchors_, C)
    for k in range(3):
        nb = np.argsort(-np.abs(Xn @ C[k]))[:10]
        P = Yn[nb].T @ Xn[nb] @ np.linalg.inv(Xn[nb].T @ Xn[nb] + 0.5 * np.eye(3))
        np.testing.assert_allclose(model.coef_[k], P, rtol=1e-10, atol=1e-12)
    X_test = rng.normal(size=(20, 3))
    k = np.argmax(np.abs(X_test @ C.T), axis=1)
    expected = np.einsum("ntd,nd->nt", model.coef_[k], X_test)
    np.testing.assert_allclose(model.predict(X_test), expected, rtol=1e-12)
    assert model.predict(X_test[:, :][:5]).shape == (5, 2)
    assert APlusRegressor(3, anchors=anchors).fit(X, Y[:, 0]).predict(X_test).shape == (20,)


def test_aplus_anchors_are_unit_norm_and_sign_invariant():
    rng = np.random.RandomState(0)
    directions = np.linalg.qr(rng.normal(size=(6, 6)))[0][:3]
    labels = rng.randint(3, size=600)
    signs = rng.choice([-1.0, 1.0], size=600)
    X = directions[labels] * signs[:, None] + 0.01 * rng.normal(size=(600, 6))
    C = aplus_anchors(X, 3, random_state=0)
    np.testing.assert_allclose(np.linalg.norm(C, axis=1), 1.0)
    # each true line is found once, up to sign
    np.testing.assert_allclose(np.sort(np.abs(C @ directions.T).max(axis=0)), 1.0, atol=1e-3)


@pytest.mark.parametrize("anchors", ["klines", "kmeans", "random"])
def test_aplus_exact_on_a_linear_problem(anchors):
    rng = np.random.RandomState(1)
    X = rng.normal(size=(400, 4)) + 3.0
    Y = X @ rng.normal(size=(4, 3))
    model = APlusRegressor(5, neighborhood_size=50, alpha=1e-8, anchors=anchors, random_state=0)
    np.testing.assert_allclose(model.fit(X, Y).predict(X), Y, atol=1e-5)


def test_aplus_errors():
    X = np.ones((5, 2))
    with pytest.raises(ValueError, match="n_samples >= n_anchors"):
        APlusRegressor(8).fit(X, X)
    with pytest.raises(ValueError, match="anchors has shape"):
        APlusRegressor(2, anchors=np.ones((3, 2))).fit(X, X)


@parametrize_with_checks([APlusRegressor(n_anchors=2, neighborhood_size=16, random_state=0)])
def test_aplus_sklearn_compatible(estimator, check):
    check(estimator)


# ------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def camera_split():
    skimage_data = pytest.importorskip("skimage.data")
    camera = skimage_data.camera() / 255.0
    return [camera[:256, :256], camera[256:, :256], camera[:256, 256:]], camera[256:, 256:]


def test_a_plus_and_arn_beat_bicubic(camera_split):
    train, test = camera_split
    scale = 3
    features, X, Y = build_training_set(train, scale, max_patches_per_image=2000, random_state=0)
    hr = modcrop(test, scale)
    lr, mid = degrade(hr, scale)
    bicubic = psnr(hr, mid, border=scale)
    aplus = SuperResolver(APlusRegressor(8, neighborhood_size=512, random_state=0), scale=scale)
    arn = SuperResolver(
        ARNRegressor(
            8, similarity="absdot", alpha=0.1, anchors=aplus_anchors(X, 8, random_state=0)
        ),
        scale=scale,
    )
    for model in (aplus, arn):
        model.fit_patches(features, X, Y)
        assert psnr(hr, model.upscale_y(lr), border=scale) > bicubic + 0.3
    with pytest.raises(ValueError, match="scale"):
        SuperResolver(scale=2).fit_patches(features, X, Y)
    with pytest.raises(ValueError, match="2-D"):
        arn.upscale_y(np.zeros((10, 10, 3)))
    with pytest.raises(ValueError, match="smaller than the patch size"):
        arn.upscale_y(np.zeros((2, 10)))


def _laplacian_energy(image):
    from scipy.ndimage import laplace

    return float(np.mean(laplace(image)[3:-3, 3:-3] ** 2))


@pytest.mark.parametrize("method", ["aplus", "arn"])
def test_flat_and_quantised_areas_stay_smooth(camera_split, method):
    # Issue 20: 8-bit skies came out with maze-like contours. The patch
    # features of a nearly flat patch are normalised to unit length, and the
    # predicted residual was multiplied back by 1 instead of by the (tiny)
    # feature norm: quantisation steps were answered with edge-sized residuals.
    train, _ = camera_split
    scale = 3
    features, X, Y = build_training_set(train, scale, max_patches_per_image=2000, random_state=0)
    if method == "aplus":
        regressor = APlusRegressor(8, neighborhood_size=512, random_state=0)
    else:
        anchors = aplus_anchors(X, 8, random_state=0)
        regressor = ARNRegressor(8, similarity="absdot", alpha=0.1, anchors=anchors)
    model = SuperResolver(regressor, scale=scale).fit_patches(features, X, Y)

    def uint8(image):
        return np.round(np.clip(image, 0, 1) * 255) / 255

    yy, xx = np.mgrid[0:180, 0:180] / 180.0
    noise = np.random.RandomState(0).normal(scale=0.002, size=xx.shape)
    scenes = {
        "flat": np.full(xx.shape, 0.6),
        "quantised gradient": uint8(0.3 + 0.25 * xx + 0.1 * yy),
        "quantised flat with noise": uint8(0.6 + noise),
    }
    for name, hr in scenes.items():
        lr = uint8(imresize(hr, 1 / scale))
        bicubic = imresize(lr, scale)
        out = np.clip(model.upscale_y(lr), 0, 1)
        # Before the fix: 20-300x the Laplacian energy of bicubic, 10-280 dB worse;
        # after it, 0-3.3x (the 8-bit steps are sharpened) and at most 1.1 dB below.
        added = _laplacian_energy(out) - _laplacian_energy(bicubic)
        assert added <= 5 * _laplacian_energy(bicubic) + 1e-12, name  # measured 2-2.3
        assert psnr(hr, out, border=scale) > psnr(hr, bicubic, border=scale) - 1.5, name


def test_upscale_colour_image_keeps_shape_and_range(camera_split):
    train, _ = camera_split
    model = SuperResolver(
        APlusRegressor(4, neighborhood_size=256, random_state=0),
        scale=2,
        max_patches_per_image=500,
        random_state=0,
    ).fit(train)
    rgb = np.random.RandomState(0).randint(0, 256, size=(12, 10, 3)).astype(np.uint8)
    out = model.upscale(rgb)
    assert out.shape == (24, 20, 3)
    assert out.min() >= 0 and out.max() <= 1
    # chroma is bicubic: the Cb/Cr of the output equal those of imresize
    expected_chroma = imresize(rgb_to_ycbcr(rgb / 255.0), 2)[..., 1:]
    got = rgb_to_ycbcr(out)[..., 1:]
    inside = np.all((out > 0) & (out < 1), axis=2)  # clipping alters chroma
    np.testing.assert_allclose(got[inside], expected_chroma[inside], atol=1e-10)


def test_cli_train_upscale_benchmark(tmp_path, capsys, camera_split):
    io = pytest.importorskip("skimage.io")
    train, test = camera_split
    folder = tmp_path / "train"
    folder.mkdir()
    for i, image in enumerate(train):
        io.imsave(folder / f"im{i}.png", (image * 255).astype(np.uint8), check_contrast=False)
    tests = tmp_path / "test"
    tests.mkdir()
    io.imsave(tests / "t.png", (test * 255).astype(np.uint8), check_contrast=False)
    model = tmp_path / "m.skops"
    common = ["--images", str(folder), "--scale", "2", "--anchors", "4", "--max-patches", "500"]
    assert cli_main(["train", *common, "--output", str(model)]) == 0
    assert "patches" in capsys.readouterr().out  # progress is shown
    small = tmp_path / "small.png"
    io.imsave(small, (test[:20, :30] * 255).astype(np.uint8), check_contrast=False)
    assert cli_main(["upscale", str(model), str(small), str(tmp_path / "big.png")]) == 0
    assert io.imread(tmp_path / "big.png").shape == (40, 60)
    assert cli_main(["benchmark", "--model", str(model), "--test-dir", str(tests)]) == 0
    out = capsys.readouterr().out
    assert "t.png" in out and "mean" in out


# ------------------------------------------------- issue 14: images and the CLI
def test_integer_images_scale_by_their_conventional_range():
    from arn_sklearn.superres._color import as_float_image

    values = np.array([[0, 128, 255]])
    np.testing.assert_array_equal(as_float_image(values.astype(np.uint8)), values / 255)
    np.testing.assert_array_equal(
        as_float_image((values * 257).astype(np.uint16)), values * 257 / 65535
    )
    # An int64 image of 0..255 values was divided by the int64 maximum (black).
    for dtype in (np.int64, np.int32, np.int16, np.int8, np.uint32):
        with pytest.raises(ValueError, match="uint8 .* or uint16"):
            as_float_image(values.astype(dtype))


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """A tiny saved SuperResolver, an image, a non-image and an empty folder."""
    io = pytest.importorskip("skimage.io")
    from arn_sklearn._persistence import save_model

    root = tmp_path_factory.mktemp("cli")
    images = [_smooth_image((30, 30), seed) for seed in range(2)]
    model = SuperResolver(
        APlusRegressor(4, neighborhood_size=64, random_state=0), scale=2, random_state=0
    ).fit(images)
    save_model(model, root / "model.skops")
    io.imsave(root / "small.png", (images[0][:12, :12] * 255).astype(np.uint8))
    (root / "notes.png").write_text("not an image")
    (root / "empty").mkdir()
    return root, model


def _cli_error(capsys, argv):
    """Run the CLI, expecting one line on stderr and exit status 2."""
    status = cli_main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("arn-superres: error: ")
    return err


def test_cli_upscale_with_a_skops_model(cli_files, capsys):
    root, model = cli_files
    io = pytest.importorskip("skimage.io")
    assert cli_main(["upscale", str(root / "model.skops"), str(root / "small.png"),
                     str(root / "big.png")]) == 0  # fmt: skip
    expected = np.round(model.upscale(io.imread(root / "small.png")) * 255).astype(np.uint8)
    np.testing.assert_array_equal(io.imread(root / "big.png"), expected)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio tries its plugins
@pytest.mark.parametrize(
    "argv, match",
    [
        (["upscale", "model.skops", "missing.png", "out.png"], "Image file not found"),
        (["upscale", "missing.skops", "small.png", "out.png"], "Model file not found"),
        (["upscale", "model.skops", "notes.png", "out.png"], "Cannot read .*notes.png"),
        (["benchmark", "--model", "missing.skops"], "Model file not found"),
        (["train", "--images", "empty", "--output", "x.skops"], "No image files"),
        (["train", "--images", "missing_dir", "--output", "x.skops"], "folder not found"),
    ],
)
def test_cli_errors_are_one_line_and_status_2(cli_files, capsys, monkeypatch, argv, match):
    root, _ = cli_files
    monkeypatch.chdir(root)
    assert re.search(match, _cli_error(capsys, argv))


def test_cli_refuses_pickle_models_unless_trusted(cli_files, capsys, tmp_path):
    joblib = pytest.importorskip("joblib")
    root, model = cli_files
    pickled = tmp_path / "model.joblib"
    joblib.dump(model, pickled)
    out = tmp_path / "big.png"
    argv = ["upscale", pickled, root / "small.png", out]
    assert "--trust-pickle" in _cli_error(capsys, argv)
    assert not out.exists()
    assert cli_main([str(a) for a in argv] + ["--trust-pickle"]) == 0
    assert out.exists()


def test_cli_refuses_a_skops_file_naming_foreign_code(cli_files, capsys, tmp_path):
    # A tampered model: an attribute holding os.system, which skops would load.
    sio = pytest.importorskip("skops.io")
    root, model = cli_files
    tampered = SuperResolver(model.regressor, scale=2)
    tampered.__dict__.update(model.__dict__)
    tampered.hook_ = os.system
    sio.dump(tampered, tmp_path / "evil.skops")
    err = _cli_error(capsys, ["upscale", tmp_path / "evil.skops", root / "small.png", "o.png"])
    assert "system" in err and "Refusing" in err


@pytest.mark.parametrize(
    "argv, flag, match",
    [
        (["--anchors", "0"], "--anchors", "at least 1, got 0"),
        (["--anchors", "-1"], "--anchors", "at least 1, got -1"),
        (["--anchors", "many"], "--anchors", "must be an integer"),
        (["--max-patches", "0"], "--max-patches", "at least 1, got 0"),
        (["--alpha", "-1"], "--alpha", "at least 0"),
        (["--output", "model.joblib"], "--output", r"should end in '\.skops'"),
    ],
)
def test_cli_bad_flags_are_named_before_any_work(capsys, argv, flag, match):
    # Before: "attempt to get argmax of an empty sequence", "no gradient energy",
    # or an error only after the training set was built.
    with pytest.raises(SystemExit) as info:
        cli_main(["train", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and re.search(match, err), err
    assert "[superres]" not in err


# ------------------------------------------- issue 19: contrast weights, CLI top-k
def test_contrast_weights_are_a_weighted_fit_by_the_feature_norm():
    # Reference: sklearn's Ridge fitted by hand on the normalised patches with
    # sample_weight = raw feature norm; uniform weights must differ from it.
    from sklearn.linear_model import Ridge

    hr = modcrop(_smooth_image((45, 45)), 3)
    features, X, Y = build_training_set([hr], 3)
    norms = np.linalg.norm(X, axis=1)
    Xn = X / (norms + np.finfo(float).eps)[:, None]
    Yn = Y / np.where(norms + np.finfo(float).eps < 0.1, 1.0, norms + np.finfo(float).eps)[:, None]
    reference = Ridge(alpha=0.1).fit(Xn, Yn, sample_weight=norms)
    model = SuperResolver(Ridge(alpha=0.1), scale=3, patch_weights="contrast")
    fitted = model.fit_patches(features, X, Y).regressor_
    np.testing.assert_allclose(fitted.coef_, reference.coef_, rtol=1e-10, atol=1e-12)
    uniform = SuperResolver(Ridge(alpha=0.1), scale=3).fit_patches(features, X, Y).regressor_
    assert not np.allclose(uniform.coef_, reference.coef_, rtol=1e-3)


def test_contrast_weights_need_a_regressor_with_sample_weight():
    hr = modcrop(_smooth_image((30, 30)), 3)
    features, X, Y = build_training_set([hr], 3)
    model = SuperResolver(APlusRegressor(4, neighborhood_size=16), patch_weights="contrast")
    with pytest.raises(ValueError, match="sample_weight; APlusRegressor does not"):
        model.fit_patches(features, X, Y)


def test_cli_top_k_and_patch_weights_reach_the_model(tmp_path, camera_split):
    io = pytest.importorskip("skimage.io")
    from arn_sklearn._persistence import load_model

    train, _ = camera_split
    folder = tmp_path / "train"
    folder.mkdir()
    for i, image in enumerate(train):
        io.imsave(folder / f"im{i}.png", (image * 255).astype(np.uint8), check_contrast=False)
    out = tmp_path / "m.skops"
    argv = ["train", "--images", str(folder), "--anchors", "8", "--max-patches", "400",
            "--top-k", "2", "--patch-weights", "contrast", "--output", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    model = load_model(out)
    assert model.patch_weights == "contrast"
    assert model.regressor_.top_k == 2
    # Each patch mixes at most two anchors' regressors.
    X = model.features_.transform_raw(gradient_patch_features(luminance(train[0]), 3))
    weights = np.asarray(model.regressor_.soft_assignments(X[:200]))
    assert np.all(np.count_nonzero(weights, axis=1) <= 2)


def test_best_atoms_match_the_full_correlation_search():
    """The blocked float32 search picks the atom of largest |x . c| (klines' assignment)."""
    rng = np.random.RandomState(0)
    X = normalise_rows(rng.normal(size=(5000, 12)))[0]
    D = normalise_rows(rng.normal(size=(300, 12)))[0]
    label, corr = best_abs_dot(X, D, block_bytes=4 * 300 * 7)  # row blocks of 7, one short
    full = X @ D.T
    top2 = np.sort(np.abs(full), axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-5  # ties within float32 rounding may go either way
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(label[clear], np.argmax(np.abs(full), axis=1)[clear])
    np.testing.assert_allclose(corr, full[np.arange(len(X)), label], rtol=0, atol=1e-12)


def test_cli_keeps_the_top_4_anchors_by_default_only_above_the_threshold():
    X = np.random.RandomState(0).normal(size=(2 * AUTO_TOP_K_ANCHORS + 10, 6))
    many, few = AUTO_TOP_K_ANCHORS + 1, AUTO_TOP_K_ANCHORS
    assert make_regressor("arn", many, "absdot", 0.1, 0, X).top_k == 4
    assert make_regressor("arn", few, "absdot", 0.1, 0, X).top_k is None
    assert make_regressor("arn", many, "absdot", 0.1, 0, X, top_k=2).top_k == 2
    # Learned anchors take no top_k: the default leaves them dense.
    assert make_regressor("arn", many, "absdot", 0.1, 0, X, solver="lbfgs").top_k is None
