"""Analysis tools: the projection plane, lskd-stability against the paper's formula on
checkpoints whose outputs the test controls (a vision MLP with seeded weights, a tiny
trained fairseq transformer), and lskd-plot."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_png_drawn, run_cli

from lskd_study import projection as proj


def stability_direct(p: np.ndarray, y: np.ndarray):
    """Eq. 2 computed the plain two-pass way: per-class mean, then mean squared distance."""
    per = {}
    for c in np.unique(y):
        pc = p[y == c]
        per[int(c)] = float(((pc - pc.mean(0)) ** 2).sum(1).mean())
    one_minus_s = float(np.mean(list(per.values())))
    return one_minus_s, per


# ------------------------------------------------------------------ projection
def test_plane_basis_is_orthonormal_and_passes_through_the_templates():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(3, 16))
    origin, basis = proj.plane_basis(t)
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(origin, t[0])
    pts = proj.project(t, origin, basis)
    np.testing.assert_allclose(pts[0], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(pts[1], [np.linalg.norm(t[1] - t[0]), 0.0], atol=1e-12)
    assert pts[2][1] > 0
    # e1, e2 span exactly the directions t2 - t1 and t3 - t1 (Gram-Schmidt)
    for v in (t[1] - t[0], t[2] - t[0]):
        np.testing.assert_allclose(basis.T @ (basis @ v), v, atol=1e-10)
    # the projected templates keep their pairwise distances (they lie in the plane)
    for i in range(3):
        for j in range(3):
            assert abs(np.linalg.norm(pts[i] - pts[j]) - np.linalg.norm(t[i] - t[j])) < 1e-10


def test_projection_drops_the_component_normal_to_the_plane():
    rng = np.random.default_rng(1)
    t = rng.normal(size=(3, 8))
    origin, basis = proj.plane_basis(t)
    a, b = 0.7, -1.3
    x = origin + a * basis[0] + b * basis[1]
    normal = rng.normal(size=8)
    normal -= basis.T @ (basis @ normal)  # orthogonal to the plane
    got = proj.project(np.stack([x, x + 5 * normal]), origin, basis)
    np.testing.assert_allclose(got, [[a, b], [a, b]], atol=1e-10)


def test_collinear_templates_are_refused():
    t = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    with pytest.raises(proj.DegeneratePlaneError):
        proj.plane_basis(t)
    with pytest.raises(ValueError):
        proj.plane_basis(t[:2])


def test_project_classes_uses_the_classifier_rows_and_keeps_three_classes():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(5, 6))
    feats = rng.normal(size=(50, 6))
    labels = np.arange(50) % 5
    out = proj.project_classes(feats, labels, w, [3, 1, 4], max_per_class=4)
    assert set(out["labels"].tolist()) == {1, 3, 4}
    assert out["points"].shape == (12, 2)
    origin, basis = proj.plane_basis(w[[3, 1, 4]])
    np.testing.assert_allclose(out["templates"], proj.project(w[[3, 1, 4]], origin, basis))
    s = proj.cluster_summary(out["points"], out["labels"], [3, 1, 4])
    assert set(s["centre_distance"]) == {"3-1", "3-4", "1-4"}


# ------------------------------------------------------------------ vision
def _tiny_image_folder(root: Path, classes=("a", "b", "c"), per_class=(5, 4, 6), size=8, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c, n in zip(classes, per_class):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


def _vision_checkpoint(path: Path, data: Path, seed: int, classes=("a", "b", "c"), size=8):
    from lskd_vision.engine import CHECKPOINT_FORMAT, model_from_config

    config = {"arch": "mlp", "num_classes": len(classes), "classes": list(classes), "img_size": size,
              "input_style": "cifar", "small_input_stem": False, "data": str(data), "val_fraction": 0.0,
              "label_smoothing": 0.0}
    torch.manual_seed(seed)
    model = model_from_config(config)
    with torch.no_grad():  # sharper outputs than the default init, so the metric is far from 0
        for p in model.parameters():
            p.mul_(4.0)
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "config": config, "epoch": 1}, path)
    return {k: v.numpy().astype(np.float64) for k, v in model.state_dict().items()}


def _direct_vision_probs(weights, data: Path, classes=("a", "b", "c"), size=8):
    """Softmax outputs computed by hand (numpy) from the saved weights."""
    from lskd_vision.data import build_transforms, scan_image_folder, load_image

    _, ev = build_transforms("cifar", size, augment=False)
    samples = scan_image_folder(str(data / "test"))
    xs = np.stack([ev(load_image(p)).numpy().reshape(-1) for p, _ in samples.samples]).astype(np.float64)
    ys = np.array([y for _, y in samples.samples])
    w1, b1 = weights["body.1.weight"], weights["body.1.bias"]
    w2, b2 = weights["fc.weight"], weights["fc.bias"]
    h = np.maximum(xs @ w1.T + b1, 0.0)
    z = h @ w2.T + b2
    z -= z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    return p, ys, h, w2


def test_vision_stability_cli_matches_the_formula(tmp_path):
    data = _tiny_image_folder(tmp_path / "imgs")
    ck = tmp_path / "model.pt"
    weights = _vision_checkpoint(ck, data, seed=3)
    out = tmp_path / "st.json"
    proc = run_cli(["lskd-stability", ck, "--split", "test", "--batch-size", "4", "--json", out])
    assert "1-S" in proc.stdout
    res = json.loads(out.read_text())
    p, y, _, _ = _direct_vision_probs(weights, data)
    want, per = stability_direct(p, y)
    assert res["kind"] == "vision"
    assert res["counts"] == [5, 4, 6]
    assert res["one_minus_S"] == pytest.approx(want, rel=1e-5, abs=1e-9)
    assert res["S"] == pytest.approx(1 - want, rel=1e-6)
    for c, v in per.items():
        assert res["per_class"][c] == pytest.approx(v, rel=1e-5, abs=1e-9)
    # the class means are the per-class mean softmax vectors (Fig. 4)
    np.testing.assert_allclose(np.array(res["class_means"]), np.stack([p[y == c].mean(0) for c in range(3)]),
                               rtol=1e-5, atol=1e-7)
    assert res["accuracy"] == pytest.approx(100.0 * (p.argmax(1) == y).mean())
    assert res["mean_entropy"] == pytest.approx(float(-(p * np.log(p)).sum(1).mean()), rel=1e-5)
    assert want > 1e-3  # the check is not vacuous


def test_vision_features_and_projection_use_the_classifier_templates(tmp_path):
    from lskd_study.stability import vision_stability

    data = _tiny_image_folder(tmp_path / "imgs")
    ck = tmp_path / "model.pt"
    weights = _vision_checkpoint(ck, data, seed=4)
    res = vision_stability(str(ck), split="test", keep_features_of=[0, 2], max_features_per_class=3)
    p, y, h, w2 = _direct_vision_probs(weights, data)
    np.testing.assert_allclose(res["classifier_weight"], w2, rtol=1e-6)
    assert sorted(res["feature_labels"].tolist()) == [0, 0, 0, 2, 2, 2]
    want = np.concatenate([h[y == 0][:3], h[y == 2][:3]])
    np.testing.assert_allclose(np.sort(res["features"], axis=0), np.sort(want, axis=0), rtol=1e-5, atol=1e-6)


def test_plot_cli_writes_each_figure(tmp_path):
    data = _tiny_image_folder(tmp_path / "imgs")
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    _vision_checkpoint(a, data, seed=5)
    _vision_checkpoint(b, data, seed=6)
    outs = {}
    for name, args in {
        "projection": ["projection", "--with-ls", a, "--without-ls", b, "--classes", "a,b,c"],
        "mean": ["mean-softmax", "--with-ls", a, "--without-ls", b],
        "rel": ["reliability", f"x={a}", f"y={b}"],
        "temp": ["temperature", "LS=1:50,2:48,4:45", "no LS=1:49,2:49,4:48"],
    }.items():
        outs[name] = tmp_path / f"{name}.png"
        run_cli(["lskd-plot", *args, "-o", outs[name]])
    for p in outs.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert_png_drawn(p)  # something was drawn, not a blank canvas or bare axes
    # curves from a vision run folder's metrics.csv and from a fairseq log
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,train_loss,val_top1\n1,2.0,30\n2,1.5,40\n")
    log = tmp_path / "train.log"
    log.write_text("2026 | INFO | train | epoch 001 | loss 9.1 | nll_loss 8.9 | num_updates 10\n"
                   "2026 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 8.5 | nll_loss 8.2\n"
                   "2026 | INFO | train | epoch 002 | loss 8.1 | nll_loss 7.9 | num_updates 20\n"
                   "2026 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 7.5 | nll_loss 7.2\n")
    from lskd_study.figures import fairseq_curve

    c = fairseq_curve(str(log), "x")
    assert c["epoch"] == [1, 2] and c["train_loss"] == [9.1, 8.1] and c["valid"] == [8.2, 7.2]
    out = tmp_path / "curves.png"
    run_cli(["lskd-plot", "curves", f"vision={run}", f"nmt={log}", "-o", out])
    assert out.stat().st_size > 1000
    assert_png_drawn(out)


def _drawn_figures(monkeypatch, argv):
    """Run lskd-plot in this process and keep the figures it saves (their lines and bars)."""
    from lskd_study import plots
    from lskd_study.cli.plot import main

    figs = []
    save = plots._save

    def keep(fig, path):
        figs.append([[(list(map(float, ln.get_xdata())), list(map(float, ln.get_ydata())))
                      for ln in ax.get_lines()]
                     for ax in fig.axes])
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    assert main(argv) in (0, None)
    assert len(figs) == 1
    return figs[0]


def test_plotted_lines_hold_the_data(tmp_path, monkeypatch):
    """The temperature and curve figures draw one line per series, through the given points."""
    (ax,) = _drawn_figures(monkeypatch, ["temperature", "LS=1:50,2:48,4:45", "no LS=1:49,2:49,4:48",
                                         "-o", str(tmp_path / "t.png")])
    assert ax == [([1.0, 2.0, 4.0], [50.0, 48.0, 45.0]), ([1.0, 2.0, 4.0], [49.0, 49.0, 48.0])]
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,train_loss,val_top1\n1,2.0,30\n2,1.5,40\n")
    loss, metric = _drawn_figures(monkeypatch, ["curves", f"vision={run}", "-o", str(tmp_path / "c.png")])
    assert loss == [([1.0, 2.0], [2.0, 1.5])] and metric == [([1.0, 2.0], [30.0, 40.0])]
    assert_png_drawn(tmp_path / "t.png")
    assert_png_drawn(tmp_path / "c.png")


# ------------------------------------------------------------------ fairseq
def _direct_fairseq(ckpt: Path, data: Path, top: int):
    """Teacher-forced token distributions computed one sentence at a time, with fairseq's own
    model loading and get_normalized_probs (not lskd's Teacher), then Eq. 2 in numpy."""
    import lskd_fairseq.tasks  # noqa: F401  (torch >= 2.6 checkpoint loading)
    from fairseq import checkpoint_utils

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)], arg_overrides={"data": str(data)})
    model = models[0].eval()
    tgt = task.target_dictionary
    cand = sorted(range(tgt.nspecial, len(tgt)), key=lambda i: (-tgt.count[i], i))[:top]
    cls = {t: k for k, t in enumerate(cand)}
    task.load_dataset("valid")
    ds = task.dataset("valid")
    ps, ys = [], []
    with torch.no_grad():
        for i in range(len(ds)):
            sample = ds.collater([ds[i]])
            out = model(**sample["net_input"])
            prob = model.get_normalized_probs(out, log_probs=False)[0].double().numpy()
            for pos, tok in enumerate(sample["target"][0].tolist()):
                if tok in cls:
                    ps.append(prob[pos])
                    ys.append(cls[tok])
    return np.stack(ps), np.array(ys), cand


def test_fairseq_stability_cli_matches_the_formula(nmt_data, nmt_teacher, tmp_path):
    out = tmp_path / "st.json"
    proc = run_cli(["lskd-stability", nmt_teacher, "--data", nmt_data, "--split", "valid",
                    "--top-tokens", "30", "--json", out])
    assert "1-S" in proc.stdout
    res = json.loads(out.read_text())
    p, y, cand = _direct_fairseq(nmt_teacher, nmt_data, 30)
    want, per = stability_direct(p, y)
    assert res["kind"] == "fairseq"
    assert res["class_token_ids"] == cand
    assert res["num_tokens_in_classes"] == len(y)
    assert res["one_minus_S"] == pytest.approx(want, rel=1e-4)
    for c, v in per.items():
        assert res["per_class"][c] == pytest.approx(v, rel=1e-4, abs=1e-10)
    assert sum(res["counts"]) == len(y)
    assert want > 0


def test_fairseq_stability_rejects_a_missing_checkpoint(tmp_path):
    proc = run_cli(["lskd-stability", tmp_path / "nope.pt", "--kind", "fairseq"], check=False)
    assert proc.returncode != 0
    assert "not found" in (proc.stderr + proc.stdout)


# ------------------------------------------------------------------ report helpers
def test_paired_bootstrap_uses_sacrebleus_significance_api():
    import sacrebleu

    from lskd_study.bootstrap import paired_bootstrap

    refs = ["a cat sits on the mat", "the dog runs in the park", "two men play football", "a red car"] * 5
    a = ["a cat sits on a mat", "the dog runs in a park", "two men play soccer", "a red car"] * 5
    b = ["a cat on the mat", "dog runs park", "men play football", "the red car"] * 5
    r = paired_bootstrap(a, b, refs, n=200)
    want = sacrebleu.corpus_bleu(a, [refs]).score - sacrebleu.corpus_bleu(b, [refs]).score
    assert r["diff"] == pytest.approx(want, abs=1e-9)
    assert r["a"] == pytest.approx(sacrebleu.corpus_bleu(a, [refs]).score)
    assert 0 < r["p_value"] < 0.05  # a is better on every sentence
    assert "bs:200" in r["signature"]
    # identical systems: no difference, and no evidence of one
    same = paired_bootstrap(a, a, refs, n=50)
    assert same["diff"] == 0 and same["p_value"] == 1.0
    with pytest.raises(ValueError):
        paired_bootstrap(a[:-1], b, refs, n=10)


def test_plot_cli_silences_only_named_deprecation_warnings():
    """lskd-plot no longer ignores every warning in the process: only the libraries' deprecations."""
    import warnings

    from lskd_fairseq.warning_filters import silence_known_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        silence_known_warnings()
        warnings.warn("a user-facing problem", UserWarning)
        warnings.warn_explicit("old API", DeprecationWarning, "x.py", 1, module="fairseq.models")
        warnings.warn_explicit("old torch API", FutureWarning, "y.py", 1, module="torch.serialization")
    messages = [str(w.message) for w in caught]
    assert messages == ["a user-facing problem"]
    src = Path(__file__).resolve().parent.parent / "study" / "cli" / "plot.py"
    assert 'filterwarnings("ignore")' not in src.read_text()
