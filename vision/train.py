"""lskd-vision-train: train image classifiers with label smoothing and/or knowledge distillation.

Teacher (cross-entropy, or label smoothing with either convention)::

    lskd-vision-train ../shared/data/cifar10/cifar10_jpg.tar.gz --model resnet20 \\
        --label-smoothing 0.1 --output runs/teacher_ls

Student distilled at the paper's setting (alpha=1: no hard-label term, T=1)::

    lskd-vision-train DATA --model resnet8 --teacher runs/teacher_ls/checkpoint_best.pt \\
        --paper-kd --output runs/student

``--teacher`` may be given several checkpoints (an ensemble: the mean of their
softmaxes); torchvision/timm state dicts with ``--teacher-arch`` (see
``lskd_vision.engine.load_teachers``). Multi-process training: ``torchrun --nproc_per_node N -m lskd_vision.train ...``
(``--batch-size`` is per process). Outputs in ``--output``: ``config.json``,
``checkpoint_last.pt``, ``checkpoint_best.pt`` (chosen on the validation split
carved from the training data), ``metrics.csv`` (one row per epoch) and
``metrics.json`` (the best checkpoint on the validation and test splits).
"""

import argparse
import os
import random
import socket
import sys
import time
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from . import data as D
from lskd_fairseq import console, integrity
from lskd_fairseq.errors import LskdError

from . import option_table
from .binary import set_binary_weights
from .engine import (
    CHECKPOINT_FORMAT,
    LSKD_TEACHER,
    CheckpointError,
    LRSchedule,
    atomic_save,
    atomic_write_json,
    atomic_write_text,
    evaluate,
    is_dist,
    load_checkpoint,
    load_pretrained,
    load_teachers,
    model_from_config,
    style_input,
    train_one_epoch,
    unwrap,
)
from .models import UnknownArchitectureError, check_arch, input_config, model_source
from .options import HelpFormatter, UsageError, check_numbers, resolve_teacher_archs
from .precision import resolve_precision
from .runtime import _device, prepare_data  # noqa: F401  (prepare_data: re-exported)
from .soft_labels import IndexedDataset, open_for_run

CSV_COLUMNS = [
    "epoch", "lr", "train_loss", "train_ls_loss", "train_nll_loss", "train_kd_loss", "train_top1",
    "val_top1", "val_top5", "val_nll_loss", "val_ece", "binary_weights", "epoch_time_s",
]

# config keys that must agree between a run and the checkpoint it resumes (declared in option_table)
RESUME_KEYS = option_table.RESUME_KEYS
# keys added after the first checkpoints were written: not compared when an old checkpoint lacks them
RESUME_KEYS_ADDED = option_table.RESUME_KEYS_ADDED
# resume keys that --allow-changed-precision lets differ (the change is logged)
PRECISION_KEYS = ("precision", "memory_format")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lskd-vision-train",
        description="Train an image classifier with label smoothing and/or knowledge distillation "
        "(lskd; Shen et al., ICLR 2021).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("data", help="dataset: a folder with train/ and val/ or test/ (<class>/<image>), "
                   "a CUB-200-2011 folder, or a .tar(.gz) of such a layout (e.g. cifar10_jpg.tar.gz)")
    p.add_argument("--output", "-o", required=True, help="run folder for checkpoints, config and metrics")
    option_table.add_options(p, "train")  # every option, declared once there
    return p


# ------------------------------------------------------------------ checks
def resolve_args(args) -> None:
    """Fill derived defaults and refuse contradictory options (before any data is read)."""
    check_numbers(args)
    integrity.check_output_dir(args.output, "--output")
    check_arch(args.arch)
    resolve_teacher_archs(args)
    if args.paper_kd:
        if not (args.teacher or args.teacher_cache):
            raise UsageError("--paper-kd needs --teacher CKPT or --teacher-cache DIR")
        if args.kd_alpha not in (None, 1.0) or args.kd_temperature != 1.0 or args.kd_topk != 0:
            raise UsageError("--paper-kd means alpha=1, T=1, all classes; drop --kd-alpha/--kd-temperature/--kd-topk")
        args.kd_alpha = 1.0
    if args.kd_alpha is None:
        args.kd_alpha = 1.0 if (args.teacher or args.teacher_cache) else 0.0
    if args.teacher and args.teacher_cache:
        raise UsageError("use either --teacher (run the teacher) or --teacher-cache (read its stored soft labels), not both")
    if args.kd_alpha > 0 and not (args.teacher or args.teacher_cache):
        raise UsageError("--kd-alpha > 0 needs --teacher CKPT or --teacher-cache DIR")
    if (args.teacher or args.teacher_cache) and args.kd_alpha == 0:
        raise UsageError("--teacher or --teacher-cache given with --kd-alpha 0: the teacher would be unused")
    if args.binary_step is not None and args.arch != "reactnet18":
        raise UsageError("--binary-step applies to --model reactnet18 only")
    if args.arch == "reactnet18" and args.binary_step is None:
        args.binary_step = "two-step"
    if args.binary_step == "two-step":
        if args.epochs < 2:
            raise UsageError("--binary-step two-step needs --epochs >= 2")
        if args.step1_epochs <= 0:
            args.step1_epochs = args.epochs // 2
        if not 0 < args.step1_epochs < args.epochs:
            raise UsageError("--step1-epochs must be between 1 and --epochs - 1")
    if args.lr is None:
        args.lr = 0.1 if args.opt == "sgd" else 1e-3
    if args.pretrained and args.init_from:
        raise UsageError("use either --pretrained or --init-from, not both")
    for option, paths in (("--teacher", args.teacher or []), ("--init-from", [args.init_from]),
                          ("--pretrained", [args.pretrained])):
        for path in paths:
            if path and not os.path.isfile(path):
                raise UsageError(f"{option} file {path!r} does not exist: check the path")
    if args.eval_batch_size <= 0:
        args.eval_batch_size = 2 * args.batch_size


def log(msg: str) -> None:
    """A progress line (rank 0 only; silent with --quiet): ``lskd_fairseq.console``."""
    if (dist.get_rank() if is_dist() else 0) == 0:
        console.say(msg)


def _binary_weights_at(args, epoch: int) -> Optional[bool]:
    if args.arch != "reactnet18":
        return None
    if args.binary_step == "1":
        return False
    if args.binary_step == "2":
        return True
    return epoch >= args.step1_epochs


def _stage(args, epoch: int):
    """(first epoch, number of epochs) of the schedule stage holding ``epoch``."""
    if args.arch == "reactnet18" and args.binary_step == "two-step":
        return (0, args.step1_epochs) if epoch < args.step1_epochs else (args.step1_epochs, args.epochs - args.step1_epochs)
    return 0, args.epochs


def _make_optimizer(args, model):
    params = [p for p in model.parameters() if p.requires_grad]
    if args.opt == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
                               weight_decay=args.weight_decay)
    cls = torch.optim.Adam if args.opt == "adam" else torch.optim.AdamW
    return cls(params, lr=args.lr, weight_decay=args.weight_decay)


def _write_csv(path: str, history: List[Dict]) -> None:
    lines = [",".join(CSV_COLUMNS)]
    for row in history:
        vals = []
        for c in CSV_COLUMNS:
            v = row.get(c)
            vals.append("" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)))
        lines.append(",".join(vals))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _loaders(args, ds, rank, world, device):
    pin = device.type == "cuda"
    sampler = torch.utils.data.DistributedSampler(
        ds["train"], num_replicas=world, rank=rank, shuffle=True, seed=args.seed, drop_last=False
    )
    if len(sampler) < args.batch_size:
        raise D.DatasetError(
            f"the training split has {len(ds['train'])} images: fewer than one batch of "
            f"{args.batch_size} per process; lower --batch-size"
        )
    train = torch.utils.data.DataLoader(
        ds["train"], batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
        pin_memory=pin, drop_last=True,
    )
    ev = {}
    for k in ("val", "test"):
        if k in ds:
            ev[k] = torch.utils.data.DataLoader(
                ds[k], batch_size=args.eval_batch_size, sampler=D.ShardSampler(len(ds[k]), rank, world),
                num_workers=args.workers, pin_memory=pin,
            )
    return sampler, train, ev


# ------------------------------------------------------------------ main
def _setup_distributed():
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def run(args) -> Dict:
    resolve_args(args)
    rank, world, local_rank = _setup_distributed()
    device = _device(args.device, local_rank)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    precision = resolve_precision(args, device, log)
    out = args.output
    last_path = os.path.join(out, "checkpoint_last.pt")
    best_path = os.path.join(out, "checkpoint_best.pt")
    resume_path = None
    if args.resume:
        resume_path = last_path if args.resume == "auto" else args.resume
        if not os.path.isfile(resume_path):
            if args.resume == "auto":
                log(f"--resume: no {last_path}; starting from scratch")
                resume_path = None
            else:
                raise UsageError(f"--resume checkpoint {resume_path!r} does not exist")
    elif os.path.exists(last_path) and not args.overwrite:
        raise UsageError(f"{out!r} already holds a run (checkpoint_last.pt); use --resume, --overwrite or another --output")

    # data, then teacher and model: every refusal happens before training starts
    ds, info = prepare_data(args, rank, world)
    num_classes = info["num_classes"]
    if (args.teacher or args.teacher_cache) and args.kd_topk > num_classes:
        raise UsageError(f"--kd-topk {args.kd_topk} is larger than the number of classes ({num_classes}) in the data: "
                         f"use --kd-topk {num_classes} or less (0 = all classes)")
    student_input = style_input(args.input_style, args.img_size)
    teacher = None
    if args.teacher:
        teacher = load_teachers(args.teacher, num_classes, info["classes"], device=device,
                                archs=args.teacher_arch, student_input=student_input)
        for path, tc in zip(args.teacher, teacher.configs):
            if "input" in tc and tc["input"]["view"] != "the student's batch as is":
                log(f"teacher {path} ({tc['arch']}) sees {tc['input']['view']} ({tc['input']['source']})")

    soft_labels = None
    if args.teacher_cache:  # refuses a cache made for other views, data or epochs
        soft_labels = open_for_run(args.teacher_cache, args, ds["train"], info, device)
        ds["train"] = IndexedDataset(ds["train"])

    config = {k: v for k, v in vars(args).items() if k not in option_table.NOT_RECORDED}
    config.update({
        "format": CHECKPOINT_FORMAT,
        "num_classes": num_classes,
        "classes": info["classes"],
        "small_input_stem": bool(args.small_input_stem),
        "binary_weights": _binary_weights_at(args, args.epochs - 1) if args.arch == "reactnet18" else None,
        "teachers": [os.path.abspath(t) for t in args.teacher] if args.teacher else [],
        "teacher_archs": list(args.teacher_arch),
        "teacher_inputs": [tc.get("input") for tc in teacher.configs] if teacher is not None else [],
        "student_input": student_input,
        "world_size": world,
        "data": os.path.abspath(args.data),
        "dataset": {k: v for k, v in info.items() if k != "classes"},
        "teacher_cache": soft_labels.describe() if soft_labels is not None else None,
        "precision": precision.name,
        "memory_format": precision.memory_format,
    })
    if args.pretrained and model_source(args.arch) != LSKD_TEACHER:
        # what the weights were trained on; the student itself sees the data pipeline's normalisation
        config["pretrained_input"] = input_config(args.arch)

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    model = model_from_config(config).to(device)
    if args.init_from:
        ck = load_checkpoint(args.init_from)
        if int(ck["config"]["num_classes"]) != num_classes or ck["config"]["arch"] != args.arch:
            raise CheckpointError(f"--init-from {args.init_from!r} is a {ck['config']['arch']} with "
                                  f"{ck['config']['num_classes']} classes, not a {args.arch} with {num_classes}")
        model.load_state_dict(ck["model"])
    if args.pretrained:
        skipped = load_pretrained(model, args.pretrained, args.arch)["skipped_shape_mismatch"]
        log(f"initialised from {args.pretrained}" + (f"; left fresh (shape differs): {', '.join(skipped)}" if skipped else ""))

    model = precision.model(model)
    if teacher is not None:
        teacher = precision.model(teacher)
    sampler, train_loader, eval_loaders = _loaders(args, ds, rank, world, device)
    steps_per_epoch = len(train_loader)

    start_epoch, best, best_epoch, history = 0, -1.0, -1, []
    ckpt = None
    if resume_path:
        ckpt = load_checkpoint(resume_path)
        old = ckpt["config"]
        diff = [k for k in RESUME_KEYS if old.get(k) != config.get(k) and (k in old or k not in RESUME_KEYS_ADDED)]
        changed = [k for k in diff if k in PRECISION_KEYS]
        if changed and args.allow_changed_precision:
            log(f"resuming {resume_path!r} under another precision (--allow-changed-precision): "
                + ", ".join(f"{k} {old.get(k)!r} -> {config.get(k)!r}" for k in changed))
            diff = [k for k in diff if k not in PRECISION_KEYS]
        elif changed and len(changed) == len(diff):
            raise UsageError(f"cannot resume {resume_path!r}: it was trained with "
                             + ", ".join(f"{k} {old.get(k)!r} (now {config.get(k)!r})" for k in changed)
                             + "; give the checkpoint's --amp/--amp-dtype/--channels-last, or --allow-changed-precision")
        if diff:
            raise UsageError(f"cannot resume {resume_path!r}: options differ from the checkpoint's: "
                             + ", ".join(f"{k} ({old.get(k)!r} -> {config.get(k)!r})" for k in diff)
                             + "; rerun with the checkpoint's options, or use another --output (or --overwrite)")
        model.load_state_dict(ckpt["model"])
        start_epoch, best, best_epoch = int(ckpt["epoch"]), float(ckpt["best"]), int(ckpt["best_epoch"])
        history = list(ckpt["history"])
        log(f"resumed from {resume_path} after epoch {start_epoch}")

    bw = _binary_weights_at(args, start_epoch)
    if bw is not None:
        set_binary_weights(model, bw)
    if world > 1:
        if args.sync_bn and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = _make_optimizer(args, model)
    scaler = torch.amp.GradScaler("cuda") if precision.needs_scaler else None
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
    ckpt = None

    if rank == 0:
        os.makedirs(out, exist_ok=True)
        atomic_write_json(os.path.join(out, "config.json"), config)
    log(f"lskd-vision-train: {args.arch}, {num_classes} classes, train {info['sizes'].get('train')} / "
        f"val {info['sizes'].get('val', 0)} / test {info['sizes'].get('test', 0)} images, {world} process(es) on {device} "
        f"({precision.describe()}), "
        f"loss: (1-{args.kd_alpha})*LS({args.label_smoothing}, {args.ls_convention}) + {args.kd_alpha}*KD(T={args.kd_temperature}"
        f"{', top-' + str(args.kd_topk) if args.kd_topk else ''}) from "
        + (f"the teacher cache {args.teacher_cache}" if args.teacher_cache else f"{len(args.teacher or [])} teacher(s)"))

    shots = D.shot_groups(info["train_counts"], *args.shot_thresholds)
    loss_kw = dict(epsilon=args.label_smoothing, convention=args.ls_convention,
                   temperature=args.kd_temperature, topk=args.kd_topk)
    t_start = time.time()
    epochs_run = 0
    for epoch in range(start_epoch, args.epochs):
        if args.stop_after and epochs_run >= args.stop_after:
            log(f"stopping after {epochs_run} epoch(s) as asked (--stop-after); continue with --resume")
            if is_dist():
                dist.destroy_process_group()
            return {"stopped_after_epoch": epoch}
        t0 = time.time()
        bw = _binary_weights_at(args, epoch)
        if args.binary_step == "two-step" and epoch == args.step1_epochs:
            # two-step schedule: step 2 begins with binary weights and a fresh optimizer
            set_binary_weights(model, True)
            optimizer = _make_optimizer(args, model)
            # the kept network must be a step-2 (binary-weight) one: best-checkpoint tracking restarts here
            best, best_epoch = -1.0, -1
            log(f"epoch {epoch + 1}: binary step 2 (binary weights), fresh optimizer, best checkpoint tracking restarted")
        stage_start, stage_epochs = _stage(args, epoch)
        sched = LRSchedule(args.lr, stage_epochs * steps_per_epoch, int(args.warmup_epochs * steps_per_epoch),
                           args.sched, args.min_lr, [m * steps_per_epoch for m in args.decay_milestones], args.decay_rate)
        base_step = stage_start * steps_per_epoch
        # randomness of an epoch depends only on (seed, epoch, rank): resuming reproduces it
        torch.manual_seed(args.seed + 1000 * epoch + 1_000_003 * rank)
        random.seed(args.seed + 1000 * epoch + rank)
        sampler.set_epoch(epoch)
        ds["train"].set_epoch(epoch)  # views are a function of (seed, epoch, index)
        if soft_labels is not None:
            soft_labels.set_epoch(epoch)
        bar = console.progress_bar(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{args.epochs}",
                                   leave=False) if rank == 0 else None
        tr = train_one_epoch(model, train_loader, optimizer, lambda s: sched(s - base_step), epoch * steps_per_epoch,
                             device, teacher, alpha=args.kd_alpha, scaler=scaler, precision=precision,
                             clip_grad=args.clip_grad, progress=bar, soft_labels=soft_labels, **loss_kw)
        if bar is not None:
            bar.close()
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "binary_weights": bw,
               **{f"train_{k}": tr[k] for k in ("loss", "ls_loss", "nll_loss", "kd_loss", "top1")}}
        metric = None
        if "val" in eval_loaders:
            ev = evaluate(model, eval_loaders["val"], num_classes, device, precision, **loss_kw,
                          teacher=None, shot_groups=None)
            row.update({"val_top1": ev["top1"], "val_top5": ev["top5"], "val_nll_loss": ev["nll_loss"], "val_ece": ev["ece"]})
            metric = ev["top1"]
        row["epoch_time_s"] = time.time() - t0
        history.append(row)
        is_best = metric is None or metric > best
        if is_best:
            best, best_epoch = (metric if metric is not None else -1.0), epoch + 1
        if rank == 0:
            state = unwrap(model).state_dict()
            cfg_now = dict(config, binary_weights=bw)
            atomic_save({
                "format": CHECKPOINT_FORMAT, "model": state, "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {}, "epoch": epoch + 1,
                "best": best, "best_epoch": best_epoch, "history": history, "config": cfg_now,
            }, last_path)
            if is_best:
                atomic_save({"format": CHECKPOINT_FORMAT, "model": state, "epoch": epoch + 1,
                             "val_top1": metric, "config": cfg_now}, best_path)
            _write_csv(os.path.join(out, "metrics.csv"), history)
        log(f"epoch {epoch + 1}/{args.epochs} lr {row['lr']:.4g} train loss {tr['loss']:.4f} "
            f"(ls {tr['ls_loss']:.4f} nll {tr['nll_loss']:.4f} kd {tr['kd_loss']:.4f}) top1 {tr['top1']:.2f} | "
            + (f"val top1 {row['val_top1']:.2f} ece {row['val_ece']:.4f} | " if metric is not None else "")
            + f"{row['epoch_time_s']:.1f}s ({tr['num_images'] / max(row['epoch_time_s'], 1e-9):.0f} images/s, "
            f"{precision.describe()})")
        epochs_run += 1
    train_time = time.time() - t_start

    # final report: the best checkpoint (chosen on val) on val and test
    if is_dist():
        dist.barrier()
    best_ckpt = load_checkpoint(best_path)
    final = precision.model(model_from_config(best_ckpt["config"]).to(device))
    final.load_state_dict(best_ckpt["model"])
    results = {"best_epoch": best_ckpt["epoch"], "epochs": args.epochs,
               "selected_on": "val top1" if "val" in eval_loaders else "last epoch (no validation split)",
               "train_time_s": train_time, "train_last_epoch": {k: v for k, v in history[-1].items()} if history else None,
               "dataset": config["dataset"], "config": config,
               "precision": precision.name, "memory_format": precision.memory_format,
               # where it ran: the device, and the GPUs its launcher gave it (lskd-study --gpus, Slurm)
               "ran_on": {"device": str(device), "host": socket.gethostname(),
                          "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                          "slurm_job": os.environ.get("SLURM_JOB_ID")}}
    for k, loader in eval_loaders.items():
        results[k] = evaluate(final, loader, num_classes, device, precision, teacher=teacher, shot_groups=shots, **loss_kw)
    if rank == 0:
        atomic_write_json(os.path.join(out, "metrics.json"), results)
        summary = ", ".join(f"{k} top1 {results[k]['top1']:.2f} top5 {results[k]['top5']:.2f} ece {results[k]['ece']:.4f}"
                            for k in eval_loaders)
        console.result(f"done in {train_time:.0f}s; best epoch {results['best_epoch']}: {summary}; {out}/metrics.json")
    if is_dist():
        dist.destroy_process_group()
    return results


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console.configure(quiet=args.quiet, progress=args.progress)
    try:
        run(args)
    except (UsageError, UnknownArchitectureError, D.DatasetError, CheckpointError, LskdError) as e:
        console.error("lskd-vision-train", str(e))
        if is_dist():
            dist.destroy_process_group()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
