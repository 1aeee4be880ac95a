"""lskd-vision-train end to end on tiny generated images: teacher, KD student, LS, resume."""

import csv
import json
import math
import os
import stat

import pytest
import torch
import torch.nn.functional as F

from lskd_fairseq.losses import label_smoothed_nll_loss
from lskd_vision import data as D
from lskd_vision.engine import TeacherEnsemble, load_checkpoint_model, predict
from lskd_vision.models import build_model, get_classifier
from lskd_vision.report import table as report_table
from lskd_vision.synthetic import make_image_folder
from lskd_vision import train as train_module
from lskd_vision.binary import BinaryConv2d
from lskd_vision.train import main

FAST = ["--workers", "0", "--no-progress", "--batch-size", "16", "--cache-images", "yes"]
CHANCE = 25.0  # 4 classes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("tiny") / "data"), num_classes=4, per_class=24, test_per_class=8)


def train(data, out, *extra):
    rc = main([data, "--output", str(out), *FAST, *extra])
    assert rc == 0
    return json.load(open(os.path.join(out, "metrics.json")))


@pytest.fixture(scope="module")
def teacher(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    m = train(tiny, out, "--model", "resnet8", "--epochs", "3", "--lr", "0.05")
    return str(out), m


@pytest.fixture(scope="module")
def ls_teacher(tiny, tmp_path_factory):
    # no --ls-convention: the default is torch's/torchvision's uniform eps/K
    out = tmp_path_factory.mktemp("ls_teacher") / "run"
    m = train(tiny, out, "--model", "mlp", "--epochs", "3", "--lr", "0.05", "--label-smoothing", "0.2")
    return str(out), m


@pytest.fixture(scope="module")
def fairseq_ls_run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("fairseq_ls") / "run"
    m = train(tiny, out, "--model", "mlp", "--epochs", "1", "--lr", "0.05",
              "--label-smoothing", "0.2", "--ls-convention", "fairseq")
    return str(out), m


def test_teacher_trains_above_chance_and_writes_outputs(teacher):
    out, m = teacher
    assert m["test"]["top1"] > CHANCE + 25, m["test"]["top1"]
    assert m["val"]["top1"] > CHANCE
    for k in ("top1", "top5", "ece", "nll_loss", "ls_loss", "reliability"):
        assert k in m["test"]
    for f in ("checkpoint_last.pt", "checkpoint_best.pt", "config.json", "metrics.csv", "metrics.json"):
        assert os.path.isfile(os.path.join(out, f)), f
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    rows = list(csv.DictReader(open(os.path.join(out, "metrics.csv"))))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    ckpt = torch.load(os.path.join(out, "checkpoint_best.pt"), weights_only=True)
    assert ckpt["config"]["arch"] == "resnet8" and ckpt["config"]["num_classes"] == 4
    assert ckpt["epoch"] == m["best_epoch"]
    # best = highest val top-1 over epochs (the test split never chooses)
    best_val = max(float(r["val_top1"]) for r in rows)
    assert float(rows[m["best_epoch"] - 1]["val_top1"]) == best_val
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["classes"] == [f"class_{c}" for c in range(4)]


def test_kd_student_trains_above_chance_without_teacher_in_checkpoint(tiny, teacher, tmp_path):
    t_out, _ = teacher
    m = train(tiny, tmp_path / "s", "--model", "resnet8", "--epochs", "3", "--lr", "0.05",
              "--teacher", os.path.join(t_out, "checkpoint_best.pt"), "--paper-kd")
    assert m["test"]["top1"] > CHANCE + 15, m["test"]["top1"]
    cfg = m["config"]
    assert cfg["kd_alpha"] == 1.0 and cfg["kd_temperature"] == 1.0 and cfg["kd_topk"] == 0
    assert m["test"]["kd_loss"] > 0
    rows = list(csv.DictReader(open(tmp_path / "s" / "metrics.csv")))
    # alpha = 1: the optimised loss is the KD term alone
    assert all(math.isclose(float(r["train_loss"]), float(r["train_kd_loss"]), rel_tol=1e-4) for r in rows)
    ckpt = torch.load(tmp_path / "s" / "checkpoint_last.pt", weights_only=True)
    assert set(ckpt["model"]) == set(build_model("resnet8", 4).state_dict())


@pytest.mark.parametrize("run,convention", [("ls_teacher", "uniform"), ("fairseq_ls_run", "fairseq")])
def test_ls_loss_reported_is_the_shared_definition(tiny, run, convention, request):
    out, m = request.getfixturevalue(run)
    model, cfg = load_checkpoint_model(os.path.join(out, "checkpoint_best.pt"))
    assert cfg["ls_convention"] == convention and cfg["label_smoothing"] == 0.2
    assert json.load(open(os.path.join(out, "config.json")))["ls_convention"] == convention
    assert m["config"]["ls_convention"] == convention
    splits = D.find_splits(tiny)
    _, ev = D.build_transforms("cifar", 16, augment=False)
    loader = torch.utils.data.DataLoader(D.ImageDataset(splits.test, ev), batch_size=7)
    out_ = predict(model, loader)
    lp = F.log_softmax(out_["logits"], -1)
    ls, nll = label_smoothed_nll_loss(lp, out_["labels"], 0.2, convention=convention)
    other, _ = label_smoothed_nll_loss(lp, out_["labels"], 0.2,
                                       convention="fairseq" if convention == "uniform" else "uniform")
    n = len(splits.test)
    assert m["test"]["ls_loss"] == pytest.approx(ls.item() / n, rel=1e-5)
    assert m["test"]["ls_loss"] != pytest.approx(other.item() / n, rel=1e-5)
    assert m["test"]["nll_loss"] == pytest.approx(nll.item() / n, rel=1e-5)
    assert m["test"]["top1"] == pytest.approx(100.0 * (out_["logits"].argmax(-1) == out_["labels"]).float().mean().item())
    assert f"0.2 ({convention})" in report_table([out])


def test_predict_gives_penultimate_features(teacher, tiny):
    model, _ = load_checkpoint_model(os.path.join(teacher[0], "checkpoint_best.pt"))
    splits = D.find_splits(tiny)
    _, ev = D.build_transforms("cifar", 16, augment=False)
    loader = torch.utils.data.DataLoader(D.ImageDataset(splits.test, ev), batch_size=10)
    out = predict(model, loader)
    assert out["features"].shape == (32, 64)
    fc = get_classifier(model)
    torch.testing.assert_close(fc(out["features"]), out["logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["probs"].sum(-1), torch.ones(32))


def test_teacher_ensemble_is_log_mean_softmax():
    torch.manual_seed(0)
    a, b = build_model("mlp", 3, img_size=4), build_model("mlp", 3, img_size=4)
    ens = TeacherEnsemble([a, b], [{}, {}], ["a", "b"])
    ens.train()
    assert not ens.training and not any(p.requires_grad for p in ens.parameters())
    x = torch.randn(5, 3, 4, 4)
    want = ((a(x).softmax(-1) + b(x).softmax(-1)) / 2).log()
    torch.testing.assert_close(ens(x), want, rtol=1e-5, atol=1e-6)


def test_student_of_ensemble_and_topk_temperature(tiny, teacher, ls_teacher, tmp_path):
    m = train(tiny, tmp_path / "e", "--model", "mlp", "--epochs", "1", "--lr", "0.05",
              "--teacher", os.path.join(teacher[0], "checkpoint_best.pt"), os.path.join(ls_teacher[0], "checkpoint_best.pt"),
              "--kd-alpha", "0.5", "--kd-temperature", "2", "--kd-topk", "2")
    assert len(m["config"]["teachers"]) == 2
    row = next(csv.DictReader(open(tmp_path / "e" / "metrics.csv")))
    want = 0.5 * float(row["train_ls_loss"]) + 0.5 * float(row["train_kd_loss"])
    assert float(row["train_loss"]) == pytest.approx(want, rel=1e-4)


def _state(path):
    return torch.load(path, weights_only=True)


def test_resume_equals_uninterrupted(tiny, teacher, tmp_path):
    # batch norm, augmentation and a KD teacher: all randomness and state must come back
    args = ["--model", "resnet8", "--epochs", "2", "--lr", "0.05", "--label-smoothing", "0.1",
            "--teacher", os.path.join(teacher[0], "checkpoint_best.pt"), "--kd-alpha", "0.7"]
    full = train(tiny, tmp_path / "full", *args)
    assert main([tiny, "--output", str(tmp_path / "split"), *FAST, *args, "--stop-after", "1"]) == 0
    assert not os.path.exists(tmp_path / "split" / "metrics.json")
    assert _state(tmp_path / "split" / "checkpoint_last.pt")["epoch"] == 1
    resumed = train(tiny, tmp_path / "split", *args, "--resume")
    a, b = _state(tmp_path / "full" / "checkpoint_last.pt"), _state(tmp_path / "split" / "checkpoint_last.pt")
    assert b["epoch"] == 2
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6, msg=k)
    for ra, rb in zip(a["history"], b["history"]):
        for k in ("train_loss", "train_kd_loss", "val_top1", "val_nll_loss"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-9), k
    assert full["test"]["top1"] == resumed["test"]["top1"]
    assert full["best_epoch"] == resumed["best_epoch"]


def test_long_tail_run_reports_shot_groups(tmp_path):
    data = make_image_folder(str(tmp_path / "lt"), num_classes=5, per_class=40, test_per_class=4, size=8)
    m = train(data, tmp_path / "run", "--model", "mlp", "--epochs", "1", "--imbalance-factor", "10",
              "--shot-thresholds", "20", "8", "--val-fraction", "0.1")
    counts = m["dataset"]["train_counts"]
    assert counts == [int(math.floor(36 * 10 ** (-c / 4) + 1e-9)) for c in range(5)] == [36, 20, 11, 6, 3]
    t = m["test"]
    assert (t["many_shot_classes"], t["medium_shot_classes"], t["few_shot_classes"]) == (1, 2, 2)
    per = t["per_class_top1"]
    assert t["few_shot_top1"] == pytest.approx((per[3] + per[4]) / 2)
    assert t["many_shot_top1"] == pytest.approx(per[0])


def test_two_step_binary_student_of_ls_teacher(tmp_path, monkeypatch):
    # ReActNet-18 is large: 8x8 images, 2 classes, a few steps
    data = make_image_folder(str(tmp_path / "d"), num_classes=2, per_class=9, test_per_class=2, size=8)
    fast = ["--batch-size", "8", "--val-fraction", "0.12"]
    train(data, tmp_path / "t", "--model", "mlp", "--epochs", "1", "--label-smoothing", "0.1", *fast)
    # step 1 (real weights) scores higher on val than step 2: the kept network must still be step 2's
    real_evaluate = train_module.evaluate
    per_epoch_val_top1 = iter([90.0, 10.0])

    def evaluate(*a, **kw):
        res = real_evaluate(*a, **kw)
        if kw.get("shot_groups") is None:  # the per-epoch validation that chooses the best checkpoint
            res["top1"] = next(per_epoch_val_top1)
        return res

    monkeypatch.setattr(train_module, "evaluate", evaluate)
    m = train(data, tmp_path / "bin", "--model", "reactnet18", "--small-input-stem", "--epochs", "2",
              "--opt", "adam", "--lr", "1e-3", "--weight-decay", "0", "--sched", "linear", *fast,
              "--teacher", str(tmp_path / "t" / "checkpoint_best.pt"), "--paper-kd")
    rows = list(csv.DictReader(open(tmp_path / "bin" / "metrics.csv")))
    assert [r["binary_weights"] for r in rows] == ["False", "True"]
    assert [float(r["val_top1"]) for r in rows] == [90.0, 10.0]
    assert m["config"]["binary_step"] == "two-step"
    assert all(math.isfinite(float(r["train_kd_loss"])) for r in rows)
    ck = torch.load(tmp_path / "bin" / "checkpoint_best.pt", weights_only=True)
    model, cfg = load_checkpoint_model(tmp_path / "bin" / "checkpoint_best.pt")
    # checkpoint_best.pt and metrics.json are the step-2 (binary-weight) network
    assert ck["epoch"] == 2 and m["best_epoch"] == 2
    assert cfg["binary_weights"] is True
    assert all(mod.binary_weights for mod in model.modules() if isinstance(mod, BinaryConv2d))


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_run_files_get_the_users_umask_mode(tiny, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        train(tiny, tmp_path / "run", "--model", "mlp", "--epochs", "1")
    finally:
        os.umask(old)
    for f in ("config.json", "metrics.json", "metrics.csv", "checkpoint_last.pt", "checkpoint_best.pt"):
        assert stat.S_IMODE(os.stat(tmp_path / "run" / f).st_mode) == mode, f
