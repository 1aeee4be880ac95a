"""The batched CIFAR-style input pipeline is bit-identical to the per-sample SeededViews."""

import torch
from PIL import Image

from lskd_vision import data as D
from lskd_vision.augment import SeededViews
from lskd_vision.soft_labels import IndexedDataset
from lskd_vision.synthetic import make_image_folder


def _images(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_batch_equals_per_sample_views():
    u8 = _images(64, 32)
    pil = [Image.fromarray(u8[i].permute(1, 2, 0).numpy(), "RGB") for i in range(len(u8))]
    assert torch.equal(D.images_to_uint8(pil), u8)
    views = SeededViews("cifar", 32, 123, D.CIFAR_MEAN, D.CIFAR_STD)
    idx = [5, 0, 63, 17, 17, 40, 2, 33]
    flips = set()
    for epoch in (0, 1, 7):
        views.set_epoch(epoch)
        ref = torch.stack([views(pil[i], i) for i in idx])
        out = views.batch(u8, idx)
        assert out.dtype == torch.float32 and out.shape == ref.shape
        assert torch.equal(out, ref), f"epoch {epoch}: batched views differ from SeededViews"
        flips.update(views.params(i, 32, 32)[2] for i in idx)
    assert flips == {True, False}  # both branches were exercised


def test_dataset_loader_is_batched_and_identical(tmp_path):
    root = make_image_folder(str(tmp_path / "d"), num_classes=3, per_class=10, test_per_class=4, size=16)
    splits = D.find_splits(root)
    tr, ev = D.build_transforms("cifar", 16, seed=4)
    cached = D.ImageDataset(splits.train, tr, cache=True)
    plain = D.ImageDataset(splits.train, tr, cache=False)
    assert cached.batch_transform() is not None and plain.batch_transform() is None
    for epoch in (0, 3):
        cached.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(cached, batch_size=8, shuffle=False)
        xb = torch.cat([x for x, _ in loader])
        ref = torch.stack([plain[i][0] for i in range(len(plain))])
        assert torch.equal(xb, ref)
        assert torch.equal(torch.cat([y for _, y in loader]), torch.tensor(splits.train.targets()))
    # the soft-label wrapper keeps the batch path and adds the index
    ind = IndexedDataset(cached)
    x, y, i = next(iter(torch.utils.data.DataLoader(ind, batch_size=5, shuffle=False)))
    assert torch.equal(i, torch.arange(5)) and torch.equal(x, ref[:5])
    # evaluation views (no crop) are batched too, and equal to the torchvision transform
    ev_cached = D.ImageDataset(splits.test, ev, cache=True)
    ev_plain = D.ImageDataset(splits.test, ev, cache=False)
    got = torch.cat([x for x, _ in torch.utils.data.DataLoader(ev_cached, batch_size=5)])
    assert torch.equal(got, torch.stack([ev_plain[i][0] for i in range(len(ev_plain))]))
    # per-sample access from the uint8 cache gives the same view as from the file
    assert torch.equal(cached[3][0], plain[3][0])


def test_mixed_sizes_fall_back_to_per_sample(tmp_path):
    root = make_image_folder(str(tmp_path / "d"), num_classes=2, per_class=3, splits=("train",), size=16)
    first = sorted((tmp_path / "d" / "train" / "class_0").iterdir())[0]
    Image.new("RGB", (20, 18), (10, 20, 30)).save(first)
    samples = D.scan_image_folder(str(tmp_path / "d" / "train"))
    tr, _ = D.build_transforms("cifar", 16, seed=0)
    ds = D.ImageDataset(samples, tr, cache=True)
    assert ds.batch_transform() is None
    x = torch.utils.data.default_collate(ds.__getitems__([0, 1]))[0]
    assert x.shape == (2, 3, 16, 16)
