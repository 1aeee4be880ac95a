"""Option checks of lskd-vision-train that run before anything is read or written.

Every refusal is a ``UsageError`` with one line naming the option, what it must be
and what was given; ``lskd_vision.train.main`` prints it without a traceback.
"""

import argparse
import math

from lskd_fairseq.losses import check_kd_options

from .models import LSKD_TEACHER, check_arch


class UsageError(ValueError):
    pass


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for on/off flags (``--no-augment`` is not "default: True")."""

    def _get_help_string(self, action):
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return action.help
        return super()._get_help_string(action)


# (option, attribute, valid?, what it must be): every numeric option, checked before anything is read
NUMERIC_OPTIONS = [
    ("--epochs", "epochs", lambda v: v >= 1, ">= 1"),
    ("--batch-size", "batch_size", lambda v: v >= 1, ">= 1"),
    ("--eval-batch-size", "eval_batch_size", lambda v: v >= 0, ">= 0 (0 = 2x --batch-size)"),
    ("--lr", "lr", lambda v: v is None or v > 0, "> 0"),
    ("--momentum", "momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("--weight-decay", "weight_decay", lambda v: v >= 0, ">= 0"),
    ("--warmup-epochs", "warmup_epochs", lambda v: v >= 0, ">= 0"),
    ("--min-lr", "min_lr", lambda v: v >= 0, ">= 0"),
    ("--decay-rate", "decay_rate", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("--decay-milestones", "decay_milestones", lambda v: all(m >= 0 for m in v), "epochs >= 0"),
    ("--clip-grad", "clip_grad", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("--val-fraction", "val_fraction", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("--train-per-class", "train_per_class", lambda v: v >= 0, ">= 0 (0 = all)"),
    ("--imbalance-factor", "imbalance_factor", lambda v: v >= 1, ">= 1 (1 = balanced)"),
    ("--shot-thresholds", "shot_thresholds", lambda v: v[0] >= v[1] >= 0, "MANY >= FEW >= 0"),
    ("--img-size", "img_size", lambda v: v >= 0, ">= 0 (0 = automatic)"),
    ("--step1-epochs", "step1_epochs", lambda v: v >= 0, ">= 0 (0 = half of --epochs)"),
    ("--workers", "workers", lambda v: v >= 0, ">= 0"),
    ("--threads", "threads", lambda v: v >= 0, ">= 0 (0 = torch's default)"),
    ("--stop-after", "stop_after", lambda v: v >= 0, ">= 0 (0 = run every epoch)"),
    ("--seed", "seed", lambda v: v >= 0, ">= 0"),
    ("--split-seed", "split_seed", lambda v: v >= 0, ">= 0"),
]


def check_numeric_options(args) -> None:
    """Refuse a numeric option out of its range (or not finite) with one line naming it; options
    the command does not have (lskd-vision-cache has only the data options) are skipped."""
    for option, attr, valid, must in NUMERIC_OPTIONS:
        if not hasattr(args, attr):
            continue
        v = getattr(args, attr)
        values = v if isinstance(v, (list, tuple)) else [v]
        if any(isinstance(x, float) and not math.isfinite(x) for x in values) or not valid(v):
            shown = " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
            raise UsageError(f"{option} must be {must}, got {shown}")


def check_numbers(args) -> None:
    """Every numeric option of lskd-vision-train, and the KD options together."""
    check_numeric_options(args)
    try:
        check_kd_options(args.label_smoothing, 0.0 if args.kd_alpha is None else args.kd_alpha,
                         args.kd_temperature, args.kd_topk)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.lr is not None and args.min_lr > args.lr:
        raise UsageError(f"--min-lr ({args.min_lr}) must not exceed --lr ({args.lr})")


def resolve_teacher_archs(args) -> None:
    """``args.teacher_arch``: one architecture per --teacher ('lskd' for lskd-vision-train checkpoints)."""
    if args.teacher_arch and not args.teacher:
        raise UsageError("--teacher-arch needs --teacher FILE (one architecture per teacher file)")
    if not args.teacher:
        args.teacher_arch = []
        return
    if not args.teacher_arch:
        args.teacher_arch = [LSKD_TEACHER] * len(args.teacher)
    if len(args.teacher_arch) != len(args.teacher):
        raise UsageError(
            f"--teacher-arch names {len(args.teacher_arch)} architecture(s) for {len(args.teacher)} --teacher "
            f"file(s): give one per teacher, in the same order ({LSKD_TEACHER!r} for an lskd-vision-train checkpoint)"
        )
    for arch in args.teacher_arch:
        if arch != LSKD_TEACHER:
            check_arch(arch)


__all__ = ["HelpFormatter", "NUMERIC_OPTIONS", "UsageError", "check_numbers", "resolve_teacher_archs"]
