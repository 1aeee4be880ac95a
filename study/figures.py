"""From runs and checkpoints to the plot functions' data (shared by lskd-plot and lskd-study).

* ``stability_result(src)``: a stability result dict from a JSON written by
  ``lskd-stability --json`` or computed from a checkpoint.
* ``projection_panel(result, classes)``: Müller projection data from a vision
  stability result computed with ``keep_features_of``.
* ``vision_curve(run_dir)`` / ``fairseq_curve(log)``: per-epoch training loss and
  validation metric from an lskd-vision-train run (``metrics.csv``) or a
  fairseq-train log (``--log-format simple`` or ``json``).
"""

import csv
import json
import os
import re
from typing import Dict, List, Optional, Sequence

import numpy as np

from lskd_fairseq.atomic import atomic_write_json

from . import projection


def load_json(path: str) -> Dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path: str, obj) -> None:
    atomic_write_json(path, obj, indent=1, default=_jsonable)


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def stability_result(src: str, **kw) -> Dict:
    """A JSON from ``lskd-stability --json``, or a checkpoint to score now."""
    if src.endswith(".json"):
        return load_json(src)
    from . import stability

    if stability.detect_kind(src) == "vision":
        return stability.vision_stability(src, **{k: v for k, v in kw.items() if k in (
            "data", "split", "batch_size", "keep_features_of", "max_features_per_class", "limit_per_class")})
    return stability.fairseq_stability(src, **{k: v for k, v in kw.items() if k in ("data_bin", "split", "top_tokens")})


def class_indices(names_or_ids: Sequence[str], classes: Sequence[str]) -> List[int]:
    out = []
    for x in names_or_ids:
        x = str(x).strip()
        if x in classes:
            out.append(list(classes).index(x))
        elif x.isdigit() and int(x) < len(classes):
            out.append(int(x))
        else:
            raise ValueError(f"unknown class {x!r}; classes are {', '.join(classes)}")
    return out


def default_projection_classes(classes: Sequence[str]) -> List[str]:
    """cat/dog/ship on CIFAR-10 (two similar classes, one not); else the first three."""
    if all(c in classes for c in ("cat", "dog", "ship")):
        return ["cat", "dog", "ship"]
    return list(classes[:3])


def projection_panel(result: Dict, classes: Sequence[int], title: str, max_per_class: int = 0) -> Dict:
    if result.get("features") is None:
        raise ValueError("this stability result holds no penultimate features (compute it with keep_features_of)")
    p = projection.project_classes(np.asarray(result["features"]), np.asarray(result["feature_labels"]),
                             np.asarray(result["classifier_weight"]), classes, max_per_class=max_per_class)
    p["title"] = title
    p["summary"] = projection.cluster_summary(p["points"], p["labels"], classes)
    return p


def _float(x: Optional[str]) -> Optional[float]:
    try:
        return float(x) if x not in (None, "") else None
    except ValueError:
        return None


def vision_curve(run_dir: str, label: str) -> Dict:
    """Per-epoch ``train_loss`` and ``val_top1`` from an lskd-vision-train run folder."""
    path = os.path.join(run_dir, "metrics.csv")
    epoch, loss, val = [], [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            epoch.append(int(row["epoch"]))
            loss.append(_float(row.get("train_loss")))
            val.append(_float(row.get("val_top1")))
    return {"label": label, "epoch": epoch, "train_loss": loss,
            "valid": val if any(v is not None for v in val) else []}


def fairseq_curve(log_path: str, label: str) -> Dict:
    """Per-epoch train loss and validation BLEU (or, without --eval-bleu, validation loss).

    Reads fairseq-train's end-of-epoch lines ``| train | epoch 003 | loss ...`` and
    ``| valid | epoch 003 | ... | bleu ...`` (simple format), or the json format's
    ``{"epoch": 3, "train_loss": ...}`` / ``{"epoch": 3, "valid_bleu": ...}`` lines.
    """
    train, valid = {}, {}
    metric = None
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if "| train |" in line or "| valid |" in line:
                kind = "train" if "| train |" in line else "valid"
                fields = dict((k, v) for k, v in (_kv(part) for part in line.split("|")) if k)
                if "epoch" not in fields:
                    continue
                ep = int(float(fields["epoch"]))
                if kind == "train" and "loss" in fields:
                    train[ep] = float(fields["loss"])
                elif kind == "valid":
                    valid[ep] = fields
            elif line.lstrip().startswith("{") and '"epoch"' in line:
                try:
                    d = json.loads(line[line.index("{"):])
                except ValueError:
                    continue
                ep = int(d.get("epoch", 0))
                if "train_loss" in d:
                    train[ep] = float(d["train_loss"])
                if any(k.startswith("valid_") for k in d):
                    valid[ep] = {k[len("valid_"):]: d[k] for k in d if k.startswith("valid_")}
    eps = sorted(set(train) | set(valid))
    if any("bleu" in v for v in valid.values()):
        metric = "bleu"
    elif any("nll_loss" in v for v in valid.values()):
        metric = "nll_loss"
    elif valid:
        metric = "loss"
    vals = [(float(valid[e][metric]) if e in valid and metric in valid[e] else None) for e in eps]
    return {"label": label, "epoch": eps, "train_loss": [train.get(e) for e in eps],
            "valid": vals if metric else [], "metric": metric}


def _kv(part: str):
    part = part.strip()
    m = re.fullmatch(r"([A-Za-z_][\w]*) ([-+0-9.eE]+|inf|nan)", part)
    if m:
        return m.group(1), m.group(2)
    return None, None
