"""lskd-vision-cache: store a teacher's soft labels for every view a student will see.

    lskd-vision-cache DATA --teacher T.pt [T2.pt ...] --out DIR --epochs E --seed S \\
        [the data options of lskd-vision-train]
    lskd-vision-train DATA --model resnet8 --teacher-cache DIR --seed S --epochs E ...

For every epoch e < E and training sample i the teacher (several checkpoints: an
ensemble, ``lskd_fairseq.losses.ensemble_log_probs``) runs on the view of sample i
in epoch e that a student with seed S sees (``lskd_vision.augment``), and its output
is stored in float16: every logit for up to 100 classes, the top ``--k`` classes
and their logits otherwise. Temperature, alpha and top-k are applied when the
student trains, so one cache serves a whole temperature sweep.

Epochs are written one by one under temporary names (a rerun resumes after the
last complete one; ``--epochs`` larger than a finished cache's extends it); the
header ``cache.json``, which marks the cache complete, is written last. The layout
is described in ``lskd_vision.soft_labels``.
"""

import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from typing import Dict, List

import numpy as np
import torch

from lskd_fairseq import console, integrity
from lskd_fairseq.atomic import atomic_path, atomic_write_json
from lskd_fairseq.errors import LskdError

from . import soft_labels as cache_format
from .engine import CheckpointError, load_teachers, style_input
from .data import DatasetError
from .models import UnknownArchitectureError
from .options import HelpFormatter, UsageError, check_numeric_options, resolve_teacher_archs
from .precision import add_precision_args, as_precision, resolve_precision
from .runtime import add_data_args, device_from_spec, prepare_data


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lskd-vision-cache",
        description="Run a vision teacher (or ensemble) on every view a seeded student will see and store "
        "its soft labels, so that KD students train without running the teacher.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("data", help="dataset, as for lskd-vision-train")
    p.add_argument("--teacher", nargs="+", required=True, metavar="CKPT",
                   help="teacher(s) as for lskd-vision-train: its checkpoints, or state dicts with --teacher-arch; "
                   "several = ensemble (mean softmax)")
    p.add_argument("--teacher-arch", nargs="+", default=None, metavar="ARCH",
                   help="as for lskd-vision-train: one per --teacher, a torchvision model name or timm:NAME for a "
                   "local state dict, or 'lskd' for an lskd-vision-train checkpoint; omitted: all lskd")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--epochs", type=int, required=True, help="epochs of views to store (the students' --epochs)")
    p.add_argument("--seed", type=int, required=True, help="the students' --seed (it fixes their views)")
    p.add_argument("--k", type=int, default=10, help="classes stored per view when there are more than "
                   f"{cache_format.FULL_MAX_CLASSES} (otherwise all logits are stored)")
    p.add_argument("--batch-size", "-b", type=int, default=256, help="views per teacher forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_precision_args(p, fp16_alias=True)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    p.add_argument("--overwrite", action="store_true",
                   help="discard a (partial) cache in --out that was made with other options")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--quiet", "-q", action="store_true", help="only the result line, warnings and errors")
    add_data_args(p)
    return p


def _check_args(args) -> None:
    check_numeric_options(args)  # the data options shared with lskd-vision-train, its ranges and messages
    if args.k < 1:
        raise UsageError(f"--k must be >= 1, got {args.k}")
    resolve_teacher_archs(args)
    for path in args.teacher:
        if not os.path.isfile(path):
            raise UsageError(f"teacher checkpoint {path!r} does not exist")
    integrity.check_output_dir(args.out, "--out")


def _spec(args, ds, info, teacher) -> Dict:
    """Everything that fixes the cache's content, except the number of epochs."""
    num_classes = int(info["num_classes"])
    storage = "full" if num_classes <= cache_format.FULL_MAX_CLASSES else "topk"
    k = num_classes if storage == "full" else min(args.k, num_classes)
    data_options = {a: getattr(args, a) for a in ("test_split", "val_fraction", "split_seed", "train_per_class",
                                                  "imbalance_factor", "input_style", "img_size", "augment")}
    return {
        "format": cache_format.FORMAT,
        "identity": cache_format.run_identity(args, ds["train"], info),
        "data": os.path.abspath(args.data),
        "data_options": data_options,
        "teachers": [{"path": os.path.abspath(p), "sha256": cache_format.file_sha256(p), "arch": c.get("arch"),
                      "input_style": c.get("input_style"), "img_size": c.get("img_size"), "input": c.get("input")}
                     for p, c in zip(args.teacher, teacher.configs)],
        "ensemble_rule": "lskd_fairseq.losses.ensemble_log_probs" if len(args.teacher) > 1 else None,
        "num_classes": num_classes,
        "storage": storage,
        "k": k,
        "logit_dtype": "float16",
        "index_dtype": np.dtype(cache_format.index_dtype(num_classes)).name if storage == "topk" else None,
    }


def _differences(old: Dict, new: Dict) -> List[str]:
    diff = cache_format.identity_differences(old.get("identity", {}), new["identity"])
    for key in ("format", "teachers", "storage", "k", "num_classes"):
        if key == "teachers":
            if [(t.get("sha256"), t.get("arch")) for t in old.get(key) or []] != [(t["sha256"], t["arch"]) for t in new[key]]:
                diff.append("teachers (files by SHA-256, or their architectures)")
        elif old.get(key) != new[key]:
            diff.append(f"{key} ({old.get(key)!r} -> {new[key]!r})")
    return diff


def _prepare_folder(args, spec: Dict):
    """Check what ``--out`` holds; return how many epochs a complete cache there already has,
    and the file records of its header."""
    out = args.out
    have, records = 0, {}
    for name in (cache_format.HEADER, cache_format.PENDING):
        path = os.path.join(out, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = {}
        diff = _differences(old, spec)
        if diff and not args.overwrite:
            raise UsageError(f"{out!r} holds a cache made with other options ({'; '.join(diff)}); "
                             f"use another --out, or --overwrite to discard it")
        if diff:
            _discard(out)
            return 0, {}
        if name == cache_format.HEADER:
            have, records = int(old.get("epochs", 0)), old.get("files") or {}
        break
    return have, records


def _discard(out: str) -> None:
    """Remove a cache's epoch files, then its header and pending record: interrupted half way,
    the folder still names the options its remaining epochs were made with."""
    for f in sorted(os.listdir(out)):
        if f.startswith("epoch_") and f.endswith(".npy"):
            os.unlink(os.path.join(out, f))
    for f in (cache_format.HEADER, cache_format.PENDING):
        if os.path.isfile(os.path.join(out, f)):
            os.unlink(os.path.join(out, f))


def _write_epoch(args, epoch, loader, dataset, teacher, device, spec, bar) -> float:
    """Run the teacher on every view of ``epoch``; return the seconds it took."""
    n, k, storage = len(dataset), spec["k"], spec["storage"]
    files = cache_format.epoch_files(args.out, epoch, storage)
    dtypes = ([cache_format.index_dtype(spec["num_classes"])] if storage == "topk" else []) + [np.float16]
    # args.precision (set by run); callers with only the old ``fp16`` flag get float16 autocast for it
    precision = getattr(args, "precision", None) or as_precision(bool(getattr(args, "fp16", False)))
    dataset.set_epoch(epoch)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(f, suffix=".npy")) for f in files]
        maps = [np.lib.format.open_memmap(t, mode="w+", dtype=d, shape=(n, k)) for t, d in zip(tmps, dtypes)]
        for t in tmps:  # reserved now: a full disk fails here (one line), not as a SIGBUS mid-epoch
            integrity.preallocate(t, os.path.getsize(t))
        seen = 0
        for x, _, idx in loader:
            x = precision.input(x, device)
            with torch.no_grad(), precision.autocast(device):
                z = teacher(x)
            z = z.float()  # stored as float16 from float32, whatever the teacher ran in
            if storage == "topk":
                z, ids = z.topk(k, dim=-1)
                maps[0][idx.numpy()] = ids.cpu().numpy().astype(dtypes[0])
            z16 = z.half()
            if not torch.isfinite(z16).all():
                raise UsageError(f"the teacher's output at epoch {epoch} is not finite in float16 "
                                 f"(largest |logit| {z.abs().max().item():.4g}); this teacher cannot be cached")
            maps[-1][idx.numpy()] = z16.cpu().numpy()
            seen += idx.numel()
            if bar is not None:
                bar.update(1)
        if seen != n:
            raise RuntimeError(f"epoch {epoch}: {seen} views written, expected {n}")
        for m in maps:
            m.flush()
        del maps
    return time.perf_counter() - t0


def run(args) -> Dict:
    _check_args(args)
    device = device_from_spec(args.device, 0)
    args.precision = resolve_precision(args, device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ds, info = prepare_data(args, 0, 1)
    # exactly as lskd-vision-train loads it: the same views reach the same teacher input
    teacher = load_teachers(args.teacher, info["num_classes"], info["classes"], device=device,
                            archs=args.teacher_arch, student_input=style_input(args.input_style, args.img_size))
    teacher = args.precision.model(teacher)
    spec = _spec(args, ds, info, teacher)
    os.makedirs(args.out, exist_ok=True)
    have, records = _prepare_folder(args, spec)
    # new epochs, and damaged ones again (each file checked once, its hash included)
    todo = [e for e in range(args.epochs) if not cache_format.epoch_done(args.out, e, spec["storage"], records)]
    if have >= args.epochs and not todo:
        console.result(f"lskd-vision-cache: {args.out} is complete ({have} epochs >= --epochs {args.epochs}); "
                       "nothing to do")
        return {"epochs_written": 0}
    header_path = os.path.join(args.out, cache_format.HEADER)
    atomic_write_json(os.path.join(args.out, cache_format.PENDING), dict(spec, epochs=args.epochs, complete=False))
    if os.path.exists(header_path):  # extending a complete cache: incomplete until the new header is written
        os.unlink(header_path)

    dataset = cache_format.IndexedDataset(ds["train"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False,
                                         num_workers=args.workers, pin_memory=device.type == "cuda")
    n = len(dataset)
    console.say(f"lskd-vision-cache: {len(args.teacher)} teacher(s) on {device} ({args.precision.describe()}), "
                f"{n} training images x {args.epochs} epochs, {spec['storage']} ({spec['k']} of "
                f"{spec['num_classes']} classes); {args.epochs - len(todo)} epoch(s) already done -> {args.out}")
    bar = console.progress_bar(total=len(todo) * len(loader), desc="views", unit="batch") if todo else None
    seconds = []
    try:
        for e in todo:
            seconds.append(_write_epoch(args, e, loader, dataset, teacher, device, spec, bar))
            console.say(f"epoch {e + 1}/{args.epochs}: {n} views in {seconds[-1]:.1f}s "
                        f"({n / seconds[-1]:.0f} images/s)")
    finally:
        if bar is not None:
            bar.close()
    row_bytes = spec["k"] * 2 + (spec["k"] * np.dtype(cache_format.index_dtype(spec["num_classes"])).itemsize
                                 if spec["storage"] == "topk" else 0)
    files = [f for e in range(args.epochs) for f in cache_format.epoch_files(args.out, e, spec["storage"])]
    total = sum(os.path.getsize(f) for f in files)
    hash_files = total <= integrity.HASH_LIMIT_BYTES
    header = dict(spec, epochs=args.epochs, complete=True, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  bytes_per_sample_epoch=row_bytes, bytes_on_disk=total,
                  files={os.path.basename(f): integrity.file_record(f, sha256=hash_files) for f in files},
                  command=getattr(args, "command", None),
                  build={"device": str(device), "fp16": args.precision.dtype == torch.float16,
                         "precision": args.precision.name, "memory_format": args.precision.memory_format,
                         "batch_size": args.batch_size,
                         "epoch_seconds": seconds,
                         "images_per_s": (len(seconds) * n / sum(seconds)) if seconds else None})
    atomic_write_json(header_path, header)
    os.unlink(os.path.join(args.out, cache_format.PENDING))
    console.result(f"lskd-vision-cache: done; {total / 2**20:.1f} MiB ({total / (n * args.epochs):.1f} bytes per "
          f"view, {row_bytes} of them logits{' and ids' if spec['storage'] == 'topk' else ''}); {header_path}")
    return header


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    console.configure(quiet=args.quiet, progress=args.progress)
    args.command = shlex.join(["lskd-vision-cache", *(sys.argv[1:] if argv is None else argv)])
    try:
        run(args)
    except (UsageError, UnknownArchitectureError, DatasetError, CheckpointError, LskdError) as e:
        console.error("lskd-vision-cache", str(e))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
