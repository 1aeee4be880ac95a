"""Stability (Shen et al. 2021, Eq. 2) and calibration of real checkpoints, streaming.

* ``vision_stability``: an lskd_vision checkpoint on an image split; the classes
  are the image labels, the distributions the model's softmax outputs.
* ``pretrained_stability``: the same for a plain state dict of a torchvision or
  timm model (``--arch ARCH``; the weights' own evaluation transform: resize,
  centre crop, normalisation from torchvision's weights meta / timm's
  pretrained_cfg), on a folder of class folders or a dataset root.
* ``fairseq_stability``: a fairseq translation checkpoint on a data-bin split;
  the classes are the gold target tokens and the distributions are the model's
  token distributions under teacher forcing (full vocabulary). ``top_tokens=N``
  keeps only positions whose gold token is one of the N most frequent target
  tokens (by the counts in the target dictionary, i.e. training-set frequency;
  the special symbols <s>, <pad>, </s>, <unk> are never classes), which bounds the
  meter's memory at N x |V| float64 numbers.

Both feed ``lskd_fairseq.metrics.StabilityMeter`` and ``CalibrationMeter`` batch by
batch; nothing proportional to the number of samples is kept (except the optional
penultimate features for the projection plot, requested explicitly).
"""

import os
from typing import Dict, List, Optional

import torch

from lskd_fairseq.metrics import CalibrationMeter, StabilityMeter


# ------------------------------------------------------------------ vision
def detect_kind(path: str) -> str:
    """'vision' for an lskd_vision checkpoint, 'fairseq' otherwise."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return "fairseq"  # fairseq checkpoints need the plugin's allow-list to load weights_only
    if isinstance(obj, dict) and str(obj.get("format", "")).startswith("lskd_vision"):
        return "vision"
    return "fairseq"


def is_plain_state_dict(path: str) -> bool:
    """A ``.safetensors`` file, or a dict of tensors readable with ``weights_only=True``."""
    if path.endswith(".safetensors"):
        return True
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _vision_loader(config: Dict, data: Optional[str], split: str, batch_size: int, limit_per_class: int = 0,
                   seed: int = 0, workers: int = 0):
    """A DataLoader over ``split`` of the checkpoint's dataset (or ``data``), eval transforms.

    Thin adapter over lskd_vision.data (owned by the vision package): ``test`` is
    the held-out folder; ``train``/``val`` are re-carved from the training images
    with the checkpoint's own validation fraction and seed when it records them.
    """
    from lskd_vision import data as vdata

    path = data or config.get("data")
    if not path:
        raise ValueError("no dataset path: pass --data (the checkpoint does not record one)")
    splits = vdata.find_splits(path, cache_dir=config.get("cache_dir"))
    if split == "test":
        samples = splits.test
        if samples is None:
            raise ValueError(f"{path} has no test split")
    elif split in ("train", "val"):
        frac = config.get("val_fraction", config.get("val_split"))
        vseed = int(config.get("split_seed", config.get("seed", 0)))
        train = splits.train
        if frac:
            tr, va = vdata.carve_val(train, float(frac), vseed)
            samples = tr if split == "train" else va
        elif split == "val":
            raise ValueError("the checkpoint records no validation fraction; use --split test or train")
        else:
            samples = train
    else:
        raise ValueError(f"unknown split {split!r}; choose test, val or train")
    if config.get("classes") and list(config["classes"]) != list(samples.classes):
        raise ValueError(
            f"the checkpoint's classes {config['classes'][:5]}... differ from the dataset's {samples.classes[:5]}..."
        )
    if limit_per_class:
        samples = vdata.per_class_subset(samples, limit_per_class, seed)
    style = config.get("input_style") or config.get("style") or "cifar"
    img_size = int(config.get("img_size", 32))
    _, ev = vdata.build_transforms(style, img_size, augment=False)
    ds = vdata.ImageDataset(samples, ev)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    return loader, samples.classes


def vision_stability(
    checkpoint: str,
    data: Optional[str] = None,
    split: str = "test",
    batch_size: int = 256,
    num_bins: int = 15,
    limit_per_class: int = 0,
    keep_features_of: Optional[List[int]] = None,
    max_features_per_class: int = 500,
    workers: int = 0,
) -> Dict:
    """1-S, S, per-class 1-S, ECE/reliability, class-mean softmax vectors, accuracy.

    ``keep_features_of``: class indices whose penultimate activations (at most
    ``max_features_per_class`` each, the first ones in split order) are returned
    under ``"features"`` / ``"feature_labels"`` with the classifier weight, for the
    projection plot.
    """
    from lskd_vision.engine import load_checkpoint_model

    model, config = load_checkpoint_model(checkpoint)
    loader, classes = _vision_loader(config, data, split, batch_size, limit_per_class, workers=workers)
    out = _measure(model, loader, classes, num_bins, keep_features_of, max_features_per_class)
    out.update({
        "checkpoint": os.path.abspath(checkpoint),
        "split": split,
        "label_smoothing": config.get("label_smoothing", config.get("ls")),
    })
    return out


def _measure(model, loader, classes, num_bins: int = 15, keep_features_of: Optional[List[int]] = None,
             max_features_per_class: int = 500, device: str = "cpu", progress: bool = False) -> Dict:
    """Stream ``model`` over ``loader``: 1-S, calibration, accuracy (and optional features).

    ``progress``: a tqdm bar over the batches (when tqdm is installed)."""
    from lskd_vision.engine import iterate_outputs
    from lskd_vision.models import get_classifier

    k = len(classes)
    meter = StabilityMeter(k)
    cal = CalibrationMeter(num_bins)
    correct = correct5 = 0
    n = 0
    entropy = 0.0
    feats, flabels = [], []
    kept = {c: 0 for c in (keep_features_of or [])}
    want_features = bool(keep_features_of)
    if progress:
        try:
            from tqdm import tqdm

            loader = tqdm(loader, desc="images", unit="batch", dynamic_ncols=True, mininterval=1.0)
        except ImportError:
            pass
    for logits, labels, f in iterate_outputs(model, loader, device=device, features=want_features):
        probs = logits.softmax(-1)
        meter.update(probs, labels)
        cal.update(probs, labels)
        correct += int(logits.argmax(-1).eq(labels).sum())
        correct5 += int(logits.topk(min(5, k), dim=-1).indices.eq(labels[:, None]).any(-1).sum())
        n += labels.numel()
        entropy -= float((probs * torch.log_softmax(logits.float(), -1)).sum())
        if want_features:
            for c in kept:
                room = max_features_per_class - kept[c]
                if room <= 0:
                    continue
                sel = (labels == c).nonzero().squeeze(-1)[:room]
                if sel.numel():
                    feats.append(f[sel])
                    flabels.append(labels[sel])
                    kept[c] += sel.numel()
    res = meter.compute()
    out = {
        "kind": "vision",
        "num_samples": n,
        "accuracy": 100.0 * correct / max(1, n),
        "top5": 100.0 * correct5 / max(1, n),
        "mean_entropy": entropy / max(1, n),  # nats, of the softmax outputs
        "classes": list(classes),
        "S": res["S"],
        "one_minus_S": res["one_minus_S"],
        "per_class": res["per_class"],
        "counts": res["counts"],
        "empty_classes": res["empty_classes"],
        "class_means": meter.mean.tolist(),
        "calibration": cal.compute(),
    }
    if want_features:
        w = get_classifier(model).weight.detach().float().cpu()
        out["features"] = torch.cat(feats).numpy() if feats else None
        out["feature_labels"] = torch.cat(flabels).numpy() if flabels else None
        out["classifier_weight"] = w.numpy()
    return out


# ------------------------------------------------------------------ pretrained torchvision / timm weights
def _pretrained_samples(data: str, split: str, labels: Optional[str] = None):
    """Image samples for a state dict: a validation folder (class folders, or ImageNet's flat
    val/ with its labels file: ``lskd_study.imagenet_val``), or a dataset root's split."""
    from lskd_vision import data as vdata

    from .imagenet_val import imagenet_val_samples

    if not os.path.isdir(data) and not os.path.isfile(data):
        raise ValueError(f"--data {data!r} does not exist")
    if labels or (os.path.isdir(data) and not os.path.isdir(os.path.join(data, "train"))
                  and not os.path.exists(os.path.join(data, "train_test_split.txt"))):
        return imagenet_val_samples(data, labels)
    splits = vdata.find_splits(data)
    if split == "test":
        if splits.test is None:
            raise ValueError(f"{data} has no test split (val/ or test/)")
        return splits.test
    if split == "train":
        return splits.train
    raise ValueError(f"--split {split!r}: a dataset root with plain weights has the splits test and train")


def pretrained_eval_transform(cfg: Dict):
    """Resize, centre crop and normalise as the weights' own configuration says."""
    from torchvision import transforms

    interpolation = transforms.InterpolationMode(cfg.get("interpolation", "bilinear"))
    return transforms.Compose([
        transforms.Resize(int(cfg["resize_size"]), interpolation=interpolation),
        transforms.CenterCrop(int(cfg["input_size"])),
        transforms.ToTensor(),
        transforms.Normalize(cfg["mean"], cfg["std"]),
    ])


def pretrained_stability(
    weights: str,
    arch: str,
    data: str,
    split: str = "test",
    batch_size: int = 256,
    num_bins: int = 15,
    limit_per_class: int = 0,
    workers: int = 0,
    device: str = "cpu",
    progress: bool = False,
    labels: Optional[str] = None,
) -> Dict:
    """``vision_stability`` for a plain state dict of ``arch`` (torchvision name or ``timm:NAME``).

    The class count of the weights must equal the data's (class index = sorted
    folder name, torchvision's and timm's ImageNet order when the folders are the
    WordNet ids). ``labels``: the labels file of ImageNet's flat val/ layout.
    """
    from lskd_vision import data as vdata
    from lskd_vision.models import build_model, check_arch, input_config
    from lskd_vision.weights import fit_state_dict, read_state_dict

    check_arch(arch)
    if not data:
        raise ValueError("--arch needs --data DIR: the image folder to measure on")
    samples = _pretrained_samples(data, split, labels)
    if limit_per_class:
        samples = vdata.per_class_subset(samples, limit_per_class, 0)
    model = build_model(arch, len(samples.classes))
    fit_state_dict(model, read_state_dict(weights, "weights"), arch, weights, "weights")
    cfg = input_config(arch, model)
    ds = vdata.ImageDataset(samples, pretrained_eval_transform(cfg))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    out = _measure(model.to(device).eval(), loader, samples.classes, num_bins, device=device, progress=progress)
    out.update({"checkpoint": os.path.abspath(weights), "arch": arch, "split": split,
                "data": os.path.abspath(data), "input": cfg, "label_smoothing": None})
    return out


# ------------------------------------------------------------------ fairseq
def _setup_fairseq(checkpoint: str, data_bin: Optional[str]):
    """Task (with the checkpoint's settings, data redirected to ``data_bin``) and model."""
    import lskd_fairseq.tasks  # noqa: F401  (registers the plugin, torch>=2.6 checkpoint loading)
    from fairseq import tasks
    from omegaconf import open_dict

    from lskd_fairseq.teacher import Teacher, load_checkpoint_state

    state = load_checkpoint_state(checkpoint)
    cfg = state["cfg"]
    with open_dict(cfg):
        if data_bin:
            cfg.task.data = data_bin
        if "teacher_path" in cfg.task:
            cfg.task.teacher_path = ""  # the model is scored, not distilled: no teacher needed
    task = tasks.setup_task(cfg.task)
    model = Teacher.load([checkpoint], task)  # the project's one checkpoint loader: frozen, eval mode
    return task, model, cfg


def frequent_target_tokens(dictionary, n: int) -> List[int]:
    """Indices of the ``n`` most frequent non-special target symbols (ties: lower index first)."""
    cand = list(range(dictionary.nspecial, len(dictionary)))
    cand.sort(key=lambda i: (-dictionary.count[i], i))
    return cand[:n] if n > 0 else cand


def fairseq_stability(
    checkpoint: str,
    data_bin: Optional[str] = None,
    split: str = "valid",
    top_tokens: int = 1000,
    max_tokens: int = 4096,
    num_bins: int = 15,
    max_sentences: int = 0,
) -> Dict:
    """1-S over gold target tokens, with teacher forcing; token-level ECE over all positions.

    ``top_tokens=0`` uses every non-special target symbol as a class (memory
    |V|^2 float64: fine for small vocabularies only).
    """
    task, teacher, cfg = _setup_fairseq(checkpoint, data_bin)
    tgt = task.target_dictionary
    pad = tgt.pad()
    vocab = len(tgt)
    classes = frequent_target_tokens(tgt, top_tokens)
    mem = len(classes) * vocab * 8
    if mem > 4 * 2**30:
        raise MemoryError(
            f"{len(classes)} classes x {vocab} vocabulary needs {mem / 2**30:.1f} GiB; lower --top-tokens"
        )
    class_of = torch.full((vocab,), -1, dtype=torch.long)
    class_of[torch.tensor(classes, dtype=torch.long)] = torch.arange(len(classes))
    meter = StabilityMeter(len(classes), dim=vocab)
    cal = CalibrationMeter(num_bins)
    task.load_dataset(split)
    dataset = task.dataset(split)
    itr = task.get_batch_iterator(
        dataset=dataset,
        max_tokens=max_tokens,
        max_sentences=max_sentences or None,
        max_positions=None,
        ignore_invalid_inputs=False,
        required_batch_size_multiple=1,
        seed=1,
        num_shards=1,
        shard_id=0,
        num_workers=0,
    ).next_epoch_itr(shuffle=False)
    n_tok = n_cls_tok = correct = 0
    nll = 0.0
    for sample in itr:
        if not sample or "net_input" not in sample:
            continue
        target = sample["target"]
        out = teacher.score(sample["net_input"], target, pad, topk=0)
        logits = out.dist.float().reshape(-1, vocab)
        lprobs = torch.log_softmax(logits, -1)
        probs = lprobs.exp()
        flat = target.reshape(-1)
        keep = flat.ne(pad)
        gold = torch.where(keep, flat, torch.full_like(flat, -1))
        cal.update(probs, gold)
        labels = torch.where(keep, class_of[flat], torch.full_like(flat, -1))
        meter.update(probs, labels)
        n_tok += int(keep.sum())
        n_cls_tok += int((labels >= 0).sum())
        correct += int((logits.argmax(-1).eq(flat) & keep).sum())
        nll += float(out.nll_sum)
    res = meter.compute()
    per_class = res["per_class"]
    order = sorted(
        (i for i in range(len(classes)) if res["counts"][i] > 0), key=lambda i: -res["counts"][i]
    )
    import math

    crit = cfg.get("criterion") or {}
    return {
        "kind": "fairseq",
        "checkpoint": os.path.abspath(checkpoint),
        "data": str(task.cfg.data),
        "split": split,
        "num_tokens": n_tok,
        "num_tokens_in_classes": n_cls_tok,
        "token_accuracy": 100.0 * correct / max(1, n_tok),
        "nll_per_token": nll / max(1, n_tok),
        "perplexity": math.exp(min(50.0, nll / max(1, n_tok))),
        "top_tokens": top_tokens,
        "classes": [tgt[i] for i in classes],
        "class_token_ids": classes,
        "S": res["S"],
        "one_minus_S": res["one_minus_S"],
        "num_classes_used": res["num_classes_used"],
        "per_class": per_class,
        "counts": res["counts"],
        "empty_classes": res["empty_classes"],
        "by_frequency": [classes[i] for i in order],
        "calibration": cal.compute(),
        "label_smoothing": crit.get("label_smoothing") if hasattr(crit, "get") else None,
    }


def format_table(result: Dict, max_rows: int = 20) -> str:
    """Human-readable summary: totals then per-class 1-S (the most frequent classes)."""
    lines = []
    kind = result["kind"]
    lines.append(f"checkpoint : {result['checkpoint']}")
    lines.append(f"split      : {result['split']}")
    if kind == "vision":
        top5 = f"   top-5 {result['top5']:.2f}%" if "top5" in result else ""
        lines.append(f"samples    : {result['num_samples']}   top-1 {result['accuracy']:.2f}%{top5}")
    else:
        lines.append(
            f"tokens     : {result['num_tokens']} ({result['num_tokens_in_classes']} in the "
            f"{result['num_classes_used']} token classes)   token acc {result['token_accuracy']:.2f}%   "
            f"ppl {result['perplexity']:.2f}"
        )
    lines.append(f"S          : {result['S']:.6f}")
    lines.append(f"1-S        : {result['one_minus_S']:.6f}")
    lines.append(f"ECE        : {result['calibration']['ece']:.4f}")
    lines.append("")
    lines.append(f"{'class':<24} {'n':>8} {'1-S':>10}")
    classes = result["classes"]
    idx = list(range(len(classes)))
    if kind == "fairseq":
        pos = {t: i for i, t in enumerate(result["class_token_ids"])}
        idx = [pos[t] for t in result["by_frequency"]]
    shown = idx[:max_rows] if max_rows else idx
    for i in shown:
        v = result["per_class"][i]
        vs = "nan" if v != v else f"{v:.6f}"
        lines.append(f"{str(classes[i])[:24]:<24} {result['counts'][i]:>8} {vs:>10}")
    if len(shown) < len(idx):
        lines.append(f"... {len(idx) - len(shown)} more classes in the JSON")
    return "\n".join(lines)
