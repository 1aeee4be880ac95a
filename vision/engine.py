"""Training and evaluation loops, checkpoint IO, teacher loading, model outputs.

Reusable pieces for other tools (for example a stability CLI on top of
``lskd_fairseq.metrics.StabilityMeter``):

* ``iterate_outputs(model, loader)`` yields ``(logits, labels, features)`` per
  batch, ``features`` being the penultimate activations (the classifier's input).
* ``predict(model, loader)`` concatenates them into a dict with ``probs`` too.
* ``load_checkpoint_model(path)`` rebuilds any lskd_vision checkpoint (teacher or
  student) from its own config: ``model, config = load_checkpoint_model(path)``.

Checkpoint and state-dict IO lives in ``lskd_vision.weights`` (re-exported here).
"""

import contextlib
import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from lskd_fairseq.atomic import atomic_save, atomic_write_json, atomic_write_text
from lskd_fairseq.losses import ensemble_log_probs, ls_kd_loss
from lskd_fairseq.metrics import CalibrationMeter

from .precision import Precision, as_precision, float32_region
from .models import LSKD_TEACHER, build_model, check_arch, input_config, model_source, penultimate_hook
from .weights import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    fit_state_dict,
    load_checkpoint,
    load_checkpoint_model,
    load_pretrained,
    model_from_config,
    read_state_dict,
)

# ------------------------------------------------------------------ distributed helpers
def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def all_reduce_(t: torch.Tensor) -> torch.Tensor:
    if is_dist():
        dist.all_reduce(t)
    return t


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


# ------------------------------------------------------------------ teachers
class InputView(nn.Module):
    """The teacher's view of the student's batch: re-normalised, and resized if needed.

    The student's batch ``x`` is normalised with ``student["mean"]/["std"]``; the
    teacher gets ``((x * std_s + mean_s) - mean_t) / std_t``, resized (bilinear,
    antialiased) to ``input_size`` when that differs from the batch's size. The
    crop and augmentation are the student's: one data pipeline feeds both.
    """

    def __init__(self, student: Dict, teacher: Dict):
        super().__init__()
        ms, ss = torch.tensor(student["mean"]).view(1, 3, 1, 1), torch.tensor(student["std"]).view(1, 3, 1, 1)
        mt, st = torch.tensor(teacher["mean"]).view(1, 3, 1, 1), torch.tensor(teacher["std"]).view(1, 3, 1, 1)
        # x_t = x * scale + shift
        self.register_buffer("scale", ss / st, persistent=False)
        self.register_buffer("shift", (ms - mt) / st, persistent=False)
        self.renormalise = not (torch.allclose(ms, mt) and torch.allclose(ss, st))
        self.size = int(teacher.get("input_size") or 0)
        self.resizes = bool(self.size) and self.size != int(student.get("input_size") or 0)

    def forward(self, x):
        if self.renormalise:
            x = x * self.scale.to(x.dtype) + self.shift.to(x.dtype)
        if self.size and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return x

    @property
    def identity(self) -> bool:
        return not (self.renormalise or self.resizes)

    def describe(self) -> str:
        parts = (["re-normalised"] if self.renormalise else []) + (
            [f"resized to {self.size}x{self.size}"] if self.resizes else [])
        return "the student's batch" + (" " + " and ".join(parts) if parts else " as is")


class TeacherEnsemble(nn.Module):
    """Frozen teacher(s). Several teachers: log of the mean of their softmaxes.

    The returned tensor is used as the teacher's *logits* by ``ls_kd_loss``; for one
    teacher it is the teacher's logits. For an ensemble, ``log(mean_i softmax(z_i))``
    (``lskd_fairseq.losses.ensemble_log_probs``) is a valid logit vector whose
    softmax at T=1 is the averaged distribution (at T != 1 the ensemble is still
    averaged at T=1 and then tempered). ``views`` (optional, one per teacher) map
    the student's batch to each teacher's input normalisation and resolution.
    """

    def __init__(self, models: Sequence[nn.Module], configs: Sequence[Dict], paths: Sequence[str],
                 views: Optional[Sequence[Optional[nn.Module]]] = None):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.views = nn.ModuleList([v if v is not None else nn.Identity() for v in (views or [None] * len(models))])
        self.configs = list(configs)
        self.paths = list(paths)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # always eval: BN running stats, no dropout

    @torch.no_grad()
    def forward(self, x):
        return ensemble_log_probs([m(v(x)) for m, v in zip(self.models, self.views)])




def style_input(style: Optional[str], img_size) -> Optional[Dict]:
    """Normalisation and size of lskd_vision's ``cifar``/``imagenet`` input styles."""
    from .data import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD

    if style not in ("cifar", "imagenet"):
        return None
    mean, std = (CIFAR_MEAN, CIFAR_STD) if style == "cifar" else (IMAGENET_MEAN, IMAGENET_STD)
    return {"mean": list(mean), "std": list(std), "input_size": int(img_size or 0),
            "source": f"lskd_vision {style} style at {int(img_size or 0)} px"}


def load_teachers(paths: Sequence[str], num_classes: int, class_names: Optional[List[str]] = None, device="cpu",
                  archs: Optional[Sequence[str]] = None, student_input: Optional[Dict] = None):
    """Load the teacher(s); refuse a class count that differs from the student's data.

    ``archs[i]`` is ``"lskd"`` (``paths[i]`` is an lskd_vision checkpoint), a
    torchvision model name or ``timm:NAME`` (``paths[i]`` is a plain state dict of
    that model: ``.pt``/``.pth`` or ``.safetensors``). ``student_input`` (``mean``,
    ``std``, ``input_size`` of the student's batches) gives each teacher its own
    view: its published input normalisation and resolution (torchvision/timm), or
    the style it was trained with (lskd). Each config gains ``input``: what the
    teacher sees (recorded as ``teacher_inputs`` in the run's ``config.json``).

    Exactly what a teacher sees (``InputView``): the student's batch, with the
    student's crop, flip and resolution, de-normalised with the student's mean/std,
    normalised with the teacher's, and resized bilinearly (antialiased) to the
    teacher's input size when that differs. The teacher's own resize + centre-crop
    pipeline is not run: one data pipeline feeds both networks. (``lskd-stability
    --arch``, which measures one network, does use the weights' full evaluation
    transform.)
    """
    archs = list(archs) if archs else [LSKD_TEACHER] * len(paths)
    models, configs, views = [], [], []
    for p, arch in zip(paths, archs):
        if arch == LSKD_TEACHER:
            ckpt = load_checkpoint(p, "teacher")
            cfg = dict(ckpt["config"])
            if int(cfg["num_classes"]) != num_classes:
                raise CheckpointError(
                    f"teacher {p!r} has {cfg['num_classes']} classes but the student's dataset has "
                    f"{num_classes}: a teacher must be trained on the same classes"
                )
            if class_names is not None and cfg.get("classes") and list(cfg["classes"]) != list(class_names):
                raise CheckpointError(
                    f"teacher {p!r} was trained on classes {cfg['classes'][:5]}... in a different order or "
                    f"with different names than the student's dataset {class_names[:5]}..."
                )
            m = model_from_config(cfg)
            try:
                m.load_state_dict(ckpt["model"])
            except RuntimeError as e:
                raise CheckpointError(f"weights in teacher {p!r} do not fit arch {cfg['arch']!r}: {e}") from e
            t_input = style_input(cfg.get("input_style"), cfg.get("img_size"))
        else:
            check_arch(arch)
            if model_source(arch) == LSKD_TEACHER:
                raise CheckpointError(
                    f"--teacher-arch {arch}: lskd's own architectures come as lskd_vision checkpoints; "
                    f"give {p!r} with --teacher-arch {LSKD_TEACHER}"
                )
            m = build_model(arch, num_classes)
            fit_state_dict(m, read_state_dict(p, "teacher"), arch, p, "teacher")
            t_input = input_config(arch, m)
            cfg = {"arch": arch, "num_classes": num_classes, "source": model_source(arch)}
        view = None
        if student_input is not None and t_input is not None:
            view = InputView(student_input, t_input)
            cfg["input"] = dict(t_input, view=view.describe())
        models.append(m)
        configs.append(cfg)
        views.append(view)
    return TeacherEnsemble(models, configs, paths, views).to(device)


# ------------------------------------------------------------------ outputs
@torch.no_grad()
def iterate_outputs(
    model: nn.Module, loader, device="cpu", precision=None, features: bool = True
) -> Iterator[Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]]:
    """Yield ``(logits, labels, penultimate_features)`` per batch, in eval mode, on CPU (float32).

    ``precision``: a ``lskd_vision.precision.Precision`` (None = float32, contiguous)."""
    precision = as_precision(precision)
    was_training = model.training
    model.eval()
    ctx = penultimate_hook(model) if features else contextlib.nullcontext()
    try:
        with ctx as hook:
            for x, y in loader:
                x = precision.input(x, device)
                with precision.autocast(device):
                    logits = model(x)
                f = hook.value.float().cpu() if features else None
                yield logits.float().cpu(), y.cpu(), f
    finally:
        model.train(was_training)


def predict(model: nn.Module, loader, device="cpu", precision=None, features: bool = True) -> Dict[str, torch.Tensor]:
    """All outputs of ``model`` over ``loader``: logits, probs, labels and (optionally) features."""
    logits, labels, feats = [], [], []
    for z, y, f in iterate_outputs(model, loader, device, precision, features):
        logits.append(z)
        labels.append(y)
        if f is not None:
            feats.append(f)
    out = {"logits": torch.cat(logits), "labels": torch.cat(labels)}
    out["probs"] = out["logits"].softmax(-1)
    if features:
        out["features"] = torch.cat(feats)
    return out


# ------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    num_classes: int,
    device="cpu",
    precision=None,
    teacher: Optional[nn.Module] = None,
    epsilon: float = 0.0,
    convention: str = "uniform",
    temperature: float = 1.0,
    topk: int = 0,
    shot_groups: Optional[Dict[str, List[int]]] = None,
    num_bins: int = 15,
) -> Dict:
    """Top-1/top-5, mean loss parts, ECE, per-class and many/medium/few-shot accuracy.

    Under DDP each rank evaluates its shard of ``loader`` and the sums are reduced,
    so every rank returns the metrics of the whole split. Losses and metrics are
    computed in float32 on upcast logits, outside autocast.
    """
    precision = as_precision(precision)
    was_training = model.training
    model.eval()
    cal = CalibrationMeter(num_bins)
    sums = torch.zeros(6, dtype=torch.float64)  # n, top1, top5, ls, nll, kd
    correct = torch.zeros(num_classes, dtype=torch.float64)
    count = torch.zeros(num_classes, dtype=torch.float64)
    dev_sums = None
    for x, y in loader:
        x, y = precision.input(x, device), y.to(device, non_blocking=True)
        with precision.autocast(device):
            logits = model(x)
            t_logits = teacher(x) if teacher is not None else None
        with float32_region(device):
            logits = logits.float()
            lprobs = F.log_softmax(logits, dim=-1)
            _, parts = ls_kd_loss(
                lprobs, y, epsilon, student_logits=logits,
                teacher=None if t_logits is None else t_logits.float(),
                alpha=1.0 if t_logits is not None else 0.0,
                temperature=temperature, topk=topk, convention=convention,
            )
            k = min(5, num_classes)
            top = logits.topk(k, dim=-1).indices
            hit1 = top[:, 0].eq(y)
            hitk = top.eq(y[:, None]).any(-1)
            # summed on the device: no host sync per batch
            step = torch.stack([hit1.sum().double(), hitk.sum().double(), parts["ls_loss"].detach().double(),
                                parts["nll_loss"].detach().double(), parts["kd_loss"].detach().double()])
            dev_sums = step if dev_sums is None else dev_sums + step
            sums[0] += y.numel()
            y_cpu = y.cpu()
            count.index_add_(0, y_cpu, torch.ones(y.numel(), dtype=torch.float64))
            correct.index_add_(0, y_cpu, hit1.cpu().double())
            cal.update(lprobs.exp().cpu(), y_cpu)
    if dev_sums is not None:
        sums[1:] += dev_sums.cpu()
    model.train(was_training)
    for t in (sums, correct, count, cal.count, cal.correct, cal.confidence):
        all_reduce_(t)
    n = float(sums[0])
    if n == 0:
        raise ValueError("evaluation split is empty")
    c = cal.compute()
    per_class = [(float(a) / float(b)) if b > 0 else None for a, b in zip(correct, count)]
    out = {
        "num_images": int(n),
        "top1": 100.0 * float(sums[1]) / n,
        "top5": 100.0 * float(sums[2]) / n,
        "ls_loss": float(sums[3]) / n,
        "nll_loss": float(sums[4]) / n,
        "ece": c["ece"],
        "mean_confidence": c["mean_confidence"],
        "reliability": {k: c[k] for k in ("bin_edges", "bin_accuracy", "bin_confidence", "bin_count")},
        "per_class_top1": [None if a is None else 100.0 * a for a in per_class],
    }
    if teacher is not None:
        out["kd_loss"] = float(sums[5]) / n
    if shot_groups is not None:
        for g, classes in shot_groups.items():
            tot = sum(float(count[i]) for i in classes)
            out[f"{g}_shot_top1"] = 100.0 * sum(float(correct[i]) for i in classes) / tot if tot else None
            out[f"{g}_shot_classes"] = len(classes)
    return out


# ------------------------------------------------------------------ training
class LRSchedule:
    """Per-iteration learning rate: linear warm-up then cosine, linear, step or constant."""

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0, kind: str = "cosine",
                 min_lr: float = 0.0, milestones: Sequence[int] = (), gamma: float = 0.1):
        self.base_lr, self.total, self.warmup, self.kind = base_lr, max(1, total_steps), warmup_steps, kind
        self.min_lr, self.milestones, self.gamma = min_lr, list(milestones), gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        if self.kind == "constant":
            return self.base_lr
        if self.kind == "step":
            return self.base_lr * self.gamma ** sum(step >= m for m in self.milestones)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "cosine":
            return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "linear":
            return self.min_lr + (self.base_lr - self.min_lr) * (1 - progress)
        raise ValueError(f"unknown schedule {self.kind!r}")


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    lr_at,
    start_step: int,
    device="cpu",
    teacher: Optional[nn.Module] = None,
    epsilon: float = 0.0,
    convention: str = "uniform",
    alpha: float = 0.0,
    temperature: float = 1.0,
    topk: int = 0,
    scaler=None,
    precision=None,
    clip_grad: float = 0.0,
    progress=None,
    soft_labels=None,
) -> Dict:
    """One pass over ``loader``; the loss is ``ls_kd_loss`` divided by the local batch size.

    With ``soft_labels`` (``lskd_vision.soft_labels.SoftLabels``) the loader yields
    ``(x, y, index)`` and the teacher output stored for those views replaces ``teacher``.

    ``precision`` (``lskd_vision.precision.Precision``; None = float32) sets the
    autocast dtype and memory format of the forward passes; the teacher's logits,
    stored soft labels and the student's logits are upcast to float32 and the loss
    is computed outside autocast. ``scaler``: a CUDA ``GradScaler`` (float16 only)."""
    precision = as_precision(precision)
    model.train()
    sums = torch.zeros(6, dtype=torch.float64)  # n, loss, ls, nll, kd, top1
    dev_sums = None  # loss, ls, nll, kd, top1 summed on the device: no host sync per step for them
    step = start_step
    for batch in loader:
        x, y = precision.input(batch[0], device), batch[1].to(device, non_blocking=True)
        lr = lr_at(step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        t_logits = None
        if soft_labels is not None and alpha > 0:
            t_logits = soft_labels(batch[2])  # float16 logits, or a top-k pair (ids, logits)
            t_logits = (t_logits[0], t_logits[1].float()) if isinstance(t_logits, tuple) else t_logits.float()
        with precision.autocast(device):
            if soft_labels is None and teacher is not None and alpha > 0:
                with torch.no_grad():
                    t_logits = teacher(x)
            logits = model(x)
        with float32_region(device):
            logits = logits.float()
            if t_logits is not None and not isinstance(t_logits, tuple):
                t_logits = t_logits.float()
            lprobs = F.log_softmax(logits, dim=-1)
            loss_sum, parts = ls_kd_loss(
                lprobs, y, epsilon, student_logits=logits, teacher=t_logits,
                alpha=alpha, temperature=temperature, topk=topk, convention=convention,
            )
            bsz = y.numel()
            loss = loss_sum / bsz
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
        with torch.no_grad():
            now = torch.stack([loss_sum.detach().double(), parts["ls_loss"].detach().double(),
                               parts["nll_loss"].detach().double(), parts["kd_loss"].detach().double(),
                               logits.argmax(-1).eq(y).sum().double()])
            dev_sums = now if dev_sums is None else dev_sums + now
        sums[0] += bsz
        step += 1
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{float(dev_sums[0]) / float(sums[0]):.4f}", lr=f"{lr:.3g}", refresh=False)
    if dev_sums is not None:
        sums[1:] += dev_sums.cpu()
    all_reduce_(sums)
    n = max(1.0, float(sums[0]))
    return {
        "num_images": int(sums[0]),
        "loss": float(sums[1]) / n,
        "ls_loss": float(sums[2]) / n,
        "nll_loss": float(sums[3]) / n,
        "kd_loss": float(sums[4]) / n,
        "top1": 100.0 * float(sums[5]) / n,
        "steps": step - start_step,
    }


__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "InputView",
    "TeacherEnsemble",
    "fit_state_dict",
    "read_state_dict",
    "atomic_save",
    "atomic_write_json",
    "atomic_write_text",
    "evaluate",
    "iterate_outputs",
    "load_checkpoint",
    "load_checkpoint_model",
    "load_pretrained",
    "load_teachers",
    "style_input",
    "model_from_config",
    "predict",
    "train_one_epoch",
    "LRSchedule",
    "Precision",
]
