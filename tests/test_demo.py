"""The demo (README command 1) in quick mode: its tables, its picture, its data."""

import re
import sys

import numpy as np
import pytest

from arn_sklearn import demo

pytest.importorskip("skimage")


def _table(text, header):
    """Rows (lists of cells) of the Markdown table that starts with ``header``."""
    lines = text.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


# Quick mode caps the MLP's epochs: it need not converge there.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_quick_demo_prints_both_tables_and_saves_the_png(tmp_path, capsys):
    demo.main(["--quick", "--output", str(tmp_path)])
    out = capsys.readouterr().out

    sr = _table(out, "| method | PSNR (dB) | fit (s) |")
    assert [row[0] for row in sr][:3] == ["bicubic", "A+ (8)", "ARN (8)"]
    assert sr[3][0].startswith("learned ARN (8, ")
    psnrs = [float(row[1]) for row in sr]
    # Every learned method adds detail to the bicubic baseline of the same image.
    assert all(20 < p < 45 for p in psnrs) and min(psnrs[1:]) > psnrs[0]

    reg = _table(out, "| model | test RMSE | fit (s) | fit / MLP fit |")
    labels = [row[0] for row in reg]
    assert labels == ["Ridge (CV alpha)", "k-NN (k=10)", "MLP (100 hidden)", "ARN (32 anchors)"]
    for row in reg:
        assert float(row[1]) > demo.ARM_NOISE / 2 and float(row[2]) >= 0
    assert reg[2][3] == "1.00"  # the MLP against itself

    path = re.search(r"saved (\S+\.png)", out).group(1)
    assert path.startswith(str(tmp_path))
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_comparison_png_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    hr = np.random.default_rng(0).uniform(size=(40, 40, 3))
    box = (5, 5, 20)
    path = demo.save_comparison(str(tmp_path / "c.png"), hr, {"bicubic": hr * 0.5}, {}, box)
    import skimage.io

    strip = skimage.io.imread(path)
    # Two 20-pixel crops and one 4-pixel gap, the ground truth last.
    assert strip.shape == (20, 44, 3)
    np.testing.assert_allclose(strip[:, 24:] / 255, hr[5:25, 5:25], atol=0.5 / 255 + 1e-12)


def test_arm_kinematics_against_link_lengths():
    q, Y = demo.make_arm(500, random_state=0, noise=0.0)
    links = np.asarray(demo.ARM_LINKS)
    n_joints = len(links)
    x, y = Y[:, :n_joints], Y[:, n_joints:]
    # Consecutive joints are one link apart, whatever the angles.
    steps = np.hypot(np.diff(x, axis=1, prepend=0), np.diff(y, axis=1, prepend=0))
    np.testing.assert_allclose(steps, np.broadcast_to(links, steps.shape), rtol=1e-12)
    # The first joint is at the first link's angle.
    np.testing.assert_allclose(np.arctan2(y[:, 0], x[:, 0]), q[:, 0], atol=1e-12)
    assert q.shape == (500, n_joints) and np.all(np.abs(q) <= np.pi / 2)


def test_gain_region_is_the_brute_force_best_window():
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=(30, 34))
    ours, theirs = truth + rng.normal(0, 0.1, truth.shape), truth + rng.normal(0, 0.1, truth.shape)
    size, border = 7, 2
    gain = (theirs - truth) ** 2 - (ours - truth) ** 2
    best = max(
        (gain[r : r + size, c : c + size].sum(), r, c)
        for r in range(border, 30 - size - border + 1)
        for c in range(border, 34 - size - border + 1)
    )
    assert demo.gain_region(truth, ours, theirs, size, border) == (best[1], best[2], size)
    with pytest.raises(ValueError, match="does not fit"):
        demo.gain_region(truth, ours, theirs, 30, border)
