"""Every option of lskd-vision-train, declared once (the data and precision options also serve
lskd-vision-cache).

Each ``Option`` gives its flags, argparse settings (type, default, help, ...), its group in
``--help``, and two promises:

* ``resume``: ``--resume`` refuses a checkpoint whose recorded value differs;
* ``reuse``: ``lskd-study --reuse-vision`` links a finished run only when its recorded value
  equals the study's.

From this table come the parser (``add_options``), the resume check (``RESUME_KEYS``), the
study's reuse check (``REUSE_KEYS``) and the study's command lines (``to_argv``); a test holds
them to it. Adding an option is one entry here. ``DERIVED`` lists the config entries that are
computed (from the data, the teachers, the precision) rather than given, with the same promises.
"""

import argparse
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

DATASET, MODEL, LOSS, OPTIM, RUN = ("Dataset", "Model", "Loss: label smoothing and distillation",
                                    "Optimizer and schedule", "Run")


@dataclass(frozen=True)
class Option:
    flags: Tuple[str, ...]
    group: str
    kwargs: Dict = field(default_factory=dict)
    resume: bool = False  # --resume must find the same value in the checkpoint's config
    reuse: bool = False  # a run the study reuses must have recorded the same value
    added: bool = False  # recorded only by later versions: an old checkpoint without it is not compared
    record: bool = True  # kept in config.json (False: how to run, not what was trained)
    commands: Tuple[str, ...] = ("train",)  # the commands that take it: train, cache

    @property
    def dest(self) -> str:
        return self.kwargs.get("dest") or self.flags[0].lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Derived:
    """A config entry computed by lskd-vision-train, not given as an option."""
    key: str
    resume: bool = True
    added: bool = False


TC = ("train", "cache")  # options lskd-vision-cache shares (the data that fixes the views, the precision)

OPTIONS: List[Option] = [
    # ---------------------------------------------------------------- data (shared with lskd-vision-cache)
    Option(("--cache-dir",), DATASET, dict(default=None, help="where archives are extracted (default: "
           "$XDG_CACHE_HOME/lskd or ~/.cache/lskd)"), commands=TC),
    Option(("--test-split",), DATASET, dict(default="auto", help="held-out folder that is only reported: auto "
           "(test/ if present, else val/), a name, or none"), commands=TC),
    Option(("--val-fraction",), DATASET, dict(type=float, default=0.1, help="fraction of each training class "
           "carved out (seeded) to choose the best checkpoint; 0 = no validation split, the last epoch is kept"),
           resume=True, reuse=True, commands=TC),
    Option(("--split-seed",), DATASET, dict(type=int, default=0, help="seed of the validation carve and of subsets"),
           resume=True, reuse=True, commands=TC),
    Option(("--train-per-class",), DATASET, dict(type=int, default=0, help="keep at most N training images per "
           "class (seeded; after the validation carve); 0 = all"), resume=True, reuse=True, commands=TC),
    Option(("--imbalance-factor",), DATASET, dict(type=float, default=1.0, help="long-tailed training set: keep "
           "n_max * F^(-c/(C-1)) images of class c (seeded); 1 = off"), resume=True, reuse=True, commands=TC),
    Option(("--shot-thresholds",), DATASET, dict(type=int, nargs=2, default=[100, 20], metavar=("MANY", "FEW"),
           help="many-shot: > MANY training images; few-shot: < FEW; medium otherwise"), commands=TC),
    Option(("--input-style",), DATASET, dict(choices=["auto", "cifar", "imagenet"], default="auto",
           help="augmentation/normalisation; auto: cifar for images up to 64 px, else imagenet"),
           resume=True, commands=TC),
    Option(("--img-size",), DATASET, dict(type=int, default=0, help="input size (0: the images' own size for cifar "
           "style, 224 for imagenet)"), resume=True, commands=TC),
    Option(("--no-augment",), DATASET, dict(dest="augment", action="store_false", help="no random crop/flip "
           "(augmentation is on unless this is given)"), resume=True, commands=TC),
    Option(("--cache-images",), DATASET, dict(choices=["auto", "yes", "no"], default="auto", help="decode all "
           "images into RAM once (auto: if images are at most 64 px and under 200k)"), commands=TC),
    Option(("--verify-images",), DATASET, dict(choices=["auto", "all", "none"], default="auto", help="decode every "
           "image before training (auto: if there are at most 100k)"), commands=TC),
    Option(("--workers", "-j"), DATASET, dict(type=int, default=2, help="data-loading processes per training "
           "process"), record=False, commands=TC),
    # ---------------------------------------------------------------- model
    Option(("--model", "--arch"), MODEL, dict(dest="arch", default="resnet20", help="torchvision name (resnet18, "
           "resnet50, mobilenet_v2, ...), timm:NAME (the timm extra), CIFAR ResNet (resnet20, resnet56, resnet8x4, "
           "resnet32x4, ...), reactnet18 or mlp"), resume=True, reuse=True),
    Option(("--small-input-stem",), MODEL, dict(action="store_true", help="3x3 stride-1 stem without max-pool for "
           "torchvision ResNets / reactnet18 on small images"), resume=True, reuse=True),
    Option(("--pretrained",), MODEL, dict(default=None, metavar="FILE", help="initialise from a plain state dict of "
           "--model you downloaded (.pth/.pt, e.g. torchvision's resnet50-*.pth, or .safetensors, e.g. timm's); a "
           "classifier for another class count is left freshly initialised"), resume=True),
    Option(("--init-from",), MODEL, dict(default=None, help="initialise the weights from an lskd_vision checkpoint "
           "(e.g. binary step 1 for step 2)"), resume=True),
    Option(("--binary-step",), MODEL, dict(choices=["1", "2", "two-step"], default=None, help="reactnet18 only: 1 = "
           "binary activations, real weights; 2 = binary weights too; two-step = step 1 for --step1-epochs then "
           "step 2 (fresh optimizer and schedule)"), resume=True),
    Option(("--step1-epochs",), MODEL, dict(type=int, default=0, help="two-step: epochs of step 1 (default: half)")),
    # ---------------------------------------------------------------- loss
    Option(("--label-smoothing", "--smoothing"), LOSS, dict(type=float, default=0.0, help="LS epsilon"),
           resume=True, reuse=True),
    Option(("--ls-convention",), LOSS, dict(choices=["uniform", "fairseq"], default="uniform", help="uniform: eps/K "
           "everywhere (torch's and torchvision's label_smoothing); fairseq: gold 1-eps, others eps/(K-1) (the "
           "fairseq plugin's convention)"), resume=True, reuse=True),
    Option(("--teacher",), LOSS, dict(nargs="+", default=None, metavar="FILE", help="teacher(s): lskd-vision-train "
           "checkpoints, or state dicts with --teacher-arch; several = ensemble (mean softmax)"), record=False),
    Option(("--teacher-arch",), LOSS, dict(nargs="+", default=None, metavar="ARCH", help="one per --teacher, in "
           "order: a torchvision model name or timm:NAME for a local state dict (.pth/.pt/.safetensors; nothing is "
           "downloaded), or 'lskd' for an lskd-vision-train checkpoint (default: all lskd)"), record=False),
    Option(("--teacher-cache",), LOSS, dict(default=None, metavar="DIR", help="instead of --teacher: read the soft "
           "labels lskd-vision-cache stored for this run's views (same data options, --seed and at least "
           "--epochs); no teacher runs"), record=False),
    Option(("--kd-alpha",), LOSS, dict(type=float, default=None, help="weight of the KD term: (1-a)*LS-NLL + a*KD "
           "(default 1 with --teacher, else 0)"), resume=True, reuse=True),
    Option(("--kd-temperature",), LOSS, dict(type=float, default=1.0, help="KD temperature T (loss has the T^2 "
           "factor)"), resume=True, reuse=True),
    Option(("--kd-topk",), LOSS, dict(type=int, default=0, help="distil the teacher's top-k classes only; 0 = all"),
           resume=True, reuse=True),
    Option(("--paper-kd",), LOSS, dict(action="store_true", help="Shen et al.'s setting: alpha=1 (soft labels only, "
           "no hard-label term), T=1, all classes")),
    # ---------------------------------------------------------------- optimizer
    Option(("--epochs",), OPTIM, dict(type=int, default=200), resume=True, reuse=True),
    Option(("--batch-size", "-b"), OPTIM, dict(type=int, default=128, help="per process"), resume=True, reuse=True),
    Option(("--eval-batch-size",), OPTIM, dict(type=int, default=0, help="default: 2x --batch-size")),
    Option(("--opt",), OPTIM, dict(choices=["sgd", "adam", "adamw"], default="sgd"), resume=True),
    Option(("--lr",), OPTIM, dict(type=float, default=None, help="default 0.1 for sgd, 1e-3 for adam(w)"),
           resume=True, reuse=True),
    Option(("--momentum",), OPTIM, dict(type=float, default=0.9)),
    Option(("--nesterov",), OPTIM, dict(action="store_true"), reuse=True),
    Option(("--weight-decay", "--wd"), OPTIM, dict(type=float, default=5e-4), resume=True, reuse=True),
    Option(("--sched",), OPTIM, dict(choices=["cosine", "linear", "step", "constant"], default="cosine"),
           resume=True, reuse=True),
    Option(("--warmup-epochs",), OPTIM, dict(type=float, default=0.0), resume=True, reuse=True),
    Option(("--min-lr",), OPTIM, dict(type=float, default=0.0)),
    Option(("--decay-milestones",), OPTIM, dict(type=int, nargs="*", default=[], help="step schedule: epochs")),
    Option(("--decay-rate",), OPTIM, dict(type=float, default=0.1, help="step schedule factor")),
    Option(("--clip-grad",), OPTIM, dict(type=float, default=0.0, help="gradient-norm clip; 0 = off")),
    # ---------------------------------------------------------------- run
    Option(("--seed",), RUN, dict(type=int, default=0), resume=True, reuse=True),
    Option(("--resume",), RUN, dict(nargs="?", const="auto", default=None, help="continue from "
           "OUTPUT/checkpoint_last.pt (or the given checkpoint)"), record=False),
    Option(("--overwrite",), RUN, dict(action="store_true", help="allow reusing an output folder that holds a run"),
           record=False),
    Option(("--stop-after",), RUN, dict(type=int, default=0, help="stop after this many epochs of this process "
           "(checkpoint kept; continue with --resume)"), record=False),
    Option(("--device",), RUN, dict(default="auto", help="auto, cpu, cuda or cuda:N"), record=False),
    # precision (shared with lskd-vision-cache); recorded as the derived precision / memory_format
    Option(("--amp",), RUN, dict(action="store_true", help="mixed precision: autocast in --amp-dtype (CUDA float16 "
           "also scales gradients); on CPU it is bfloat16"), commands=TC),
    Option(("--amp-dtype",), RUN, dict(choices=["bfloat16", "float16"], default=None, help="autocast dtype with "
           "--amp (default float16 on CUDA, bfloat16 on CPU)"), commands=TC),
    Option(("--channels-last",), RUN, dict(action="store_true", help="model and input batches in "
           "torch.channels_last memory format"), commands=TC),
    Option(("--allow-changed-precision",), RUN, dict(action="store_true", help="--resume under another "
           "--amp/--amp-dtype/--channels-last than the checkpoint's (logged)"), record=False),
    Option(("--sync-bn",), RUN, dict(action="store_true", help="SyncBatchNorm under DDP (CUDA only)")),
    Option(("--threads",), RUN, dict(type=int, default=0, help="torch CPU threads per process; 0 = torch's "
           "default")),
    Option(("--quiet", "-q"), RUN, dict(action="store_true", help="no progress lines: only the results, "
           "warnings and errors"), record=False),
    Option(("--no-progress",), RUN, dict(dest="progress", action="store_false", help="no progress bar (it is shown "
           "only when stderr is a terminal)"), record=False),
]

# config entries lskd-vision-train computes; compared on --resume like the options above
DERIVED: List[Derived] = [
    Derived("num_classes"), Derived("classes"), Derived("teachers"), Derived("teacher_archs", added=True),
    Derived("world_size"), Derived("teacher_cache", added=True), Derived("precision", added=True),
    Derived("memory_format", added=True),
]

BY_DEST: Dict[str, Option] = {o.dest: o for o in OPTIONS}
RESUME_KEYS: List[str] = [o.dest for o in OPTIONS if o.resume] + [d.key for d in DERIVED if d.resume]
RESUME_KEYS_ADDED = {o.dest for o in OPTIONS if o.added} | {d.key for d in DERIVED if d.added}
REUSE_KEYS: Tuple[str, ...] = tuple(o.dest for o in OPTIONS if o.reuse)
NOT_RECORDED: Tuple[str, ...] = tuple(o.dest for o in OPTIONS if not o.record)


def add_options(parser: argparse.ArgumentParser, command: str = "train", groups: Optional[Sequence[str]] = None,
                containers: Optional[Dict[str, object]] = None) -> None:
    """Add the table's options of ``command`` (in its groups, or only ``groups``) to ``parser``;
    ``containers`` maps a group name to an existing argument group to add to."""
    made: Dict[str, object] = dict(containers or {})
    for o in OPTIONS:
        if command not in o.commands or (groups is not None and o.group not in groups):
            continue
        if o.group not in made:
            made[o.group] = parser.add_argument_group(o.group)
        made[o.group].add_argument(*o.flags, **o.kwargs)


def _value(v) -> str:
    if isinstance(v, float):  # the short spelling (0.1, 100, 5e-05) when it is exact, else repr's
        short = format(v, "g")
        return short if float(short) == v else repr(v)
    return str(v)


def to_argv(settings: Dict, skip: Iterable[str] = ()) -> List[str]:
    """The command-line arguments that give lskd-vision-train these settings ({dest: value}),
    in table order. Every value is spelled out, defaults too, so that a recorded command keeps
    its meaning if a default changes; an on/off flag appears when it is on."""
    unknown = sorted(set(settings) - set(BY_DEST))
    if unknown:
        raise KeyError(f"not options of lskd-vision-train: {', '.join(unknown)}")
    argv: List[str] = []
    for o in OPTIONS:
        if o.dest not in settings or o.dest in skip:
            continue
        v, action = settings[o.dest], o.kwargs.get("action")
        if action in ("store_true", "store_false"):
            if bool(v) != (action == "store_false"):
                argv.append(o.flags[0])
        elif v is not None:
            argv += [o.flags[0], *([_value(x) for x in v] if o.kwargs.get("nargs") else [_value(v)])]
    return argv
