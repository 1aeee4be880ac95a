"""Bad inputs to lskd-vision-train: one row per mistake.

Each row: the command's arguments, the bad input, the message expected. Every row
asserts a non-zero exit, one line naming the problem and the fix (no traceback,
no advice to load with weights_only=False), and that nothing a rerun would trust
(a checkpoint, config.json, metrics.json) is left behind (or, when resuming, that
the run folder is left exactly as it was).
"""

import argparse
import os
import shutil

import pytest
import torch

from lskd_vision.synthetic import make_image_folder
from lskd_vision.train import main

FAST = ["--workers", "0", "--no-progress", "--batch-size", "8", "--epochs", "1", "--model", "mlp",
        "--cache-images", "yes"]
TRUSTED = ("checkpoint_last.pt", "checkpoint_best.pt", "config.json", "metrics.json", "metrics.csv")


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """Paths the rows refer to: good data, a finished run (teacher), broken variants."""
    base = tmp_path_factory.mktemp("bad")
    f = {"tmp": str(base)}
    f["data"] = make_image_folder(str(base / "data"), num_classes=4, per_class=6, test_per_class=1, size=8)
    f["three"] = make_image_folder(str(base / "three"), num_classes=3, per_class=6, test_per_class=1, size=8)
    f["empty_class"] = make_image_folder(str(base / "empty_class"), num_classes=2, per_class=6, size=8)
    os.makedirs(os.path.join(f["empty_class"], "train", "class_7"))
    f["corrupt"] = make_image_folder(str(base / "corrupt"), num_classes=2, per_class=6, size=8, ext="jpg")
    f["bad_image"] = os.path.join(f["corrupt"], "train", "class_1", "0002.jpg")
    with open(f["bad_image"], "r+b") as fh:
        fh.truncate(40)  # a JPEG cut short
    f["run"] = str(base / "teacher")
    assert main([f["data"], "--output", f["run"], *FAST]) == 0
    f["teacher"] = os.path.join(f["run"], "checkpoint_best.pt")
    # a fairseq checkpoint as fairseq writes it: Python objects besides tensors
    f["fairseq"] = str(base / "fairseq_checkpoint_best.pt")
    torch.save({"args": argparse.Namespace(arch="transformer", task="translation"),
                "model": {"encoder.embed_tokens.weight": torch.zeros(4, 2)}, "optimizer_history": []}, f["fairseq"])
    f["plain"] = str(base / "resnet18.pth")
    torch.save({"fc.weight": torch.zeros(4, 8)}, f["plain"])
    f["truncated"] = str(base / "truncated.pt")
    blob = open(f["teacher"], "rb").read()
    open(f["truncated"], "wb").write(blob[: len(blob) // 2])
    return f


# (row id, arguments given fx, fragments every one of which the message must contain)
ROWS = [
    ("missing data folder", lambda f: [f["tmp"] + "/nope"], ["does not exist", "give a folder with train/<class>/<image>"]),
    ("empty class folder", lambda f: [f["empty_class"]], ["class_7", "contains no images", "add its images or remove"]),
    ("corrupt image", lambda f: [f["corrupt"]], ["cannot read image", "0002.jpg", "replace or remove the file"]),
    ("teacher of other classes", lambda f: [f["three"], "--teacher", f["teacher"]],
     ["has 4 classes but the student's dataset has 3", "trained on the same classes"]),
    ("fairseq checkpoint as teacher", lambda f: [f["data"], "--teacher", f["fairseq"]],
     ["is not an lskd_vision checkpoint", "format='lskd_vision/1'", "--teacher-arch"]),
    ("plain state dict as teacher", lambda f: [f["data"], "--teacher", f["plain"]],
     ["is not an lskd_vision checkpoint", "--teacher-arch ARCH"]),
    ("missing teacher", lambda f: [f["data"], "--teacher", f["tmp"] + "/none.pt"], ["--teacher file", "does not exist"]),
    ("truncated teacher", lambda f: [f["data"], "--teacher", f["truncated"]], ["truncated or corrupt", "copy it again"]),
    ("alpha > 1", lambda f: [f["data"], "--teacher", f["teacher"], "--kd-alpha", "1.5"], ["--kd-alpha must be in [0, 1], got 1.5"]),
    ("alpha < 0", lambda f: [f["data"], "--teacher", f["teacher"], "--kd-alpha", "-0.1"], ["--kd-alpha must be in [0, 1]"]),
    ("T = 0", lambda f: [f["data"], "--teacher", f["teacher"], "--kd-temperature", "0"], ["--kd-temperature must be > 0, got 0"]),
    ("T nan", lambda f: [f["data"], "--teacher", f["teacher"], "--kd-temperature", "nan"], ["--kd-temperature must be > 0"]),
    ("top-k < 0", lambda f: [f["data"], "--teacher", f["teacher"], "--kd-topk", "-1"], ["--kd-topk must be", "got -1"]),
    ("top-k > classes", lambda f: [f["data"], "--teacher", f["teacher"], "--kd-topk", "50"],
     ["--kd-topk 50 is larger than the number of classes (4)", "use --kd-topk 4 or less"]),
    ("eps = 1", lambda f: [f["data"], "--label-smoothing", "1"], ["--label-smoothing must be in [0, 1), got 1.0"]),
    ("eps < 0", lambda f: [f["data"], "--label-smoothing", "-0.1"], ["--label-smoothing must be in [0, 1)"]),
    ("lr < 0", lambda f: [f["data"], "--lr", "-0.1"], ["--lr must be > 0, got -0.1"]),
    ("lr inf", lambda f: [f["data"], "--lr", "inf"], ["--lr must be > 0, got inf"]),
    ("epochs 0", lambda f: [f["data"], "--epochs", "0"], ["--epochs must be >= 1, got 0"]),
    ("batch size 0", lambda f: [f["data"], "--batch-size", "0"], ["--batch-size must be >= 1, got 0"]),
    ("weight decay < 0", lambda f: [f["data"], "--weight-decay", "-1"], ["--weight-decay must be >= 0"]),
    ("momentum 1", lambda f: [f["data"], "--momentum", "1"], ["--momentum must be in [0, 1)"]),
    ("workers < 0", lambda f: [f["data"], "--workers", "-2"], ["--workers must be >= 0"]),
    ("warmup < 0", lambda f: [f["data"], "--warmup-epochs", "-1"], ["--warmup-epochs must be >= 0"]),
    ("min lr > lr", lambda f: [f["data"], "--lr", "0.01", "--min-lr", "0.1"], ["--min-lr (0.1) must not exceed --lr (0.01)"]),
    ("teacher-arch without teacher", lambda f: [f["data"], "--teacher-arch", "resnet18"], ["--teacher-arch needs --teacher"]),
]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_refused_in_one_line(row, fx, tmp_path, capsys):
    _, args, fragments = row
    out = tmp_path / "out"
    argv = args(fx)
    assert main([argv[0], "--output", str(out), *FAST, *argv[1:]]) != 0
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lskd-vision-train: error: "), err
    for frag in fragments:
        assert frag in err, err
    assert "Traceback" not in err and "weights_only=False" not in err
    assert not any(os.path.exists(out / name) for name in TRUSTED), os.listdir(out)


def _snapshot(folder):
    return {n: (os.stat(os.path.join(folder, n)).st_mtime_ns, open(os.path.join(folder, n), "rb").read())
            for n in sorted(os.listdir(folder))}


@pytest.mark.parametrize("change,field", [(["--label-smoothing", "0.1"], "label_smoothing (0.0 -> 0.1)"),
                                          (["--ls-convention", "fairseq"], "ls_convention ('uniform' -> 'fairseq')"),
                                          (["--lr", "0.05"], "lr (0.1 -> 0.05)")])
def test_resume_with_changed_settings_is_refused_and_leaves_the_run_as_it_was(change, field, fx, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fx["run"], run)
    before = _snapshot(run)
    assert main([fx["data"], "--output", str(run), *FAST, "--resume", *change]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for frag in ("cannot resume", "options differ from the checkpoint's", field, "rerun with the checkpoint's options"):
        assert frag in err, err
    assert _snapshot(run) == before


def test_help_of_on_off_flags_shows_no_default():
    import re

    from lskd_vision.train import build_parser

    text = " ".join(build_parser().format_help().split())
    no_augment = re.search(r"--no-augment (.*?) --cache-images", text).group(1)
    assert "augmentation is on unless this is given" in no_augment and "default" not in no_augment
    assert "(default: True)" not in text and "(default: False)" not in text
    assert "--ls-convention {uniform,fairseq}" in text and "(default: uniform)" in text
