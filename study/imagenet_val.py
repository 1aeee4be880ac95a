"""ImageNet validation folders for ``lskd-stability --arch``: two layouts.

* Class folders: ``VAL/<wnid>/<image>`` (what torchvision's ``ImageNet`` and the
  common ``valprep.sh`` leave).
* The official flat ``val/``: ``VAL/ILSVRC2012_val_00000001.JPEG`` ... with the
  labels in a separate file, either
  - Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first
    token of ``PredictionString`` is the image's WordNet id), or
  - the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (line i: the
    ILSVRC2012 ID, 1..1000, of image i) with the devkit's ``data/meta.mat``
    beside it (ILSVRC2012 ID -> WordNet id; read with scipy, as torchvision does).
  ``labels`` may name the file (or the devkit folder); otherwise it is looked up
  in ``VAL`` and its parent.

Classes are WordNet ids in sorted order: the class indices of torchvision's and
timm's ImageNet weights. Anything else is refused with a message naming both layouts.
"""

import csv
import os
from typing import Dict, List, Optional, Tuple

from lskd_vision.data import IMG_EXTENSIONS, DatasetError, Samples, scan_image_folder

LOC_CSV = "LOC_val_solution.csv"
DEVKIT_GT = "ILSVRC2012_validation_ground_truth.txt"
LAYOUTS = (
    "expected class folders (VAL/<wnid>/<image>) or ImageNet's flat val/ (VAL/ILSVRC2012_val_00000001.JPEG ...) "
    f"with its labels: {LOC_CSV}, or the devkit's {DEVKIT_GT} with data/meta.mat (--labels FILE)"
)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def _candidates(folder: str) -> List[str]:
    out = []
    for d in (folder, os.path.dirname(os.path.abspath(folder))):
        out += [os.path.join(d, LOC_CSV), os.path.join(d, DEVKIT_GT),
                os.path.join(d, "ILSVRC2012_devkit_t12", "data", DEVKIT_GT)]
    return out


def read_loc_csv(path: str) -> Tuple[Dict[str, str], List[str]]:
    """(image id -> wnid, sorted wnids) from ``LOC_val_solution.csv``."""
    labels: Dict[str, str] = {}
    with open(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if not header or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise DatasetError(f"{path}: expected the header 'ImageId,PredictionString' of {LOC_CSV}")
        for ln, row in enumerate(rows, 2):
            if not row:
                continue
            parts = row[1].split() if len(row) > 1 else []
            if not parts or not parts[0].startswith("n"):
                raise DatasetError(f"{path}:{ln}: expected '<image id>,<wnid> <box> ...', got {','.join(row)!r}")
            labels[row[0].strip()] = parts[0]
    return labels, sorted(set(labels.values()))


def read_devkit(path: str) -> Tuple[Dict[str, str], List[str]]:
    """(image id -> wnid, the 1000 sorted wnids) from the devkit's ground truth and meta.mat."""
    if os.path.isdir(path):
        path = os.path.join(path, "data", DEVKIT_GT) if os.path.isdir(os.path.join(path, "data")) \
            else os.path.join(path, DEVKIT_GT)
    meta = os.path.join(os.path.dirname(path), "meta.mat")
    if not os.path.isfile(path) or not os.path.isfile(meta):
        raise DatasetError(f"devkit labels need {DEVKIT_GT} and meta.mat in one folder (the devkit's data/); "
                           f"missing: {', '.join(p for p in (path, meta) if not os.path.isfile(p))}")
    try:
        import scipy.io
    except ImportError:
        raise DatasetError(f"reading the devkit's meta.mat needs scipy (pip install scipy), or use {LOC_CSV}") from None
    synsets = scipy.io.loadmat(meta, squeeze_me=True)["synsets"]
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    labels = {}
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                labels[f"ILSVRC2012_val_{i:08d}"] = id_to_wnid[int(line)]
            except (ValueError, KeyError):
                raise DatasetError(f"{path}:{i}: expected an ILSVRC2012 ID of meta.mat, got {line.strip()!r}") from None
    return labels, sorted(id_to_wnid.values())


def flat_val_samples(folder: str, labels: Optional[str] = None) -> Samples:
    """Samples of a flat ImageNet val/ folder with its labels file."""
    if labels is None:
        found = [p for p in _candidates(folder) if os.path.isfile(p)]
        if not found:
            raise DatasetError(f"{folder!r} holds images but no class folders and no labels file was found: {LAYOUTS}")
        labels = found[0]
    if not os.path.exists(labels):
        raise DatasetError(f"--labels {labels!r} does not exist")
    if os.path.basename(labels) == DEVKIT_GT or os.path.isdir(labels):
        by_image, classes = read_devkit(labels)
    elif labels.endswith(".csv"):
        by_image, classes = read_loc_csv(labels)
    else:
        raise DatasetError(f"--labels {labels!r} is neither {LOC_CSV} nor the devkit's {DEVKIT_GT}")
    index = {w: i for i, w in enumerate(classes)}
    images = sorted(n for n in os.listdir(folder) if _is_image(n))
    unlabelled = [n for n in images if os.path.splitext(n)[0] not in by_image]
    if unlabelled:
        raise DatasetError(f"{len(unlabelled)} image(s) in {folder!r} have no label in {labels!r} "
                           f"(first: {unlabelled[0]}): is it the labels file of this folder?")
    samples = [(os.path.join(folder, n), index[by_image[os.path.splitext(n)[0]]]) for n in images]
    return Samples(samples, classes, folder)


def imagenet_val_samples(folder: str, labels: Optional[str] = None) -> Samples:
    """Class folders as they are, or the flat layout with its labels; refuse anything else."""
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder!r} is not a folder: {LAYOUTS}")
    entries = [e for e in os.listdir(folder) if not e.startswith(".")]
    dirs = [e for e in entries if os.path.isdir(os.path.join(folder, e))]
    images = [e for e in entries if _is_image(e)]
    if images and not dirs:
        return flat_val_samples(folder, labels)
    if dirs and not images and labels is None:
        return scan_image_folder(folder)
    what = ("both class folders and loose images" if dirs and images else
            "class folders, so --labels does not apply" if dirs else "neither class folders nor images")
    raise DatasetError(f"{folder!r} has {what}: {LAYOUTS}")


__all__ = ["LAYOUTS", "flat_val_samples", "imagenet_val_samples", "read_devkit", "read_loc_csv"]
