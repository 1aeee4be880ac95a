"""lskd-stability: the paper's stability metric (1-S, S, per class) for a checkpoint.

Vision (an lskd_vision checkpoint, image labels are the classes)::

    lskd-stability runs/teacher_ls/checkpoint_best.pt --split test --json out.json

fairseq (classes = gold target tokens, distributions = the model's token
distributions under teacher forcing; ``--top-tokens N`` keeps the N most frequent
target tokens as classes)::

    lskd-stability checkpoints/teacher/checkpoint_best.pt --data data-bin/multi30k \
        --split valid --top-tokens 1000 --json out.json

The kind is detected from the checkpoint (``--kind`` overrides). Prints a table;
``--json`` also writes every number (per-class values, counts, calibration bins).
"""

import argparse
import json
import os
import sys

import torch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lskd-stability", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="lskd_vision or fairseq checkpoint")
    p.add_argument("--kind", choices=["auto", "vision", "fairseq"], default="auto")
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

    kind = detect_kind(args.checkpoint) if args.kind == "auto" else args.kind
    if not os.path.isfile(args.checkpoint):
        raise SystemExit(f"lskd-stability: checkpoint not found: {args.checkpoint}")
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
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    import warnings

    warnings.filterwarnings("ignore")  # fairseq/torch deprecation noise
    args = build_parser().parse_args(argv)
    try:
        res = run(args)
    except (ValueError, FileNotFoundError, MemoryError) as e:
        print(f"lskd-stability: error: {e}", file=sys.stderr)
        return 2
    from lskd_study.stability import format_table

    print(format_table(res, args.rows))
    if args.json:
        from lskd_fairseq.atomic import atomic_write_json

        atomic_write_json(args.json, res, indent=1)
        print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
