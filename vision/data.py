"""Datasets: ImageFolder trees, the CIFAR-10 JPEG tarball, CUB-200-2011; seeded splits.

Layouts understood by ``find_splits(root)``:

* ImageFolder with split folders: ``root/train/<class>/*`` plus ``root/val/<class>/*``
  (ImageNet) and/or ``root/test/<class>/*`` (the CIFAR-10 tarball). The held-out
  folder (``test/`` if present, else ``val/``) is the *test* split: only reported.
* CUB-200-2011 as downloaded: ``root/images/<class>/*.jpg`` with
  ``root/images.txt`` and ``root/train_test_split.txt`` (the official split).
* A ``.tar``/``.tar.gz`` archive of either layout (for example
  ``../shared/data/cifar10/cifar10_jpg.tar.gz``): extracted once, atomically, into
  a cache directory, then read as above.

The split that chooses the best checkpoint is carved from the training images
(``carve_val``: stratified, seeded); ``long_tail`` then keeps
``n_max * F^(-c/(C-1))`` training images of class c.
"""

import hashlib
import math
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from .augment import SeededViews, normalise_uint8

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DatasetError(ValueError):
    """A dataset folder that cannot be used (missing, empty, malformed, unreadable image)."""


@dataclass
class Samples:
    """A list of (path, label) with the class names it indexes."""

    samples: List[Tuple[str, int]]
    classes: List[str]
    root: str = ""

    def __len__(self):
        return len(self.samples)

    def targets(self) -> List[int]:
        return [y for _, y in self.samples]

    def counts(self) -> List[int]:
        c = [0] * len(self.classes)
        for _, y in self.samples:
            c[y] += 1
        return c

    def subset(self, indices: Sequence[int]) -> "Samples":
        return Samples([self.samples[i] for i in indices], self.classes, self.root)


@dataclass
class Splits:
    train: Samples
    test: Optional[Samples]
    layout: str
    root: str
    val: Optional[Samples] = None
    notes: List[str] = field(default_factory=list)


# ------------------------------------------------------------------ scanning
def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def scan_image_folder(root: str) -> Samples:
    """Read ``root/<class>/<image>``; refuse missing, empty or malformed folders."""
    if not os.path.isdir(root):
        raise DatasetError(f"dataset folder {root!r} does not exist or is not a directory")
    entries = sorted(os.listdir(root))
    classes = [e for e in entries if os.path.isdir(os.path.join(root, e)) and not e.startswith(".")]
    if not classes:
        loose = [e for e in entries if _is_image(e)]
        what = f"{len(loose)} loose image files but " if loose else ""
        raise DatasetError(
            f"dataset folder {root!r} is empty or malformed: it has {what}no class sub-folders "
            f"(expected {root}/<class>/<image>)"
        )
    samples: List[Tuple[str, int]] = []
    for label, cls in enumerate(classes):
        cdir = os.path.join(root, cls)
        files = []
        for dirpath, _, names in os.walk(cdir, followlinks=True):
            files.extend(os.path.join(dirpath, n) for n in names if _is_image(n))
        if not files:
            raise DatasetError(
                f"class folder {cdir!r} contains no images (extensions {', '.join(IMG_EXTENSIONS)}): "
                "add its images or remove the folder"
            )
        samples.extend((f, label) for f in sorted(files))
    return Samples(samples, classes, root)


def _scan_cub(root: str) -> Tuple[Samples, Samples]:
    images_txt = os.path.join(root, "images.txt")
    split_txt = os.path.join(root, "train_test_split.txt")
    img_dir = os.path.join(root, "images")
    for p in (images_txt, split_txt, img_dir):
        if not os.path.exists(p):
            raise DatasetError(f"CUB-200-2011 layout: {p!r} is missing")
    classes = sorted(d for d in os.listdir(img_dir) if os.path.isdir(os.path.join(img_dir, d)))
    if not classes:
        raise DatasetError(f"CUB-200-2011 layout: {img_dir!r} has no class folders")
    index = {c: i for i, c in enumerate(classes)}
    paths: Dict[str, str] = {}
    with open(images_txt) as f:
        for ln, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise DatasetError(f"{images_txt}:{ln}: expected '<id> <path>', got {line.strip()!r}")
            paths[parts[0]] = parts[1]
    train, test = [], []
    with open(split_txt) as f:
        for ln, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1") or parts[0] not in paths:
                raise DatasetError(f"{split_txt}:{ln}: expected '<image id> <0|1>', got {line.strip()!r}")
            rel = paths[parts[0]]
            cls = rel.split("/")[0]
            if cls not in index:
                raise DatasetError(f"{images_txt}: image {rel!r} is not under a class folder of {img_dir!r}")
            (train if parts[1] == "1" else test).append((os.path.join(img_dir, rel), index[cls]))
    if not train or not test:
        raise DatasetError(f"CUB-200-2011 layout at {root!r}: the official split has an empty side")
    return Samples(train, classes, root), Samples(test, classes, root)


def default_cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "lskd")


PARTIAL_SUFFIX = ".partial"


def _remove_stale_partials(cache_dir: str, base: str) -> List[str]:
    """Remove ``.<base>-*`` extraction folders left by an interrupted run (called under the lock)."""
    import re

    # tempfile.mkdtemp's names: the prefix, then 8 characters of [a-z0-9_]
    partial = re.compile(rf"\.{re.escape(base)}-[a-z0-9_]{{8}}({re.escape(PARTIAL_SUFFIX)})?")
    removed = []
    for name in os.listdir(cache_dir):
        full = os.path.join(cache_dir, name)
        if partial.fullmatch(name) and os.path.isdir(full):
            shutil.rmtree(full, ignore_errors=True)
            removed.append(full)
    return removed


def extract_archive(path: str, cache_dir: Optional[str] = None) -> str:
    """Extract a tar archive once into ``cache_dir/<name>-<hash>/`` and return that folder.

    Extraction goes to a hidden temporary folder beside the target and is renamed
    into place, so an interrupted extraction never leaves a half-written dataset.
    An exclusive lock (``.<name>.lock``) serialises extractions of the same archive
    name (DDP ranks, parallel runs); the holder first removes hidden partial
    folders that a killed extraction left behind, so they never accumulate.
    """
    import fcntl

    cache_dir = cache_dir or default_cache_dir()
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:10]
    base = os.path.basename(path)
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    target = os.path.join(cache_dir, f"{base}-{key}")
    if os.path.isdir(target):
        return target
    os.makedirs(cache_dir, exist_ok=True)
    with open(os.path.join(cache_dir, f".{base}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed (or the process dies)
        if os.path.isdir(target):  # another process extracted it while we waited
            return target
        _remove_stale_partials(cache_dir, base)
        tmp = tempfile.mkdtemp(prefix=f".{base}-", suffix=PARTIAL_SUFFIX, dir=cache_dir)
        try:
            try:
                with tarfile.open(path) as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError, EOFError) as e:
                raise DatasetError(f"cannot extract archive {path!r}: {e}") from e
            os.replace(tmp, target)
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def find_splits(path: str, cache_dir: Optional[str] = None, test_split: str = "auto") -> Splits:
    """Resolve a dataset path (folder or archive) into train and test samples."""
    if not os.path.exists(path):
        raise DatasetError(f"dataset path {path!r} does not exist: give a folder with train/<class>/<image> "
                           "(and val/ or test/), a CUB-200-2011 folder, or a .tar(.gz) of one")
    if os.path.isfile(path):
        if not tarfile.is_tarfile(path):
            raise DatasetError(f"dataset path {path!r} is a file but not a tar archive")
        root = extract_archive(path, cache_dir)
        # the archive may hold one top-level folder around the layout
        inner = [d for d in os.listdir(root) if not d.startswith(".")]
        if len(inner) == 1 and os.path.isdir(os.path.join(root, inner[0])) and inner[0] not in ("train", "images"):
            root = os.path.join(root, inner[0])
    else:
        root = path
    if os.path.exists(os.path.join(root, "train_test_split.txt")):
        train, test = _scan_cub(root)
        return Splits(train, test, "cub200", root)
    if not os.path.isdir(os.path.join(root, "train")):
        if os.path.isdir(root) and not os.listdir(root):
            raise DatasetError(f"dataset folder {root!r} is empty")
        raise DatasetError(
            f"dataset folder {root!r} is malformed: expected {root}/train/<class>/<image> "
            f"(and val/ or test/ beside train/), or a CUB-200-2011 folder with train_test_split.txt"
        )
    train = scan_image_folder(os.path.join(root, "train"))
    if test_split == "auto":
        test_split = "test" if os.path.isdir(os.path.join(root, "test")) else "val"
    test = None
    notes = []
    if test_split != "none" and os.path.isdir(os.path.join(root, test_split)):
        test = scan_image_folder(os.path.join(root, test_split))
        if test.classes != train.classes:
            only_train = sorted(set(train.classes) - set(test.classes))
            only_test = sorted(set(test.classes) - set(train.classes))
            raise DatasetError(
                f"the {test_split}/ split has {len(test.classes)} classes but train/ has "
                f"{len(train.classes)}; only in train: {only_train[:10]}, only in {test_split}: {only_test[:10]}"
            )
    elif test_split not in ("none", "val", "test"):
        raise DatasetError(f"split folder {os.path.join(root, test_split)!r} does not exist")
    else:
        notes.append(f"no {test_split}/ folder: no test split to report")
    return Splits(train, test, "imagefolder", root, notes=notes)


# ------------------------------------------------------------------ splits
def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _by_class(samples: Samples) -> List[List[int]]:
    out: List[List[int]] = [[] for _ in samples.classes]
    for i, (_, y) in enumerate(samples.samples):
        out[y].append(i)
    return out


def carve_val(samples: Samples, fraction: float, seed: int) -> Tuple[Samples, Samples]:
    """Stratified, seeded (train, val) split: ``round(fraction * n_c)`` of each class (>= 1) to val."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    g = _generator(seed)
    tr, va = [], []
    for c, idx in enumerate(_by_class(samples)):
        if len(idx) < 2:
            raise DatasetError(
                f"class {samples.classes[c]!r} has {len(idx)} training image(s): too few to carve a validation split"
            )
        perm = torch.randperm(len(idx), generator=g).tolist()
        k = min(len(idx) - 1, max(1, int(round(fraction * len(idx)))))
        va.extend(idx[p] for p in perm[:k])
        tr.extend(idx[p] for p in perm[k:])
    return samples.subset(sorted(tr)), samples.subset(sorted(va))


def per_class_subset(samples: Samples, per_class: int, seed: int) -> Samples:
    """At most ``per_class`` images of each class, chosen with a seeded permutation."""
    g = _generator(seed)
    keep = []
    for idx in _by_class(samples):
        perm = torch.randperm(len(idx), generator=g).tolist()
        keep.extend(idx[p] for p in perm[:per_class])
    return samples.subset(sorted(keep))


def long_tail_counts(n_max: int, num_classes: int, imbalance_factor: float) -> List[int]:
    """``floor(n_max * F^(-c/(C-1)))`` for c = 0..C-1 (Cao et al. 2019; Liu et al. 2019)."""
    if imbalance_factor < 1:
        raise ValueError(f"imbalance factor must be >= 1, got {imbalance_factor}")
    if num_classes == 1:
        return [n_max]
    return [
        max(1, int(math.floor(n_max * imbalance_factor ** (-c / (num_classes - 1)) + 1e-9)))
        for c in range(num_classes)
    ]


def long_tail(samples: Samples, imbalance_factor: float, seed: int) -> Samples:
    """Keep ``n_max * F^(-c/(C-1))`` seeded-random images of class c (classes in index order)."""
    groups = _by_class(samples)
    n_max = max(len(g) for g in groups)
    want = long_tail_counts(n_max, len(groups), imbalance_factor)
    g = _generator(seed)
    keep = []
    for c, idx in enumerate(groups):
        if want[c] > len(idx):
            raise DatasetError(
                f"long-tail construction needs {want[c]} images of class {samples.classes[c]!r} "
                f"but it has {len(idx)}; the source must have at least n_max * F^(-c/(C-1)) per class"
            )
        perm = torch.randperm(len(idx), generator=g).tolist()
        keep.extend(idx[p] for p in perm[: want[c]])
    return samples.subset(sorted(keep))


def shot_groups(train_counts: Sequence[int], many: int = 100, few: int = 20) -> Dict[str, List[int]]:
    """Class indices with > many, [few, many] and < few training images (Liu et al. 2019)."""
    return {
        "many": [c for c, n in enumerate(train_counts) if n > many],
        "medium": [c for c, n in enumerate(train_counts) if few <= n <= many],
        "few": [c for c, n in enumerate(train_counts) if n < few],
    }


# ------------------------------------------------------------------ reading images
def load_image(path: str) -> Image.Image:
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except Exception as e:  # PIL raises several types
        raise DatasetError(f"cannot read image {path!r} ({type(e).__name__}: {e}): replace or remove the file") from e


def verify_images(samples: Samples, limit: Optional[int] = None) -> int:
    """Open (and fully decode) every image; raise DatasetError naming the first bad one."""
    n = 0
    for path, _ in samples.samples[: limit if limit else None]:
        load_image(path).load()
        n += 1
    return n


def images_to_uint8(images: Sequence[Image.Image]) -> torch.Tensor:
    """RGB images of one size as one uint8 tensor ``[N, 3, H, W]`` (the pixels ``to_tensor`` reads)."""
    w, h = images[0].size
    out = np.empty((len(images), h, w, 3), dtype=np.uint8)
    for k, im in enumerate(images):
        out[k] = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


class ImageDataset(torch.utils.data.Dataset):
    """(image, label) pairs from a Samples list; optionally decodes everything once into RAM.

    With ``cache`` and images of one size, the decoded images are one uint8 tensor
    ``[N, 3, H, W]`` and a batch of CIFAR-style views (``SeededViews.batch``, or the
    CIFAR evaluation transform) is made at once by ``__getitems__`` (which
    ``DataLoader`` calls with the batch's indices), bit-identical to the per-sample
    transform. Otherwise each sample goes through ``transform`` on its PIL image.
    """

    def __init__(self, samples: Samples, transform=None, cache: bool = False):
        self.samples = samples.samples
        self.classes = samples.classes
        self.transform = transform
        self._cache: Optional[List[Image.Image]] = None
        self._u8: Optional[torch.Tensor] = None
        if cache:
            images = [load_image(p) for p, _ in self.samples]
            if images and len({im.size for im in images}) == 1:
                self._u8 = images_to_uint8(images)
            else:
                self._cache = images

    def __len__(self):
        return len(self.samples)

    def _image(self, i):
        if self._u8 is not None:
            return Image.fromarray(self._u8[i].permute(1, 2, 0).numpy(), "RGB")
        return self._cache[i] if self._cache is not None else load_image(self.samples[i][0])

    def batch_transform(self):
        """``f(uint8 images, indices) -> [B, 3, s, s]`` when this dataset's views can be made batched, else None."""
        if self._u8 is None:
            return None
        tf, size = self.transform, tuple(self._u8.shape[-2:])
        if isinstance(tf, SeededViews) and tf.style == "cifar" and size == (tf.img_size, tf.img_size):
            return tf.batch
        spec = getattr(tf, "batched_eval", None)  # (img_size, mean, std) of the CIFAR evaluation transform
        if spec is not None and size == (spec[0], spec[0]):
            mean, std = torch.tensor(spec[1]).view(3, 1, 1), torch.tensor(spec[2]).view(3, 1, 1)
            return lambda images, idx: normalise_uint8(images[torch.as_tensor(idx, dtype=torch.long)], mean, std)
        return None

    def __getitems__(self, indices):
        fn = self.batch_transform()
        if fn is None:
            return [self[i] for i in indices]
        x = fn(self._u8, list(indices))
        return list(zip(x.unbind(0), [self.samples[i][1] for i in indices]))

    def __getitem__(self, i):
        path, y = self.samples[i]
        img = self._image(i)
        if self.transform is not None:
            # a seeded transform (lskd_vision.augment) makes the view of sample i in the current epoch
            img = self.transform(img, i) if getattr(self.transform, "indexed", False) else self.transform(img)
        return img, y

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose views a seeded transform makes (like ``DistributedSampler.set_epoch``)."""
        if hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(epoch)


def image_size(path: str) -> Tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:
        raise DatasetError(f"cannot read image {path!r} ({type(e).__name__}: {e}): replace or remove the file") from e


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_transforms(style: str, img_size: int, augment: bool = True, seed: Optional[int] = None):
    """(train, eval) transforms. ``style``: ``cifar`` (pad-4 crop + flip) or ``imagenet``.

    With ``seed``, the train transform is ``lskd_vision.augment.SeededViews``: the view of
    sample i in epoch e is a pure function of (seed, e, i)."""
    from torchvision import transforms as T

    if style == "cifar":
        norm = T.Normalize(CIFAR_MEAN, CIFAR_STD)
        ev = T.Compose([T.Resize((img_size, img_size)), T.ToTensor(), norm])
        ev.batched_eval = (img_size, CIFAR_MEAN, CIFAR_STD)  # ImageDataset batches it on same-size uint8 images
        if not augment:
            return ev, ev
        if seed is not None:
            return SeededViews("cifar", img_size, seed, CIFAR_MEAN, CIFAR_STD), ev
        tr = T.Compose(
            [
                T.Resize((img_size, img_size)),
                T.RandomCrop(img_size, padding=max(1, img_size // 8)),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                norm,
            ]
        )
        return tr, ev
    if style == "imagenet":
        norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        resize = int(round(img_size / 0.875))
        ev = T.Compose([T.Resize(resize), T.CenterCrop(img_size), T.ToTensor(), norm])
        if not augment:
            return ev, ev
        if seed is not None:
            return SeededViews("imagenet", img_size, seed, IMAGENET_MEAN, IMAGENET_STD), ev
        tr = T.Compose([T.RandomResizedCrop(img_size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        return tr, ev
    raise ValueError(f"unknown input style {style!r}; choose cifar or imagenet")


class ShardSampler(torch.utils.data.Sampler):
    """Indices rank, rank + world, ... without padding (for evaluation under DDP)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.idx = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.idx)

    def __len__(self):
        return len(self.idx)


__all__ = [
    "DatasetError",
    "Samples",
    "Splits",
    "scan_image_folder",
    "find_splits",
    "extract_archive",
    "carve_val",
    "per_class_subset",
    "long_tail",
    "long_tail_counts",
    "shot_groups",
    "load_image",
    "verify_images",
    "ImageDataset",
    "build_transforms",
    "ShardSampler",
]
