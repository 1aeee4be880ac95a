"""Dataset layouts, the archive cache, seeded splits, the long-tail construction, refusals."""

import math
import os
import tarfile

import pytest
import torch

from lskd_vision import data as D
from lskd_vision.synthetic import make_image_folder
from lskd_vision.train import main

FAST = ["--workers", "0", "--no-progress", "--batch-size", "8", "--epochs", "1", "--model", "mlp"]


def fake_samples(counts):
    s = [(f"c{c}/{i}.png", c) for c, n in enumerate(counts) for i in range(n)]
    return D.Samples(s, [f"c{c}" for c in range(len(counts))])


@pytest.mark.parametrize("num_classes,n_max,factor", [(10, 5000, 100), (10, 4500, 10), (7, 300, 50), (3, 20, 1)])
def test_long_tail_counts_follow_the_formula(num_classes, n_max, factor):
    s = fake_samples([n_max] * num_classes)
    lt = D.long_tail(s, factor, seed=3)
    want = [int(math.floor(n_max * factor ** (-c / (num_classes - 1)) + 1e-9)) for c in range(num_classes)]
    assert lt.counts() == want
    assert want[0] == n_max and want[-1] == pytest.approx(n_max / factor, abs=1)
    # seeded: the same seed picks the same images, another seed others
    assert D.long_tail(s, factor, seed=3).samples == lt.samples
    if factor > 1:
        assert D.long_tail(s, factor, seed=4).samples != lt.samples


def test_cifar10_lt_known_counts():
    # CIFAR-10-LT with F = 100 (Cao et al. 2019): 5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50
    assert D.long_tail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_long_tail_refuses_too_few_images():
    with pytest.raises(D.DatasetError, match="needs"):
        D.long_tail(fake_samples([100, 10, 100]), 2, seed=0)


def test_val_carve_is_stratified_seeded_and_disjoint():
    s = fake_samples([50, 30, 20])
    tr, va = D.carve_val(s, 0.1, seed=1)
    assert va.counts() == [5, 3, 2]
    assert set(tr.samples).isdisjoint(va.samples) and len(tr) + len(va) == len(s)
    assert D.carve_val(s, 0.1, seed=1)[1].samples == va.samples
    assert D.carve_val(s, 0.1, seed=2)[1].samples != va.samples


def test_shot_groups():
    g = D.shot_groups([500, 101, 100, 20, 19, 1], many=100, few=20)
    assert g == {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}


def test_cifar_style_archive_is_extracted_once_atomically(tmp_path):
    src = make_image_folder(str(tmp_path / "src"), num_classes=3, per_class=4, test_per_class=2, size=8, ext="jpg")
    arc = tmp_path / "tiny_jpg.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(os.path.join(src, split), arcname=split)
    cache = tmp_path / "cache"
    s1 = D.find_splits(str(arc), cache_dir=str(cache))
    assert len(s1.train) == 12 and len(s1.test) == 6 and s1.train.classes == ["class_0", "class_1", "class_2"]
    # no temporary folder left (the hidden lock file stays: it is empty)
    assert [f for f in os.listdir(cache) if not f.endswith(".lock")] == [os.path.basename(s1.root)]
    mtime = os.stat(s1.root).st_mtime
    s2 = D.find_splits(str(arc), cache_dir=str(cache))
    assert s2.root == s1.root and os.stat(s2.root).st_mtime == mtime
    # training reads the archive directly
    assert main([str(arc), "--output", str(tmp_path / "run"), "--cache-dir", str(cache), *FAST,
                 "--batch-size", "4", "--img-size", "8"]) == 0


def test_stale_partial_extraction_is_removed_on_the_next_run(tmp_path):
    # a killed extraction (SIGKILL, power loss) leaves its hidden temporary folder behind
    src = make_image_folder(str(tmp_path / "src"), num_classes=2, per_class=2, test_per_class=1, size=8, ext="jpg")
    arc = tmp_path / "tiny_jpg.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        tar.add(os.path.join(src, "train"), arcname="train")
    cache = tmp_path / "cache"
    leftovers = [cache / ".tiny_jpg-k3j2h1x0", cache / ".tiny_jpg-9a8b7c6d.partial"]
    for d in leftovers:
        os.makedirs(d / "train" / "class_0")
        (d / "train" / "class_0" / "0000.jpg").write_bytes(b"\0" * 100_000)
    other = cache / ".other_archive-1234abcd"  # another archive's folder is not touched
    os.makedirs(other)
    s = D.find_splits(str(arc), cache_dir=str(cache), test_split="none")
    assert len(s.train) == 4
    assert not any(d.exists() for d in leftovers)
    assert other.exists()
    assert sorted(f for f in os.listdir(cache) if not f.endswith(".lock")) == sorted(
        [".other_archive-1234abcd", os.path.basename(s.root)])


def test_imagenet_layout_uses_val_as_the_reported_split(tmp_path):
    root = make_image_folder(str(tmp_path / "inet"), num_classes=3, per_class=6, splits=("train", "val"), test_per_class=2, size=8)
    s = D.find_splits(root)
    assert len(s.test) == 6 and s.test.root.endswith("val")


def test_cub_layout(tmp_path):
    root = tmp_path / "CUB_200_2011"
    make_image_folder(str(tmp_path / "tmp"), num_classes=2, per_class=3, splits=("train",), size=8, ext="jpg")
    os.makedirs(root / "images")
    lines, split = [], []
    i = 0
    for c, name in enumerate(["001.Black_footed_Albatross", "002.Laysan_Albatross"]):
        os.rename(tmp_path / "tmp" / "train" / f"class_{c}", root / "images" / name)
        for f in sorted(os.listdir(root / "images" / name)):
            i += 1
            lines.append(f"{i} {name}/{f}")
            split.append(f"{i} {1 if i % 3 else 0}")
    (root / "images.txt").write_text("\n".join(lines) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    s = D.find_splits(str(root))
    assert s.layout == "cub200" and len(s.train) == 4 and len(s.test) == 2
    assert s.train.classes == ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    (root / "train_test_split.txt").write_text("1 yes\n")
    with pytest.raises(D.DatasetError, match="train_test_split.txt:1"):
        D.find_splits(str(root))


# ------------------------------------------------------------------ refusals
def refuse(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    for f in fragments:
        assert f in err, err
    return err


def test_refuses_missing_and_empty_dataset(tmp_path, capsys):
    refuse(capsys, [str(tmp_path / "nope"), "--output", str(tmp_path / "o"), *FAST], "does not exist")
    os.makedirs(tmp_path / "empty")
    refuse(capsys, [str(tmp_path / "empty"), "--output", str(tmp_path / "o"), *FAST], "is empty")
    os.makedirs(tmp_path / "empty2" / "train")
    refuse(capsys, [str(tmp_path / "empty2"), "--output", str(tmp_path / "o"), *FAST], "empty or malformed", "no class sub-folders")
    assert not os.path.exists(tmp_path / "o")


def test_refuses_malformed_dataset(tmp_path, capsys):
    root = make_image_folder(str(tmp_path / "m"), num_classes=2, per_class=3, size=8)
    os.rename(os.path.join(root, "train"), os.path.join(root, "training"))
    refuse(capsys, [root, "--output", str(tmp_path / "o"), *FAST], "malformed", "train/<class>/<image>")
    # loose images without class folders
    flat = tmp_path / "flat" / "train"
    os.makedirs(flat)
    for f in os.listdir(os.path.join(root, "training", "class_0")):
        os.rename(os.path.join(root, "training", "class_0", f), flat / f)
    refuse(capsys, [str(tmp_path / "flat"), "--output", str(tmp_path / "o"), *FAST], "3 loose image files", "no class sub-folders")
    # a class folder without images
    root2 = make_image_folder(str(tmp_path / "m2"), num_classes=2, per_class=3, size=8)
    os.makedirs(os.path.join(root2, "train", "class_9"))
    refuse(capsys, [root2, "--output", str(tmp_path / "o"), *FAST], "class_9", "contains no images")
    # test split with other classes than train
    root3 = make_image_folder(str(tmp_path / "m3"), num_classes=3, per_class=3, size=8)
    os.rename(os.path.join(root3, "test", "class_2"), os.path.join(root3, "test", "class_x"))
    refuse(capsys, [root3, "--output", str(tmp_path / "o"), *FAST], "only in train: ['class_2']")


@pytest.mark.parametrize("cache", ["yes", "no"])
def test_refuses_unreadable_image_before_training(tmp_path, capsys, cache):
    root = make_image_folder(str(tmp_path / "u"), num_classes=2, per_class=8, size=8, ext="jpg")
    bad = os.path.join(root, "train", "class_1", "0003.jpg")
    with open(bad, "wb") as f:
        f.write(b"this is not a jpeg")
    refuse(capsys, [root, "--output", str(tmp_path / "o"), *FAST, "--cache-images", cache, "--val-fraction", "0"],
           "cannot read image", bad)
    assert not os.path.exists(tmp_path / "o" / "checkpoint_last.pt")


def test_refuses_unknown_architecture_before_reading_data(tmp_path, capsys):
    err = refuse(capsys, [str(tmp_path / "nope"), "--output", str(tmp_path / "o"), "--model", "resnet9000"],
                 "unknown architecture 'resnet9000'")
    assert "does not exist" not in err
    refuse(capsys, [str(tmp_path / "nope"), "--output", str(tmp_path / "o"), "--model", "resnet_20"], "Did you mean", "resnet20")


def test_refuses_teacher_with_other_class_count(tmp_path, capsys):
    four = make_image_folder(str(tmp_path / "four"), num_classes=4, per_class=6, size=8)
    three = make_image_folder(str(tmp_path / "three"), num_classes=3, per_class=6, size=8)
    assert main([four, "--output", str(tmp_path / "t"), *FAST, "--batch-size", "4"]) == 0
    refuse(capsys, [three, "--output", str(tmp_path / "s"), *FAST, "--teacher", str(tmp_path / "t" / "checkpoint_best.pt")],
           "has 4 classes but the student's dataset has 3")
    assert not os.path.exists(tmp_path / "s" / "checkpoint_last.pt")
    # a file that is not an lskd_vision checkpoint
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(2)}, junk)
    refuse(capsys, [four, "--output", str(tmp_path / "s"), *FAST, "--teacher", str(junk)], "not an lskd_vision checkpoint")


def test_refuses_inconsistent_options(tmp_path, capsys):
    d = make_image_folder(str(tmp_path / "d"), num_classes=2, per_class=6, size=8)
    o = ["--output", str(tmp_path / "o")]
    refuse(capsys, [d, *o, *FAST, "--paper-kd"], "--paper-kd needs --teacher")
    refuse(capsys, [d, *o, *FAST, "--kd-alpha", "0.5"], "needs --teacher")
    refuse(capsys, [d, *o, *FAST, "--teacher", str(tmp_path / "missing.pt")], "does not exist")
    refuse(capsys, [d, *o, *FAST, "--imbalance-factor", "0.5"], "--imbalance-factor must be >= 1")
    refuse(capsys, [d, *o, *FAST, "--binary-step", "1"], "reactnet18 only")
    assert main([d, *o, *FAST, "--batch-size", "4"]) == 0
    refuse(capsys, [d, *o, *FAST, "--batch-size", "4"], "already holds a run")
    refuse(capsys, [d, *o, *FAST, "--batch-size", "4", "--epochs", "2", "--resume"], "cannot resume", "epochs (1 -> 2)")
