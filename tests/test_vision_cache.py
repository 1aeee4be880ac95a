"""Seeded views, lskd-vision-cache, and KD students that read the cache instead of running a teacher."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from lskd_fairseq.losses import kd_loss
from lskd_vision import cache as vision_cache
from lskd_vision import data as vision_data
from lskd_vision import soft_labels
from lskd_vision.augment import SeededViews, resized_crop_box
from lskd_vision.engine import load_teachers, style_input
from lskd_vision.synthetic import make_image_folder
from lskd_vision.train import build_parser, main, prepare_data, resolve_args

FAST = ["--workers", "0", "--no-progress", "--cache-images", "yes"]
SEED, EPOCHS = 5, 2


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("vc") / "data"), num_classes=4, per_class=20,
                             test_per_class=4, size=16)


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("vc_teacher") / "run"
    assert main([data, "--output", str(out), "--model", "resnet8", "--epochs", "1", "--batch-size", "16", *FAST]) == 0
    return str(out / "checkpoint_best.pt")


def build_cache(data, teacher, out, *extra, seed=SEED, epochs=EPOCHS):
    return vision_cache.main([data, "--teacher", teacher, "--out", str(out), "--epochs", str(epochs),
                              "--seed", str(seed), "--batch-size", "32", *FAST, *extra])


@pytest.fixture(scope="module")
def cache(data, teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("vc_cache") / "cache"
    assert build_cache(data, teacher, out) == 0
    return str(out)


def student(data, out, *extra, seed=SEED, epochs=EPOCHS):
    return main([data, "--output", str(out), "--model", "mlp", "--epochs", str(epochs), "--seed", str(seed),
                 "--batch-size", "16", "--lr", "0.05", *FAST, *extra])


def run_dataset(data, *extra):
    """The training dataset and info that lskd-vision-train builds for these options."""
    args = build_parser().parse_args([data, "--output", "unused", *FAST, "--seed", str(SEED), *extra])
    resolve_args(args)
    ds, info = prepare_data(args, 0, 1)
    return args, ds["train"], info


# ------------------------------------------------------------------ deterministic views
def _views(ds, epoch, batch_size, workers, rank, world, order_seed):
    indexed = soft_labels.IndexedDataset(ds)
    indexed.set_epoch(epoch)
    sampler = torch.utils.data.DistributedSampler(indexed, num_replicas=world, rank=rank, shuffle=True,
                                                  seed=order_seed)
    loader = torch.utils.data.DataLoader(indexed, batch_size=batch_size, sampler=sampler, num_workers=workers)
    return {int(i): x for xs, _, idx in loader for x, i in zip(xs, idx)}


@pytest.mark.parametrize("style", ["cifar", "imagenet"])
def test_views_depend_only_on_seed_epoch_and_index(data, style):
    splits = vision_data.find_splits(data)
    train_tf, _ = vision_data.build_transforms(style, 12, seed=7)
    ds = vision_data.ImageDataset(splits.train, train_tf)
    n = len(ds)
    ds.set_epoch(1)
    ref = {i: ds[i][0] for i in range(n)}
    seen = set()
    # other batch sizes, worker processes, DDP ranks and sample orders: the same tensors
    for batch_size, workers, rank, world, order in [(5, 0, 0, 1, 0), (8, 2, 0, 2, 3), (3, 0, 1, 2, 3)]:
        got = _views(ds, 1, batch_size, workers, rank, world, order)
        for i, x in got.items():
            assert torch.equal(x, ref[i]), (i, batch_size, workers, rank)
        seen |= set(got) if world == 2 else set()
    assert seen == set(range(n))
    # another epoch, or another seed: other views
    ds.set_epoch(2)
    assert sum(not torch.equal(ds[i][0], ref[i]) for i in range(n)) >= 0.75 * n
    other = vision_data.ImageDataset(splits.train, vision_data.build_transforms(style, 12, seed=8)[0])
    other.set_epoch(1)
    assert sum(not torch.equal(other[i][0], ref[i]) for i in range(n)) >= 0.75 * n


def test_training_does_not_depend_on_data_loader_workers(data, tmp_path):
    # augmented views made in worker processes equal those made in the training process
    common = ["--model", "resnet8", "--epochs", "1", "--batch-size", "16", "--no-progress", "--cache-images", "yes",
              "--seed", "3"]
    for workers in (0, 2):
        assert main([data, "--output", str(tmp_path / f"w{workers}"), "--workers", str(workers), *common]) == 0
    a = torch.load(tmp_path / "w0" / "checkpoint_last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "w2" / "checkpoint_last.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.parametrize("size", [(16, 16), (224, 300), (40, 500), (500, 20), (3, 2)])
def test_resized_crop_box_follows_torchvision_get_params(size):
    height, width = size
    for key in range(20):
        torch.manual_seed(key)
        want = T.RandomResizedCrop.get_params(torch.zeros(3, height, width), [0.08, 1.0], [3 / 4, 4 / 3])
        assert resized_crop_box(height, width, torch.Generator().manual_seed(key)) == want


@pytest.mark.parametrize("style", ["cifar", "imagenet"])
def test_view_is_torchvision_crop_flip_normalise(data, style):
    img = vision_data.load_image(vision_data.find_splits(data).train.samples[0][0])
    mean, std = vision_data.CIFAR_MEAN, vision_data.CIFAR_STD
    views = SeededViews(style, 12, seed=1, mean=mean, std=std)
    views.set_epoch(3)
    flips = set()
    for index in range(8):
        params = views.params(index, *img.size)
        if style == "cifar":
            top, left, flip = params
            pil = TF.crop(TF.pad(TF.resize(img, [12, 12]), 1, fill=0), top, left, 12, 12)
        else:
            top, left, h, w, flip = params
            pil = TF.resized_crop(img, top, left, h, w, [12, 12], T.InterpolationMode.BILINEAR, antialias=True)
        pil = TF.hflip(pil) if flip else pil
        flips.add(flip)
        want = TF.normalize(TF.to_tensor(pil), mean, std)
        torch.testing.assert_close(views(img, index), want, rtol=0, atol=1e-6)
    assert flips == {True, False}


# ------------------------------------------------------------------ the cache
def test_cache_holds_the_teacher_on_each_students_view(data, teacher, cache):
    args, ds, info = run_dataset(data, "--epochs", str(EPOCHS))
    net = load_teachers([teacher], info["num_classes"], info["classes"],
                        student_input=style_input(args.input_style, args.img_size))
    labels = soft_labels.open_for_run(cache, args, ds, info)
    header = soft_labels.read_header(cache)
    assert header["storage"] == "full" and header["k"] == 4 and header["epochs"] == EPOCHS
    assert header["teachers"][0]["sha256"] == soft_labels.file_sha256(teacher)
    # measured on disk, not taken from the header (which only states what cache.py computed)
    n = len(ds)
    files = [f for e in range(EPOCHS) for f in soft_labels.epoch_files(cache, e, "full")]
    on_disk = sum(os.path.getsize(f) for f in files)
    payload = 0
    for f in files:
        with open(f, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(fh)
            payload += os.path.getsize(f) - fh.tell()  # the rows, without the .npy header
    assert payload / (n * EPOCHS) == header["bytes_per_sample_epoch"], (payload, n, header)
    assert on_disk == header["bytes_on_disk"], (on_disk, header)
    assert on_disk / (n * EPOCHS) <= 2 * 4 + 16, (on_disk, n)
    stored = []
    for epoch in range(EPOCHS):
        ds.set_epoch(epoch)
        labels.set_epoch(epoch)
        # each DDP rank's shard of indices reads its own rows
        for rank in range(2):
            idx = torch.tensor(list(torch.utils.data.DistributedSampler(ds, 2, rank, seed=epoch)))
            x = torch.stack([ds[int(i)][0] for i in idx])
            online = net(x)
            cached = labels(idx)
            assert cached.dtype == torch.float16
            torch.testing.assert_close(cached.float(), online, rtol=2e-3, atol=2e-3)
            student_logits = torch.randn(len(idx), 4)
            for t in (1.0, 4.0):
                torch.testing.assert_close(kd_loss(student_logits, cached.float(), t),
                                           kd_loss(student_logits, online, t), rtol=2e-3, atol=1e-4)
        stored.append(np.load(soft_labels.epoch_files(cache, epoch, "full")[0]))
    assert not np.array_equal(stored[0], stored[1])  # other epoch, other views


def test_cached_student_equals_online_student(data, teacher, cache, tmp_path):
    kd = ["--kd-alpha", "0.6", "--kd-temperature", "2", "--label-smoothing", "0.1"]
    assert student(data, tmp_path / "online", "--teacher", teacher, *kd) == 0
    assert student(data, tmp_path / "cached", "--teacher-cache", cache, *kd) == 0
    a = torch.load(tmp_path / "online" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "cached" / "checkpoint_last.pt", weights_only=True)
    for ra, rb in zip(a["history"], b["history"]):
        assert ra["train_kd_loss"] > 0
        for k in ("train_kd_loss", "train_loss", "train_nll_loss"):
            assert rb[k] == pytest.approx(ra[k], rel=2e-3), k
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-2, atol=2e-3)
    cfg = json.load(open(tmp_path / "cached" / "config.json"))
    assert cfg["teacher_cache"]["path"] == os.path.abspath(cache)
    assert cfg["teacher_cache"]["teachers"][0]["sha256"] == soft_labels.file_sha256(teacher)
    assert cfg["teachers"] == [] and cfg["kd_temperature"] == 2


def test_cached_student_resumes(data, cache, tmp_path):
    kd = ["--teacher-cache", cache, "--kd-temperature", "3"]
    assert student(data, tmp_path / "full", *kd) == 0
    assert student(data, tmp_path / "split", *kd, "--stop-after", "1") == 0
    assert student(data, tmp_path / "split", *kd, "--resume") == 0
    a = torch.load(tmp_path / "full" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint_last.pt", weights_only=True)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6)


def test_top_k_cache_for_many_classes(data, teacher, tmp_path, monkeypatch):
    # more classes than the full-storage limit: the top --k ids and logits are stored
    monkeypatch.setattr(soft_labels, "FULL_MAX_CLASSES", 2)
    assert build_cache(data, teacher, tmp_path / "topk", "--k", "3") == 0
    header = soft_labels.read_header(str(tmp_path / "topk"))
    assert (header["storage"], header["k"], header["index_dtype"]) == ("topk", 3, "int16")
    assert header["bytes_per_sample_epoch"] == 3 * 2 + 3 * 2
    ids = np.load(soft_labels.epoch_files(str(tmp_path / "topk"), 0, "topk")[0])
    assert ids.shape == (72, 3) and ids.dtype == np.int16
    kd = ["--kd-alpha", "0.5", "--kd-topk", "2"]
    assert student(data, tmp_path / "online", "--teacher", teacher, *kd) == 0
    assert student(data, tmp_path / "cached", "--teacher-cache", str(tmp_path / "topk"), *kd) == 0
    a = torch.load(tmp_path / "online" / "checkpoint_last.pt", weights_only=True)["history"]
    b = torch.load(tmp_path / "cached" / "checkpoint_last.pt", weights_only=True)["history"]
    for ra, rb in zip(a, b):
        assert rb["train_kd_loss"] == pytest.approx(ra["train_kd_loss"], rel=2e-3)


def test_ensemble_cache_stores_the_ensemble_rule(data, teacher, tmp_path):
    out = tmp_path / "ens"
    assert vision_cache.main([data, "--teacher", teacher, teacher, "--out", str(out), "--epochs", "1",
                              "--seed", str(SEED), *FAST]) == 0
    header = soft_labels.read_header(str(out))
    assert header["ensemble_rule"] == "lskd_fairseq.losses.ensemble_log_probs" and len(header["teachers"]) == 2
    args, ds, info = run_dataset(data, "--epochs", "1")
    net = load_teachers([teacher], info["num_classes"], info["classes"],
                        student_input=style_input(args.input_style, args.img_size))
    ds.set_epoch(0)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    # two copies of one teacher: the mean of equal softmaxes, i.e. its log-softmax
    stored = torch.from_numpy(np.load(soft_labels.epoch_files(str(out), 0, "full")[0])).float()
    torch.testing.assert_close(stored, torch.log_softmax(net(x), -1), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("extra,needle", [
    (["--seed", "6"], "--seed (cache 5, run 6)"),
    (["--val-fraction", "0.2"], "--val-fraction"),
    (["--no-augment"], "--no-augment"),
    (["--img-size", "12"], "--img-size"),
    (["--epochs", "3"], "--epochs (cache holds 2 epochs, run needs 3)"),
    (["--kd-temperature", "2", "--train-per-class", "10"], "--train-per-class"),
])
def test_student_refuses_a_cache_made_for_another_run(data, cache, tmp_path, capsys, extra, needle):
    args = [data, "--output", str(tmp_path / "s"), "--model", "mlp", "--epochs", str(EPOCHS), "--seed", str(SEED),
            "--batch-size", "16", *FAST, "--teacher-cache", cache]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert needle in err and "lskd-vision-cache" in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "s" / "checkpoint_last.pt")


def test_student_refuses_another_dataset_and_bad_combinations(data, cache, teacher, tmp_path, capsys):
    other = make_image_folder(str(tmp_path / "other"), num_classes=4, per_class=20, test_per_class=4, size=16, seed=9)
    assert student(other, tmp_path / "s", "--teacher-cache", cache) == 2
    assert "dataset (training list" in capsys.readouterr().err
    five = make_image_folder(str(tmp_path / "five"), num_classes=5, per_class=20, test_per_class=4, size=16)
    assert student(five, tmp_path / "s", "--teacher-cache", cache) == 2
    assert "class count (cache 4, run 5)" in capsys.readouterr().err
    assert student(other, tmp_path / "s", "--teacher-cache", cache, "--teacher", teacher) == 2
    assert "not both" in capsys.readouterr().err
    assert student(other, tmp_path / "s", "--teacher-cache", str(tmp_path / "nowhere")) == 2
    assert "does not exist" in capsys.readouterr().err
    damaged = tmp_path / "damaged"
    shutil.copytree(cache, damaged)
    os.unlink(damaged / "epoch_0001.logits.npy")
    assert student(data, tmp_path / "s", "--teacher-cache", str(damaged)) == 2  # before any training
    assert "lacks epoch_0001.logits.npy" in capsys.readouterr().err
    assert not (tmp_path / "s" / "checkpoint_last.pt").exists()


def test_interrupted_cache_is_refused_then_resumed(data, teacher, cache, tmp_path, monkeypatch, capsys):
    out = tmp_path / "partial"
    real = vision_cache._write_epoch

    def interrupted(args, epoch, *rest):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(args, epoch, *rest)

    monkeypatch.setattr(vision_cache, "_write_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_cache(data, teacher, out)
    monkeypatch.undo()
    assert sorted(os.listdir(out)) == ["epoch_0000.logits.npy", "pending.json"]  # no temporary files left
    assert student(data, tmp_path / "s", "--teacher-cache", str(out)) == 2
    assert "incomplete" in capsys.readouterr().err
    first = os.stat(out / "epoch_0000.logits.npy").st_mtime_ns
    assert build_cache(data, teacher, out) == 0
    assert "1 epoch(s) already done" in capsys.readouterr().out
    assert os.stat(out / "epoch_0000.logits.npy").st_mtime_ns == first
    for epoch in range(EPOCHS):  # the resumed cache equals one built in one go
        f = f"epoch_{epoch:04d}.logits.npy"
        assert np.array_equal(np.load(out / f), np.load(os.path.join(cache, f)))
    assert not (out / "pending.json").exists() and soft_labels.read_header(str(out))["complete"]


def test_cache_cli_refusals_extension_and_overwrite(data, teacher, cache, tmp_path, capsys):
    out = tmp_path / "c"
    shutil.copytree(cache, out)
    assert build_cache(data, teacher, out) == 0
    assert "nothing to do" in capsys.readouterr().out
    before = os.stat(out / "epoch_0001.logits.npy").st_mtime_ns
    assert build_cache(data, teacher, out, epochs=3) == 0  # extends: only epoch 3 is computed
    assert "2 epoch(s) already done" in capsys.readouterr().out
    assert os.stat(out / "epoch_0001.logits.npy").st_mtime_ns == before
    assert soft_labels.read_header(str(out))["epochs"] == 3
    assert build_cache(data, teacher, out, seed=6) == 2
    err = capsys.readouterr().err
    assert "--seed (cache 5, run 6)" in err and "--overwrite" in err
    assert build_cache(data, teacher, out, "--overwrite", seed=6) == 0
    assert soft_labels.read_header(str(out))["identity"]["options"]["seed"] == 6
    assert not (out / "epoch_0002.logits.npy").exists()
    if not torch.cuda.is_available():
        assert build_cache(data, teacher, tmp_path / "f", "--fp16") == 2
        assert "--fp16 needs a CUDA device" in capsys.readouterr().err
    assert build_cache(data, teacher, tmp_path / "e", epochs=0) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err
    # the data options are checked as lskd-vision-train checks them, non-finite values included
    assert build_cache(data, teacher, tmp_path / "i", "--imbalance-factor", "inf") == 2
    assert "--imbalance-factor must be" in capsys.readouterr().err and not (tmp_path / "i").exists()
    assert vision_cache.main([data, "--teacher", str(tmp_path / "none.pt"), "--out", str(tmp_path / "n"),
                              "--epochs", "1", "--seed", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err
