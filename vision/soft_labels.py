"""Soft-label caches made by ``lskd-vision-cache``: layout, header, checks, and the reader
that KD students use instead of running their teacher (``lskd-vision-train --teacher-cache``).

Layout of a cache folder::

    pending.json                 what is being built (written first; resume checks it)
    epoch_0000.logits.npy        (N, K) float16: the teacher's logits of every view of epoch 0
    epoch_0000.index.npy         (N, k) int16/int32: top-k class ids (only when K > 100;
                                 the logits file is then (N, k), sorted by logit)
    ...
    cache.json                   the header, written last: the cache is complete

Row i of epoch e holds the teacher's output on the view of training sample i that a
student with the cache's seed sees in epoch e (``lskd_vision.augment``). Each epoch's
files are written under temporary names and renamed when full, so an epoch file is
either complete or absent, and a rerun resumes after the last complete epoch.
"""

import hashlib
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from lskd_fairseq import integrity
from lskd_fairseq.integrity import ArtifactError

FORMAT = "lskd_vision_cache/1"
HEADER = "cache.json"
PENDING = "pending.json"
FULL_MAX_CLASSES = 100  # up to this many classes every logit is stored, else the top k

# options that decide which images a student sees, as (config key, command-line option)
VIEW_OPTIONS = (
    ("val_fraction", "--val-fraction"),
    ("split_seed", "--split-seed"),
    ("train_per_class", "--train-per-class"),
    ("imbalance_factor", "--imbalance-factor"),
    ("input_style", "--input-style"),
    ("img_size", "--img-size"),
    ("augment", "--no-augment"),
    ("seed", "--seed"),
)


class CacheError(ArtifactError):
    """A teacher cache that is missing, incomplete, or made for another run."""


def epoch_files(folder: str, epoch: int, storage: str) -> List[str]:
    """The files of one epoch: [logits] (full) or [index, logits] (top-k)."""
    stem = os.path.join(folder, f"epoch_{epoch:04d}")
    return ([stem + ".index.npy"] if storage == "topk" else []) + [stem + ".logits.npy"]


def epoch_done(folder: str, epoch: int, storage: str, records: Optional[Dict] = None) -> bool:
    """The epoch's files are there and complete, and equal to what a header's ``records``
    (``files``) says they were; a damaged one is written again."""
    try:
        for f in epoch_files(folder, epoch, storage):
            integrity.check_npy(f)
            integrity.check_file_record(f, (records or {}).get(os.path.basename(f)))
    except ArtifactError:
        return False
    return True


def rebuild_command(folder: str, header: Dict) -> str:
    return header.get("command") or f"lskd-vision-cache DATA --teacher T.pt --out {folder} --epochs E --seed S"


def index_dtype(num_classes: int):
    return np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32


file_sha256 = integrity.sha256_file


def file_list_sha256(samples: Sequence, root: str, classes: Sequence[str]) -> str:
    """Hash of the training list: paths relative to the dataset root, file sizes, labels, class names.

    Sizes (not contents) keep it cheap on ImageNet while telling apart datasets whose
    file names coincide; the dataset may move (or be extracted elsewhere) freely."""
    h = hashlib.sha256()
    h.update("\n".join(classes).encode("utf-8") + b"\n\n")
    for path, label in samples:
        h.update(f"{os.path.relpath(path, root)}\t{os.path.getsize(path)}\t{label}\n".encode("utf-8"))
    return h.hexdigest()


def run_identity(args, train_dataset, info: Dict) -> Dict:
    """What a cache must share with a run: the view options, the training list and its classes.

    ``args`` must have been through ``lskd_vision.train.prepare_data`` (input style and
    image size resolved); ``train_dataset`` is the training ``ImageDataset``.
    """
    tf = train_dataset.transform
    return {
        "options": {key: getattr(args, key) for key, _ in VIEW_OPTIONS},
        "views": tf.describe() if hasattr(tf, "describe") else None,
        "num_classes": int(info["num_classes"]),
        "classes": list(info["classes"]),
        "num_train": len(train_dataset),
        "file_list_sha256": file_list_sha256(train_dataset.samples, info["root"], info["classes"]),
    }


def identity_differences(cache: Dict, run: Dict) -> List[str]:
    """Human-readable differences between a cache's identity and a run's, options by name."""
    out = []
    if cache.get("num_classes") != run["num_classes"]:
        out.append(f"class count (cache {cache.get('num_classes')}, run {run['num_classes']})")
    elif cache.get("classes") != run["classes"]:
        out.append("class names or order")
    if cache.get("num_train") != run["num_train"] or cache.get("file_list_sha256") != run["file_list_sha256"]:
        out.append(f"dataset (training list of {cache.get('num_train')} images, hash "
                   f"{str(cache.get('file_list_sha256'))[:12]}; the run has {run['num_train']} images, hash "
                   f"{run['file_list_sha256'][:12]})")
    opts = cache.get("options", {})
    for key, flag in VIEW_OPTIONS:
        if opts.get(key) != run["options"][key]:
            out.append(f"{flag} (cache {opts.get(key)!r}, run {run['options'][key]!r})")
    if not out and cache.get("views") != run["views"]:
        out.append(f"augmentation rule (cache {cache.get('views')}, run {run['views']})")
    return out


def read_header(folder: str) -> Dict:
    """The complete cache's header; refuses a missing, interrupted or foreign folder."""
    if not os.path.isdir(folder):
        raise CacheError(f"teacher cache {folder!r} does not exist (make it with lskd-vision-cache)")
    path = os.path.join(folder, HEADER)
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(folder, PENDING)):
            raise CacheError(f"teacher cache {folder!r} is incomplete (no {HEADER}: lskd-vision-cache was "
                             f"interrupted); rerun it with the same options to finish it")
        raise CacheError(f"{folder!r} is not an lskd-vision-cache folder (no {HEADER})")
    header = integrity.load_json(path, "teacher cache header", rebuild=rebuild_command(folder, {}))
    if header.get("format") != FORMAT or not header.get("complete"):
        raise CacheError(f"{path!r} is not a complete {FORMAT} header")
    return header


class SoftLabels:
    """Reader of a complete cache for one run: ``set_epoch(e)``, then ``labels(indices)``.

    ``labels`` returns the stored teacher output for those training samples in the
    current epoch, on ``device``: a float16 (B, K) logit tensor, or a pair (class ids,
    float16 logits) of shape (B, k). Each DDP rank reads only the rows of its indices.
    """

    def __init__(self, folder: str, header: Dict, device="cpu"):
        self.folder, self.header, self.device = folder, header, torch.device(device)
        self.storage, self.k, self.num_train = header["storage"], int(header["k"]), int(header["identity"]["num_train"])
        self.epoch = 0
        self._open: Dict[int, List[np.ndarray]] = {}
        self._verified = set()  # files checked against the header once (size, dtype, shape, hash)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _arrays(self, epoch: int) -> List[np.ndarray]:
        if epoch not in self._open:
            arrays = []
            rebuild = rebuild_command(self.folder, self.header)
            records = self.header.get("files") or {}
            for f, dtype in zip(epoch_files(self.folder, epoch, self.storage),
                                ([index_dtype(int(self.header["num_classes"]))] if self.storage == "topk" else [])
                                + [np.float16]):
                if not os.path.isfile(f):
                    raise CacheError(f"teacher cache {self.folder!r} lacks {os.path.basename(f)}; "
                                     f"rebuild it with `{rebuild}`")
                if f not in self._verified:
                    integrity.check_npy(f, (self.num_train, self.k), dtype, rebuild)
                    integrity.check_file_record(f, records.get(os.path.basename(f)), rebuild)
                    self._verified.add(f)
                arrays.append(np.load(f, mmap_mode="r"))
            self._open = {epoch: arrays}  # keep one epoch's maps open
        return self._open[epoch]

    def labels(self, indices: torch.Tensor):
        rows = np.asarray(indices.cpu().numpy(), dtype=np.int64)
        arrays = self._arrays(self.epoch)
        out = [torch.from_numpy(np.ascontiguousarray(a[rows])).to(self.device, non_blocking=True) for a in arrays]
        if self.storage == "topk":
            return out[0].long(), out[1]
        return out[0]

    __call__ = labels

    def describe(self) -> Dict:
        """What ``config.json`` records about the cache."""
        h = self.header
        return {"path": os.path.abspath(self.folder), "teachers": h["teachers"], "storage": self.storage,
                "k": self.k, "epochs": h["epochs"], "seed": h["identity"]["options"]["seed"]}


def open_for_run(folder: str, args, train_dataset, info: Dict, device="cpu") -> SoftLabels:
    """Open a cache for a student run, refusing one made for other views, data or epochs."""
    header = read_header(folder)
    diff = identity_differences(header["identity"], run_identity(args, train_dataset, info))
    if int(header["epochs"]) < args.epochs:
        diff.append(f"--epochs (cache holds {header['epochs']} epochs, run needs {args.epochs})")
    if diff:
        raise CacheError(f"teacher cache {folder!r} was made for another run; it differs in: " + "; ".join(diff)
                         + ". Make a cache with these options (lskd-vision-cache) or change them")
    if header["storage"] == "topk" and args.kd_topk > int(header["k"]):
        raise CacheError(f"--kd-topk {args.kd_topk} asks for more classes than teacher cache {folder!r} "
                         f"holds (top {header['k']}); use --kd-topk <= {header['k']}")
    labels = SoftLabels(folder, header, device)
    for epoch in range(args.epochs):  # every epoch the run needs is there, with the right shape
        labels._arrays(epoch)
    return labels


class IndexedDataset(torch.utils.data.Dataset):
    """``(image, label, index)`` from a dataset of ``(image, label)``; forwards ``set_epoch``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x, y, i

    def __getitems__(self, indices):
        """A batch at once when the wrapped dataset makes one (``ImageDataset.__getitems__``)."""
        get = getattr(type(self.dataset), "__getitems__", None)
        items = get(self.dataset, indices) if get is not None else [self.dataset[i] for i in indices]
        return [(x, y, i) for (x, y), i in zip(items, indices)]

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getattr__(self, name):  # samples, classes, transform of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


__all__ = ["CacheError", "FORMAT", "HEADER", "PENDING", "FULL_MAX_CLASSES", "VIEW_OPTIONS", "IndexedDataset",
           "SoftLabels", "epoch_done", "epoch_files", "file_list_sha256", "file_sha256", "identity_differences",
           "index_dtype", "open_for_run", "read_header", "run_identity"]
