"""lskd-stability: the paper's stability metric (1-S, S, per class) for a checkpoint.

Vision (an lskd_vision checkpoint, image labels are the classes)::

    lskd-stability runs/teacher_ls/checkpoint_best.pt --split test --json out.json

fairseq (classes = gold target tokens, distributions = the model's token
distributions under teacher forcing; ``--top-tokens N`` keeps the N most frequent
target tokens as classes)::

    lskd-stability checkpoints/teacher/checkpoint_best.pt --data data-bin/multi30k \
        --split valid --top-tokens 1000 --json out.json

Plain torchvision or timm weights (a local state dict; nothing is downloaded),
on a folder of class folders or a dataset root, with the weights' own resize,
crop and normalisation::

    lskd-stability resnet50-11ad3fa6.pth --arch resnet50 --data /data/imagenet/val --json r50.json

``--data`` there is a folder of class folders, or ImageNet's official flat val/
with ``--labels LOC_val_solution.csv`` (or the devkit's ground-truth file).

The kind is detected from the checkpoint (``--kind`` overrides). Prints a table;
``--json`` also writes every number (per-class values, counts, calibration bins).
"""

import argparse
import os
import sys

import torch
from lskd_fairseq import console


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lskd-stability", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="lskd_vision or fairseq checkpoint")
    p.add_argument("--kind", choices=["auto", "vision", "fairseq"], default="auto")
    p.add_argument("--arch", default=None,
                   help="the checkpoint is a plain state dict (.pth/.pt/.safetensors) of this torchvision model "
                        "or timm:NAME (the timm extra); needs --data")
    p.add_argument("--labels", default=None,
                   help="--arch on ImageNet's flat val/ layout: LOC_val_solution.csv, or the devkit's "
                        "ILSVRC2012_validation_ground_truth.txt with meta.mat beside it (default: looked up in --data "
                        "and its parent); class folders need none")
    p.add_argument("--device", default="auto", help="--arch: auto (cuda when present), cpu or cuda")
    p.add_argument("--workers", type=int, default=0, help="--arch: data-loading processes")
    p.add_argument("--data", default=None,
                   help="vision: dataset folder or tarball (default: the one in the checkpoint); "
                        "fairseq: data-bin directory (default: the one in the checkpoint)")
    p.add_argument("--split", default=None, help="vision: test|val|train (default test); fairseq: valid|test|train (default valid)")
    p.add_argument("--top-tokens", type=int, default=1000,
                   help="fairseq: classes are the N most frequent target tokens (0 = all; memory N x |V| x 8 bytes)")
    p.add_argument("--max-tokens", type=int, default=4096, help="fairseq: batch size in tokens")
    p.add_argument("--batch-size", type=int, default=256, help="vision: images per batch")
    p.add_argument("--limit-per-class", type=int, default=0, help="vision: use at most this many images a class")
    p.add_argument("--num-bins", type=int, default=15, help="calibration bins")
    p.add_argument("--json", default=None, help="write all results here")
    p.add_argument("--rows", type=int, default=20, help="per-class rows to print (0 = all)")
    return p


def run(args) -> dict:
    from lskd_study import stability as st

    from lskd_study.stability import detect_kind

    if not os.path.isfile(args.checkpoint):
        raise SystemExit(f"lskd-stability: checkpoint not found: {args.checkpoint}")
    if args.arch:
        device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        return st.pretrained_stability(args.checkpoint, args.arch, args.data, split=args.split or "test",
                                       batch_size=args.batch_size, num_bins=args.num_bins,
                                       limit_per_class=args.limit_per_class, workers=args.workers,
                                       device=device, progress=sys.stderr.isatty(), labels=args.labels)
    kind = detect_kind(args.checkpoint) if args.kind == "auto" else args.kind
    if kind == "fairseq" and args.kind == "auto" and st.is_plain_state_dict(args.checkpoint):
        raise ValueError(f"{args.checkpoint} is a plain state dict: name its architecture with --arch ARCH "
                         "(a torchvision model name or timm:NAME) and the images with --data DIR")
    if kind == "vision":
        res = st.vision_stability(args.checkpoint, data=args.data, split=args.split or "test",
                                  batch_size=args.batch_size, num_bins=args.num_bins,
                                  limit_per_class=args.limit_per_class)
    else:
        res = st.fairseq_stability(args.checkpoint, data_bin=args.data, split=args.split or "valid",
                                   top_tokens=args.top_tokens, max_tokens=args.max_tokens,
                                   num_bins=args.num_bins)
    return res


def main(argv=None):
    from lskd_fairseq.warning_filters import silence_known_warnings

    silence_known_warnings()  # fairseq/torch deprecation notices only
    args = build_parser().parse_args(argv)
    try:
        res = run(args)
    except (ValueError, FileNotFoundError, MemoryError) as e:
        console.error("lskd-stability", str(e))
        return 2
    from lskd_study.stability import format_table

    console.result(format_table(res, args.rows))
    if args.json:
        from lskd_fairseq.atomic import atomic_write_json

        atomic_write_json(args.json, res, indent=1)
        console.result(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
