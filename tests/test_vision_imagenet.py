"""The ImageNet path of lskd-vision-train on a tiny ImageNet-layout folder the test makes.

train/<wnid>/*.JPEG + val/<wnid>/*.JPEG at 96 px, 2 classes, torchvision resnet18,
the ``imagenet`` input style (RandomResizedCrop(224) for training,
Resize(256) + CenterCrop(224) for evaluation), ``--pretrained`` from a
torchvision-style state dict without ``num_batches_tracked``, ``--init-from``;
one optimisation step each.
"""

import contextlib
import io
import json
import os

import pytest
import torch
import torchvision
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from lskd_vision import data as D
from lskd_vision import train as train_module
from lskd_vision.synthetic import make_image_folder
from lskd_vision.train import main

WNIDS = ["n01440764", "n01443537"]
# 2 classes x 5 training images: 1 carved for validation, 4 train -> one step of 8
FAST = ["--workers", "0", "--no-progress", "--batch-size", "8", "--epochs", "1", "--val-fraction", "0.2",
        "--model", "resnet18", "--input-style", "imagenet", "--lr", "1e-9", "--weight-decay", "0", "--momentum", "0"]


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("imagenet") / "ILSVRC")
    make_image_folder(root, num_classes=2, per_class=5, splits=("train", "val"), test_per_class=2, size=96, ext="jpg")
    for split in ("train", "val"):
        for c, wnid in enumerate(WNIDS):
            os.rename(os.path.join(root, split, f"class_{c}"), os.path.join(root, split, wnid))
    return root


@pytest.fixture(scope="module")
def torchvision_weights(tmp_path_factory):
    """A torchvision resnet18 state dict (random weights, 1000 classes) as older files are:
    without BatchNorm's num_batches_tracked counters."""
    torch.manual_seed(0)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("weights") / "resnet18-random.pth"
    torch.save(sd, path)
    return str(path), sd


@pytest.fixture(scope="module")
def pretrained_run(imagenet, torchvision_weights, tmp_path_factory):
    """One step of resnet18 from the state dict; returns (run folder, log, the (train, eval) transforms it built)."""
    path, _ = torchvision_weights
    out = tmp_path_factory.mktemp("r18") / "run"
    seen = []
    real = D.build_transforms

    def spy(*a, **kw):
        seen.append(real(*a, **kw))
        return seen[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module.D, "build_transforms", spy)
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            rc = main([imagenet, "--output", str(out), *FAST, "--pretrained", path])
    assert rc == 0, log.getvalue()
    return out, log.getvalue(), seen


def _assert_train_is_random_resized_crop_224(tr):
    if isinstance(tr, T.Compose):
        crops = [t for t in tr.transforms if isinstance(t, T.RandomResizedCrop)]
        assert len(crops) == 1 and tuple(crops[0].size) == (224, 224), tr
        assert tuple(crops[0].scale) == (0.08, 1.0)
    else:  # the seeded form of the same rule (lskd_vision.augment.SeededViews)
        d = tr.describe()
        assert (d["style"], d["img_size"], tuple(d["scale"])) == ("imagenet", 224, (0.08, 1.0)), d


def _assert_eval_is_resize_256_center_crop_224(ev, image_path):
    steps = [t for t in ev.transforms if isinstance(t, (T.Resize, T.CenterCrop))]
    assert [type(t) for t in steps] == [T.Resize, T.CenterCrop]
    assert steps[0].size in (256, [256]) and tuple(steps[1].size) == (224, 224)
    img = D.load_image(image_path)
    want = TF.normalize(TF.to_tensor(TF.center_crop(TF.resize(img, 256), 224)), D.IMAGENET_MEAN, D.IMAGENET_STD)
    torch.testing.assert_close(ev(img), want)


def test_imagenet_style_resnet18_from_pretrained_without_num_batches_tracked(imagenet, torchvision_weights, pretrained_run):
    _, sd = torchvision_weights
    out, log, seen = pretrained_run
    assert "left fresh (shape differs): fc.bias, fc.weight" in log  # 1000 classes -> 2
    cfg = json.load(open(out / "config.json"))
    assert (cfg["input_style"], cfg["img_size"], cfg["arch"], cfg["num_classes"]) == ("imagenet", 224, "resnet18", 2)
    assert cfg["classes"] == WNIDS
    assert cfg["pretrained_input"]["input_size"] == 224 and cfg["pretrained_input"]["mean"] == list(D.IMAGENET_MEAN)
    m = json.load(open(out / "metrics.json"))
    assert m["test"]["num_images"] == 4  # val/ is the reported split
    # the training and evaluation transforms of the run
    (tr, ev), = seen
    _assert_train_is_random_resized_crop_224(tr)
    _assert_eval_is_resize_256_center_crop_224(ev, os.path.join(imagenet, "val", WNIDS[0], "0000.jpg"))
    x, _ = D.ImageDataset(D.scan_image_folder(os.path.join(imagenet, "train")), tr)[0]
    assert x.shape == (3, 224, 224)
    # one step at lr 1e-9: the backbone is the file's (BN running stats move, weights stay)
    ck = torch.load(out / "checkpoint_last.pt", weights_only=True)
    assert len(ck["history"]) == 1
    for k in ("conv1.weight", "layer4.1.conv2.weight", "layer1.0.bn1.weight"):
        torch.testing.assert_close(ck["model"][k], sd[k], rtol=0, atol=1e-6)
    assert int(ck["model"]["bn1.num_batches_tracked"]) == 1


def test_init_from_an_imagenet_run(imagenet, pretrained_run, tmp_path):
    first, _, _ = pretrained_run
    src = torch.load(first / "checkpoint_best.pt", weights_only=True)["model"]
    second = tmp_path / "second"
    assert main([imagenet, "--output", str(second), *FAST, "--init-from", str(first / "checkpoint_best.pt")]) == 0
    got = torch.load(second / "checkpoint_last.pt", weights_only=True)["model"]
    for k in ("conv1.weight", "fc.weight", "fc.bias"):  # the classifier too: same classes
        torch.testing.assert_close(got[k], src[k], rtol=0, atol=1e-6)
    assert json.load(open(second / "config.json"))["init_from"].endswith("checkpoint_best.pt")
