"""Pretrained torchvision and timm weights (local state dicts the tests save, random weights)
as teachers (--teacher FILE --teacher-arch ARCH, alone or in a mixed ensemble), as a
student's starting point (--model ARCH --pretrained FILE), and in lskd-stability --arch;
a wrong class count or a wrong architecture for the file is refused in one line."""

import json
import os
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision

from lskd_fairseq.losses import ensemble_log_probs
from lskd_study.cli.stability import main as stability_main
from lskd_vision import data as D
from lskd_vision.engine import InputView, load_teachers, style_input
from lskd_vision.models import build_model, check_arch
from lskd_vision.synthetic import make_image_folder
from lskd_vision.train import main

FAST = ["--workers", "0", "--no-progress", "--batch-size", "16", "--epochs", "1", "--cache-images", "yes"]
TV_ARCH = "mobilenet_v3_small"  # the smallest torchvision classifier worth the name
TIMM_ARCH = "timm:test_resnet"  # timm's own tiny test model: mean/std 0.5, 160 px


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("pre") / "data"), num_classes=4, per_class=9,
                             test_per_class=2, size=32)


def _save(model, path):
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return str(path)


@pytest.fixture(scope="module")
def tv_file(tmp_path_factory):
    torch.manual_seed(1)
    return _save(torchvision.models.get_model(TV_ARCH, weights=None, num_classes=4),
                 tmp_path_factory.mktemp("w") / "mobilenet_v3_small-4.pth")


@pytest.fixture(scope="module")
def tv_file_10_classes(tmp_path_factory):
    return _save(torchvision.models.get_model(TV_ARCH, weights=None, num_classes=10),
                 tmp_path_factory.mktemp("w") / "mobilenet_v3_small-10.pth")


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    timm = pytest.importorskip("timm")
    pytest.importorskip("safetensors")
    torch.manual_seed(2)
    return _save(timm.create_model("test_resnet", pretrained=False, num_classes=4),
                 tmp_path_factory.mktemp("w") / "test_resnet-4.safetensors")


@pytest.fixture(scope="module")
def lskd_teacher(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("lskd_t") / "run"
    assert main([data, "--output", str(out), *FAST, "--model", "mlp"]) == 0
    return str(out / "checkpoint_best.pt")


def _no_run_files(out):
    return not os.path.exists(out) or not [f for f in os.listdir(out) if f.endswith((".pt", ".json"))]


# ------------------------------------------------------------------ the teacher's view
def test_input_view_is_the_teachers_normalisation_and_resolution():
    torch.manual_seed(0)
    raw = torch.rand(2, 3, 32, 32)
    student = style_input("cifar", 32)
    ms, ss = torch.tensor(student["mean"]).view(1, 3, 1, 1), torch.tensor(student["std"]).view(1, 3, 1, 1)
    teacher = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "input_size": 48}
    view = InputView(student, teacher)
    want = F.interpolate((raw - 0.5) / 0.5, size=(48, 48), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(view((raw - ms) / ss), want, rtol=1e-5, atol=1e-5)
    assert view.describe() == "the student's batch re-normalised and resized to 48x48"
    same = InputView(student, dict(student))
    x = torch.randn(2, 3, 32, 32)
    assert same.identity and torch.equal(same(x), x)


def test_teachers_from_files_mix_in_one_ensemble(data, tv_file, timm_file, lskd_teacher):
    student = style_input("cifar", 32)
    ens = load_teachers([lskd_teacher, tv_file, timm_file], 4, ["class_0", "class_1", "class_2", "class_3"],
                        archs=["lskd", TV_ARCH, TIMM_ARCH], student_input=student)
    from lskd_vision.engine import load_checkpoint_model
    from lskd_vision.weights import read_state_dict

    mlp, _ = load_checkpoint_model(lskd_teacher)
    tv = build_model(TV_ARCH, 4).eval()
    tv.load_state_dict(torch.load(tv_file, weights_only=True))
    tm = build_model(TIMM_ARCH, 4).eval()
    tm.load_state_dict(read_state_dict(timm_file))
    ms, ss = torch.tensor(student["mean"]).view(1, 3, 1, 1), torch.tensor(student["std"]).view(1, 3, 1, 1)
    raw = torch.rand(3, 3, 32, 32)
    x = (raw - ms) / ss

    def view(mean, size):
        return F.interpolate((raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225] if mean[0] != 0.5 else [0.5] * 3).view(1, 3, 1, 1),
            size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    with torch.no_grad():
        want = ensemble_log_probs([mlp(x), tv(view(list(D.IMAGENET_MEAN), 224)), tm(view([0.5] * 3, 160))])
    torch.testing.assert_close(ens(x), want, rtol=1e-4, atol=1e-4)
    inputs = [c.get("input") for c in ens.configs]
    assert inputs[0]["view"] == "the student's batch as is"
    assert inputs[1]["input_size"] == 224 and inputs[1]["mean"] == list(D.IMAGENET_MEAN)
    assert "torchvision" in inputs[1]["source"]
    assert inputs[2]["input_size"] == 160 and inputs[2]["mean"] == [0.5, 0.5, 0.5] and "timm" in inputs[2]["source"]


# ------------------------------------------------------------------ training
def test_student_of_a_mixed_ensemble_records_each_teachers_input(data, tv_file, timm_file, lskd_teacher, tmp_path):
    out = tmp_path / "s"
    assert main([data, "--output", str(out), *FAST, "--model", "mlp", "--kd-alpha", "0.5",
                 "--teacher", lskd_teacher, tv_file, timm_file, "--teacher-arch", "lskd", TV_ARCH, TIMM_ARCH]) == 0
    cfg = json.load(open(out / "config.json"))
    assert cfg["teacher_archs"] == ["lskd", TV_ARCH, TIMM_ARCH]
    assert [t["input_size"] for t in cfg["teacher_inputs"]] == [32, 224, 160]
    assert "re-normalised and resized to 224x224" in cfg["teacher_inputs"][1]["view"]
    m = json.load(open(out / "metrics.json"))
    assert m["test"]["kd_loss"] > 0 and m["config"]["teacher_archs"] == cfg["teacher_archs"]


@pytest.mark.parametrize("arch,which", [(TV_ARCH, "tv_file"), (TIMM_ARCH, "timm_file")])
def test_teacher_from_one_file(data, arch, which, request, tmp_path):
    path = request.getfixturevalue(which)
    out = tmp_path / "s"
    assert main([data, "--output", str(out), *FAST, "--model", "mlp", "--teacher", path, "--teacher-arch", arch,
                 "--paper-kd"]) == 0
    m = json.load(open(out / "metrics.json"))
    assert m["config"]["teacher_archs"] == [arch] and m["test"]["kd_loss"] > 0


@pytest.mark.parametrize("arch,which,key", [(TV_ARCH, "tv_file", "features.0.0.weight"),
                                            (TIMM_ARCH, "timm_file", "conv1.0.weight")])
def test_student_from_pretrained_file(data, arch, which, key, request, tmp_path):
    from lskd_vision.weights import read_state_dict

    path = request.getfixturevalue(which)
    out = tmp_path / "s"
    # lr 1e-9: after the step the backbone is still the file's
    assert main([data, "--output", str(out), *FAST, "--model", arch, "--pretrained", path, "--lr", "1e-9",
                 "--weight-decay", "0", "--momentum", "0"]) == 0
    got = torch.load(out / "checkpoint_last.pt", weights_only=True)["model"]
    torch.testing.assert_close(got[key], read_state_dict(path)[key], rtol=0, atol=1e-6)
    cfg = json.load(open(out / "config.json"))
    assert cfg["arch"] == arch and cfg["pretrained_input"]["input_size"] in (224, 160)


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("case", ["teacher_classes", "teacher_arch", "teacher_timm_file_as_tv", "student_arch",
                                  "lskd_ckpt_with_arch", "arch_count", "unknown_timm", "pickled_model"])
def test_wrong_file_or_architecture_is_refused(case, data, tv_file, tv_file_10_classes, timm_file, lskd_teacher,
                                               tmp_path, capsys):
    pickled = tmp_path / "model.pth"
    torch.save(build_model("mlp", 4, img_size=32), pickled)
    argv, fragments = {
        "teacher_classes": (["--teacher", tv_file_10_classes, "--teacher-arch", TV_ARCH],
                            ["with 10 classes", "the data has 4 classes"]),
        "teacher_arch": (["--teacher", tv_file, "--teacher-arch", "resnet18"],
                         ["does not hold resnet18 weights", "name the architecture the file was saved from"]),
        "teacher_timm_file_as_tv": (["--teacher", timm_file, "--teacher-arch", TV_ARCH],
                                    [f"does not hold {TV_ARCH} weights"]),
        "student_arch": (["--model", "resnet18", "--pretrained", tv_file], ["--pretrained", "does not hold resnet18 weights"]),
        "lskd_ckpt_with_arch": (["--teacher", lskd_teacher, "--teacher-arch", TV_ARCH],
                                ["is an lskd_vision checkpoint", "without --teacher-arch"]),
        "arch_count": (["--teacher", tv_file, lskd_teacher, "--teacher-arch", TV_ARCH],
                       ["1 architecture(s) for 2 --teacher", "one per teacher"]),
        "unknown_timm": (["--teacher", timm_file, "--teacher-arch", "timm:test_resnt"],
                         ["unknown timm model 'test_resnt'", "timm:test_resnet"]),
        "pickled_model": (["--model", "mlp", "--pretrained", str(pickled)], ["not a plain state dict", "state_dict()"]),
    }[case]
    out = tmp_path / "out"
    model = [] if "--model" in argv else ["--model", "mlp"]
    assert main([data, "--output", str(out), *FAST, *model, *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for f in fragments:
        assert f in err, err
    assert _no_run_files(out)


def test_timm_names_without_timm_name_the_extra(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(ValueError, match=r"needs the optional timm package.*pip install -e '\.\[timm\]'"):
        check_arch(TIMM_ARCH)
    assert main([data, "--output", str(tmp_path / "o"), *FAST, "--model", TIMM_ARCH]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "[timm]" in err, err


def test_setup_declares_the_timm_extra():
    setup = open(os.path.join(os.path.dirname(__file__), "..", "setup.py")).read()
    assert '"timm": ["timm==1.0.29"' in setup


# ------------------------------------------------------------------ lskd-stability --arch
def _independent_model(path, arch):
    """The weights in ``path`` in a model built by torchvision's or timm's own constructor."""
    if arch.startswith("timm:"):
        import timm
        from safetensors.torch import load_file

        model = timm.create_model(arch.split(":", 1)[1], pretrained=False, num_classes=4)
        model.load_state_dict(load_file(path))
    else:
        model = torchvision.models.get_model(arch, weights=None, num_classes=4)
        model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def _images(folder, cfg):
    """{class folder: (N, 3, H, W) batch} of ``folder``, preprocessed as the input config says."""
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(int(cfg["resize_size"]), interpolation=T.InterpolationMode(cfg.get("interpolation", "bilinear"))),
                    T.CenterCrop(int(cfg["input_size"])), T.ToTensor(), T.Normalize(cfg["mean"], cfg["std"])])
    return {c: torch.stack([tf(Image.open(os.path.join(folder, c, f)).convert("RGB"))
                            for f in sorted(os.listdir(os.path.join(folder, c)))])
            for c in sorted(os.listdir(folder))}


def _spread_weights(path, arch, folder, cfg, out):
    """The weights of ``path`` with batch-norm statistics measured on ``folder``'s images and the
    last linear layer scaled so that the logits vary by about 2 from image to image."""
    model = _independent_model(path, arch)
    x = torch.cat(list(_images(folder, cfg).values()))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average
    with torch.no_grad():
        model.train()
        model(x)
        model.eval()
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        scale = 2.0 / float(model(x).std(0).mean())
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    return _save(model, out)


def _direct_one_minus_s(path, arch, folder, cfg):
    """1 - S of Eq. 2, ``(1/K) sum_c (1/n_c) sum_{i in c} ||p_i - mean_{j in c} p_j||^2``, from the
    softmax of a model built here (torchvision's or timm's own constructor, not lskd's) on the
    images of ``folder``'s class folders, preprocessed as the reported input config says."""
    model = _independent_model(path, arch)
    per_class = []
    for x in _images(folder, cfg).values():
        with torch.no_grad():
            p = model(x).double().softmax(-1)
        per_class.append(float(((p - p.mean(0, keepdim=True)) ** 2).sum(1).mean()))
    return sum(per_class) / len(per_class)


@pytest.mark.parametrize("arch,which", [(TV_ARCH, "tv_file"), (TIMM_ARCH, "timm_file")])
def test_stability_of_a_state_dict(data, arch, which, request, tmp_path, capsys):
    path = request.getfixturevalue(which)
    js = tmp_path / "r.json"
    # a folder of class folders as is (here the test split)
    assert stability_main([path, "--arch", arch, "--data", os.path.join(data, "test"), "--json", str(js)]) == 0
    r = json.load(open(js))
    assert r["num_samples"] == 8 and r["classes"] == [f"class_{c}" for c in range(4)]
    assert 0.0 <= r["one_minus_S"] <= 1.0 and r["arch"] == arch
    assert r["input"]["input_size"] in (224, 160)
    # Eq. 2 computed here, in plain torch, on the model's own probabilities for the same images; on
    # weights whose outputs differ from image to image (freshly initialised ones give the same,
    # near-uniform softmax for every image: 1-S about 0, which any bug would also give)
    spread = _spread_weights(path, arch, os.path.join(data, "test"), r["input"],
                             tmp_path / ("spread_" + os.path.basename(path)))
    assert stability_main([spread, "--arch", arch, "--data", os.path.join(data, "test"), "--json", str(js)]) == 0
    got = json.load(open(js))["one_minus_S"]
    want = _direct_one_minus_s(spread, arch, os.path.join(data, "test"), r["input"])
    assert want > 1e-4, want
    assert got == pytest.approx(want, rel=1e-4, abs=0), (got, want)
    # a dataset root: its test split
    assert stability_main([path, "--arch", arch, "--data", data]) == 0
    assert "samples    : 8" in capsys.readouterr().out


def test_stability_refuses_wrong_class_count_and_missing_arch(data, tv_file_10_classes, capsys):
    assert stability_main([tv_file_10_classes, "--arch", TV_ARCH, "--data", data]) == 2
    err = capsys.readouterr().err
    assert "with 10 classes" in err and "the data has 4 classes" in err, err
    assert stability_main([tv_file_10_classes, "--data", data]) == 2
    assert "plain state dict: name its architecture with --arch" in capsys.readouterr().err


# ------------------------------------------------------------------ ImageNet's flat val/ layout, Table 1 recipe
WNIDS3 = ["n01440764", "n01443537", "n01484850"]


@pytest.fixture(scope="module")
def val_layouts(tmp_path_factory):
    """The same 6 images as class folders and as ImageNet's flat val/ with both kinds of labels file."""
    import numpy as np
    import scipy.io
    from PIL import Image

    base = tmp_path_factory.mktemp("inet_val")
    src = make_image_folder(str(base / "src"), num_classes=3, per_class=1, splits=("test",), test_per_class=2,
                            size=40, ext="jpg")
    flat, folders, devkit = base / "val", base / "val_folders", base / "devkit" / "data"
    for d in (flat, devkit):
        os.makedirs(d)
    # image i (1-based) has class (i - 1) % 3 after a shuffle of the order
    order = [(c, j) for j in range(2) for c in range(3)]
    csv_rows, gt = ["ImageId,PredictionString"], []
    ilsvrc_id = {WNIDS3[0]: 3, WNIDS3[1]: 1, WNIDS3[2]: 2}  # the devkit's IDs are not the sorted order
    for i, (c, j) in enumerate(order, 1):
        name = f"ILSVRC2012_val_{i:08d}"
        img = Image.open(os.path.join(src, "test", f"class_{c}", f"{j:04d}.jpg"))
        img.save(flat / f"{name}.JPEG")
        os.makedirs(folders / WNIDS3[c], exist_ok=True)
        img.save(folders / WNIDS3[c] / f"{name}.JPEG")
        csv_rows.append(f"{name},{WNIDS3[c]} 10 12 30 35 {WNIDS3[c]} 1 2 20 20")
        gt.append(str(ilsvrc_id[WNIDS3[c]]))
    (base / "LOC_val_solution.csv").write_text("\n".join(csv_rows) + "\n")  # beside val/, as Kaggle ships it
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(gt) + "\n")
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    rows = [(ilsvrc_id[w], w, w, "", 0, np.array([]), 0, 1) for w in WNIDS3]
    rows.append((1001, "n00001740", "entity", "", 3, np.array([1, 2, 3]), 5, 0))  # not a class: has children
    scipy.io.savemat(str(devkit / "meta.mat"), {"synsets": np.array(rows, dtype=[(f, "O") for f in fields])})
    return {"flat": str(flat), "folders": str(folders), "csv": str(base / "LOC_val_solution.csv"),
            "devkit_gt": str(devkit / "ILSVRC2012_validation_ground_truth.txt"), "base": str(base)}


@pytest.fixture(scope="module")
def tv_file_3(tmp_path_factory):
    torch.manual_seed(3)
    return _save(torchvision.models.get_model(TV_ARCH, weights=None, num_classes=3),
                 tmp_path_factory.mktemp("w") / "mobilenet_v3_small-3.pth")


def test_flat_val_layout_with_either_labels_file_equals_class_folders(val_layouts, tv_file_3, tmp_path):
    from lskd_study.imagenet_val import imagenet_val_samples

    by_folders = imagenet_val_samples(val_layouts["folders"])
    by_csv = imagenet_val_samples(val_layouts["flat"])  # LOC_val_solution.csv found beside val/
    by_devkit = imagenet_val_samples(val_layouts["flat"], val_layouts["devkit_gt"])
    assert by_folders.classes == by_csv.classes == by_devkit.classes == WNIDS3

    def labels(s):
        return {os.path.basename(p): y for p, y in s.samples}

    assert labels(by_csv) == labels(by_devkit) == labels(by_folders) and len(labels(by_csv)) == 6
    results = []
    for extra in ([], ["--labels", val_layouts["devkit_gt"]]):
        js = tmp_path / f"r{len(results)}.json"
        assert stability_main([tv_file_3, "--arch", TV_ARCH, "--data", val_layouts["flat"], *extra, "--json", str(js)]) == 0
        results.append(json.load(open(js)))
    js = tmp_path / "folders.json"
    assert stability_main([tv_file_3, "--arch", TV_ARCH, "--data", val_layouts["folders"], "--json", str(js)]) == 0
    results.append(json.load(open(js)))
    for r in results[1:]:
        for k in ("num_samples", "accuracy", "top5", "one_minus_S", "counts"):
            assert r[k] == pytest.approx(results[0][k]), k


def test_anything_else_is_refused_naming_both_layouts(val_layouts, tv_file_3, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(val_layouts["flat"], mixed)
    os.makedirs(mixed / WNIDS3[0])
    alone = tmp_path / "alone" / "val"  # flat, but no labels file anywhere near
    shutil.copytree(val_layouts["flat"], alone)
    empty = tmp_path / "empty"
    os.makedirs(empty)
    for folder, problem in ((mixed, "both class folders and loose images"),
                            (alone, "no labels file was found"), (empty, "neither class folders nor images")):
        assert stability_main([tv_file_3, "--arch", TV_ARCH, "--data", str(folder)]) == 2
        err = capsys.readouterr().err
        assert problem in err and "class folders (VAL/<wnid>/<image>)" in err and "LOC_val_solution.csv" in err, err
        assert "ILSVRC2012_validation_ground_truth.txt" in err and len(err.strip().splitlines()) == 1
    # a labels file of another folder
    other = tmp_path / "other.csv"
    other.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 3 4\n")
    assert stability_main([tv_file_3, "--arch", TV_ARCH, "--data", val_layouts["flat"], "--labels", str(other)]) == 2
    assert "5 image(s)" in capsys.readouterr().err


def test_table1_recipe_on_a_flat_val_folder(val_layouts, tv_file_3, tmp_path):
    import subprocess

    models = tmp_path / "models.txt"
    models.write_text(f"# arch weights label\n{TV_ARCH} {tv_file_3} mnv3_random\n\n"
                      f"{TV_ARCH} {tv_file_3} mnv3_again  # the same file twice\n")
    recipe = os.path.join(os.path.dirname(__file__), "..", "recipes", "vision", "imagenet_table1.sh")
    env = dict(os.environ, VAL=val_layouts["flat"], LIST=str(models), WORKERS="0",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(["bash", recipe, str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = open(tmp_path / "out" / "table1.md").read().splitlines()
    assert len(table) == 4 and table[2].startswith("| mnv3_random | mobilenet_v3_small | 6 |"), table
    r = json.load(open(tmp_path / "out" / "mnv3_random.json"))
    assert f"| {r['accuracy']:.3f} | {r['top5']:.3f} | {r['one_minus_S']:.4f} |" in table[2]
    assert table[2].endswith("| – |")  # no paper numbers for this architecture
    bad = tmp_path / "bad.txt"
    bad.write_text("resnet18 only_two_fields\n")
    proc = subprocess.run(["bash", recipe, str(tmp_path / "out2")], env=dict(env, LIST=str(bad)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "expected 'ARCH WEIGHTS LABEL'" in proc.stderr
