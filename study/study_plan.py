"""What ``lskd-study`` runs at each scale: the settings and the list of runs.

Two tracks that do not depend on each other:

* ``nmt``: the Multi30k recipe (``recipes/multi30k/run.sh``, owned by the
  recipes), stage by stage: data, teachers with and without LS, a student
  without KD, word-level KD students of each teacher at T=1, sequence-level KD
  students of each teacher, BLEU on the test set; then word-level KD students of
  each teacher at each T in ``kd_sweep_temperatures``.
* ``vision``: ``lskd-vision-train`` on CIFAR-10 (the JPEG tarball): teachers
  with and without LS, a student without KD, and students of each teacher at
  each T in ``temperatures`` (alpha = 1: soft labels only, the paper's setting);
  and, when ``long_tail_imbalance`` is set, the same two teachers and their T=1
  students again on a long-tailed version of the training set (class c keeps
  ``n_max * F^(-c/(C-1))`` images; the test set stays balanced), for the paper's
  claim that LS loses effectiveness on long-tailed data.

then the ``analysis`` (stability of every model, figures, report) that reads both.

The NMT scales are the recipe's own (``--scale`` is passed through), so a study
and a recipe run at the same scale produce the same models. The vision ``cpu``
scale is sized to take about as long as the recipe's cpu scale on one core.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ../shared/data beside the checkout, or $LSKD_SHARED_DATA
SHARED_DATA = os.environ.get("LSKD_SHARED_DATA") or os.path.join(os.path.dirname(REPO), "shared", "data")
CIFAR10_TARBALL = os.path.join(SHARED_DATA, "cifar10", "cifar10_jpg.tar.gz")
MULTI30K_DIR = os.path.join(SHARED_DATA, "multi30k")
RECIPE = os.path.join(REPO, "recipes", "multi30k", "run.sh")

SCALES = ("smoke", "cpu", "full")


@dataclass
class VisionScale:
    teacher_arch: str
    student_arch: str
    teacher_epochs: int
    student_epochs: int
    batch_size: int
    lr: float
    temperatures: List[float]
    label_smoothing: float = 0.1
    ls_convention: str = "uniform"  # eps/K on every class, as torchvision (the paper's ImageNet models)
    # smoke: a symlinked subset folder (train/test per class); otherwise the tarball itself
    subset_train_per_class: int = 0
    subset_test_per_class: int = 0
    train_per_class: int = 0  # lskd-vision-train --train-per-class (0 = all)
    val_fraction: float = 0.1
    small_input_stem: bool = False
    long_tail_imbalance: float = 0.0  # F > 1 adds the long-tailed arm (0: none)
    extra: List[str] = field(default_factory=list)
    # rough seconds per run on one uncontended CPU core (for the first ETA only)
    est_teacher_s: float = 60
    est_student_s: float = 60


@dataclass
class NmtScale:
    recipe_scale: str
    max_update_teacher: int  # for progress only; the recipe's own defaults decide
    max_update_student: int
    est_teacher_s: float
    est_student_s: float
    est_other_s: float  # data preparation
    est_distill_s: float = 60  # one teacher translating the training set
    est_eval_s: float = 30  # one model: generate on the test set + sacreBLEU
    top_tokens: int = 1000
    # word-level KD students of both teachers at these T too (the recipe's temperature_sweep stage)
    kd_sweep_temperatures: List[float] = field(default_factory=list)


@dataclass
class Scale:
    name: str
    vision: VisionScale
    nmt: NmtScale
    jobs: int  # tracks run side by side (1 thread each when 2)
    note: str


SCALE_DEFS: Dict[str, Scale] = {
    "smoke": Scale(
        name="smoke",
        vision=VisionScale(
            teacher_arch="resnet8", student_arch="resnet8", teacher_epochs=1, student_epochs=1,
            batch_size=32, lr=0.05, temperatures=[1, 2, 4],
            subset_train_per_class=40, subset_test_per_class=20, val_fraction=0.1,
            long_tail_imbalance=10, est_teacher_s=12, est_student_s=12,
        ),
        nmt=NmtScale("smoke", 12, 8, est_teacher_s=20, est_student_s=15, est_other_s=20,
                     est_distill_s=40, est_eval_s=25, top_tokens=200, kd_sweep_temperatures=[2]),
        jobs=2,
        note=(
            "smoke scale is a plumbing check: a few hundred sentences and images, one epoch "
            "or a dozen updates per model. Nothing about the paper's claims can be concluded from it."
        ),
    ),
    "cpu": Scale(
        name="cpu",
        vision=VisionScale(
            # the same settings as recipes/vision/cifar10_ls_kd.sh at its CPU scale
            teacher_arch="resnet20", student_arch="resnet8", teacher_epochs=15, student_epochs=15,
            batch_size=128, lr=0.1, temperatures=[1, 2, 4],
            train_per_class=1000, val_fraction=0.1, long_tail_imbalance=10,
            est_teacher_s=1500, est_student_s=1000,
        ),
        # seconds measured with two runs side by side on 2 cores
        nmt=NmtScale("cpu", 1500, 1000, est_teacher_s=650, est_student_s=260, est_other_s=60,
                     est_distill_s=120, est_eval_s=60, kd_sweep_temperatures=[2, 4]),
        jobs=2,
        note=(
            "cpu scale: Multi30k en-de with the recipe's cpu models (2+2-layer d=128 teachers "
            "trained for 1500 updates, 2+2-layer d=64 students for 1000 updates, about 3 and 2 "
            "epochs) and CIFAR-10 with 1,000 training images a "
            "class (and a long-tailed copy, imbalance 10, for the long-tail claim), ResNet-20 "
            "teachers and ResNet-8 students for 15 epochs; one seed. Far "
            "below the paper's ImageNet/IWSLT settings: differences smaller than the noise "
            "estimates given with each table are not evidence either way."
        ),
    ),
    "full": Scale(
        name="full",
        vision=VisionScale(
            teacher_arch="resnet50", student_arch="resnet18", teacher_epochs=200, student_epochs=200,
            batch_size=128, lr=0.1, temperatures=[1, 2, 4], val_fraction=0.1, small_input_stem=True,
            long_tail_imbalance=100,
            extra=["--workers", "4", "--amp"],  # GPU: parallel image decoding, mixed precision
            est_teacher_s=4 * 3600, est_student_s=3 * 3600,
        ),
        nmt=NmtScale("full", 15000, 15000, est_teacher_s=3 * 3600, est_student_s=3 * 3600, est_other_s=1800,
                     est_distill_s=1800, est_eval_s=300, kd_sweep_temperatures=[2, 4]),
        jobs=1,
        note=(
            "full scale: the paper's pairs on a GPU (ResNet-50 teacher -> ResNet-18 student, 200 "
            "epochs, on CIFAR-10 since ImageNet/CUB are not available here, and on long-tailed "
            "CIFAR-10 with imbalance 100, the usual CIFAR-10-LT setting; the recipe's full "
            "Multi30k transformer setting)."
        ),
    ),
}


@dataclass
class Run:
    """One unit of work with a done-marker; ``kind`` says how the executor runs it."""

    id: str
    track: str  # vision | nmt
    kind: str  # vision_subset | vision_train | recipe_stage
    title: str
    est_s: float
    args: Dict = field(default_factory=dict)
    total: Optional[int] = None  # epochs (vision) or updates (nmt) for progress
    unit: str = "epoch"
    deps: List[str] = field(default_factory=list)  # runs that must be done first
    soft: bool = False  # run once the deps have finished, even if some failed (analysis)


def t_tag(t: float) -> str:
    return f"T{t:g}".replace(".", "p")


def vision_runs(scale: Scale, work: str) -> List[Run]:
    v = scale.vision
    runs: List[Run] = []
    data_dep: List[str] = []
    if v.subset_train_per_class:
        runs.append(Run("vision/data", "vision", "vision_subset", "CIFAR-10 subset (symlinks)", 5,
                        {"train": v.subset_train_per_class, "test": v.subset_test_per_class}, unit="step"))
        data_dep = ["vision/data"]
    teachers = [("teacher_nols", 0.0), ("teacher_ls", v.label_smoothing)]
    for name, ls in teachers:
        runs.append(Run(f"vision/{name}", "vision", "vision_train",
                        f"CIFAR-10 teacher {v.teacher_arch}, LS {ls:g}", v.est_teacher_s,
                        {"arch": v.teacher_arch, "epochs": v.teacher_epochs, "ls": ls, "teacher": None},
                        total=v.teacher_epochs, deps=list(data_dep)))
    runs.append(Run("vision/student_nokd", "vision", "vision_train",
                    f"CIFAR-10 student {v.student_arch}, no KD", v.est_student_s * 0.6,
                    {"arch": v.student_arch, "epochs": v.student_epochs, "ls": 0.0, "teacher": None},
                    total=v.student_epochs, deps=list(data_dep)))
    for t in v.temperatures:
        for name, _ in teachers:
            runs.append(Run(f"vision/student_{name[len('teacher_'):]}_{t_tag(t)}", "vision", "vision_train",
                            f"CIFAR-10 student {v.student_arch} <- {name}, KD alpha 1, T={t:g}", v.est_student_s,
                            {"arch": v.student_arch, "epochs": v.student_epochs, "ls": 0.0,
                             "teacher": name, "T": t}, total=v.student_epochs, deps=[f"vision/{name}"]))
    f = v.long_tail_imbalance
    if f and f > 1:
        k = 10  # CIFAR-10: the share of the images a long-tailed copy keeps, for the estimates
        share = sum(f ** (-c / (k - 1)) for c in range(k)) / k
        for name, ls in teachers:
            runs.append(Run(f"vision/lt_{name}", "vision", "vision_train",
                            f"long-tailed CIFAR-10 (imbalance {f:g}) teacher {v.teacher_arch}, LS {ls:g}",
                            v.est_teacher_s * share,
                            {"arch": v.teacher_arch, "epochs": v.teacher_epochs, "ls": ls, "teacher": None,
                             "imbalance": f},
                            total=v.teacher_epochs, deps=list(data_dep)))
        for name, _ in teachers:
            runs.append(Run(f"vision/lt_student_{name[len('teacher_'):]}_T1", "vision", "vision_train",
                            f"long-tailed CIFAR-10 student {v.student_arch} <- lt_{name}, KD alpha 1, T=1",
                            v.est_student_s * share,
                            {"arch": v.student_arch, "epochs": v.student_epochs, "ls": 0.0,
                             "teacher": f"lt_{name}", "T": 1.0, "imbalance": f},
                            total=v.student_epochs, deps=[f"vision/lt_{name}"]))
    return runs


_T = ["nmt/teacher_ls", "nmt/teacher_nols"]
NMT_MODELS = [
    # (study run id, recipe stage(s), recipe step(s) holding a training log, title, kind, deps)
    ("nmt/data", "prepare:binarize", [], "Multi30k data: raw text, sentencepiece, binarize", None, []),
    ("nmt/teacher_ls", "teacher_ls", ["teacher_ls"], "NMT teacher with LS", "teacher", ["nmt/data"]),
    ("nmt/teacher_nols", "teacher_nols", ["teacher_nols"], "NMT teacher without LS", "teacher", ["nmt/data"]),
    ("nmt/student_nokd", "student_nokd", ["student_nokd"], "NMT student, no KD", "student", ["nmt/data"]),
    ("nmt/student_wordkd", "student_wordkd", ["student_wordkd_ls", "student_wordkd_nols"],
     "NMT word-level KD students of both teachers, T=1", "student2", _T),
    ("nmt/distill", "distill", [], "NMT teachers translate the training set (sequence-level KD data)", None, _T),
    ("nmt/student_seqkd", "student_seqkd", ["student_seqkd_ls", "student_seqkd_nols"],
     "NMT sequence-level KD students of both teachers", "student2", ["nmt/distill"]),
    ("nmt/evaluate", "evaluate", [], "NMT test-set BLEU of all seven models", None,
     _T + ["nmt/student_nokd", "nmt/student_wordkd", "nmt/student_seqkd"]),
]


def nmt_runs(scale: Scale, work: str) -> List[Run]:
    n = scale.nmt
    runs = []
    for rid, stage, steps, title, what, deps in NMT_MODELS:
        if what == "teacher":
            est, total = n.est_teacher_s, n.max_update_teacher
        elif what == "student":
            est, total = n.est_student_s, n.max_update_student
        elif what == "student2":
            est, total = 2 * n.est_student_s, 2 * n.max_update_student
        elif rid == "nmt/distill":
            est, total = 2 * n.est_distill_s, None
        elif rid == "nmt/evaluate":
            est, total = 7 * n.est_eval_s, None
        else:
            est, total = n.est_other_s, None
        lo, _, hi = stage.partition(":")
        runs.append(Run(rid, "nmt", "recipe_stage", title, est,
                        {"stage": lo, "stop_stage": hi or lo, "steps": steps,
                         "max_update": n.max_update_teacher if what == "teacher" else n.max_update_student},
                        total=total, unit="update", deps=list(deps)))
    steps = nmt_sweep_names(scale)
    if steps:
        runs.append(Run("nmt/temperature_sweep", "nmt", "recipe_stage",
                        "NMT word-level KD students of both teachers at T = "
                        + ", ".join(f"{t:g}" for t in n.kd_sweep_temperatures),
                        len(steps) * (n.est_student_s + n.est_eval_s),
                        {"stage": "temperature_sweep", "stop_stage": "temperature_sweep", "steps": steps,
                         "max_update": n.max_update_student},
                        total=len(steps) * n.max_update_student, unit="update",
                        deps=_T + ["nmt/evaluate"]))
    return runs


def nmt_sweep_pairs(scale: Scale) -> List[Tuple[float, str, str]]:
    """(T, student of the LS teacher, student of the no-LS teacher): the recipe's model names of the
    NMT temperature sweep (T=1 left out, as the recipe does: those are student_wordkd_*)."""
    return [(float(t), f"student_wordkd_ls_{t_tag(t)}", f"student_wordkd_nols_{t_tag(t)}")
            for t in scale.nmt.kd_sweep_temperatures if float(t) != 1.0]


def nmt_sweep_names(scale: Scale) -> List[str]:
    """Recipe model names of the NMT temperature sweep, in training order."""
    return [name for _, ls, nols in nmt_sweep_pairs(scale) for name in (ls, nols)]


def plan(scale_name: str, work: str, tracks=("nmt", "vision")) -> List[Run]:
    scale = SCALE_DEFS[scale_name]
    runs: List[Run] = []
    if "nmt" in tracks:
        runs += nmt_runs(scale, work)
    if "vision" in tracks:
        runs += vision_runs(scale, work)
    if "vision" in tracks:
        runs.append(Run("analysis/vision_stability", "analysis", "analysis",
                        "1-S, ECE, class-mean softmax and penultimate features of every CIFAR-10 model",
                        30 if scale_name == "smoke" else 300,
                        deps=[r.id for r in runs if r.kind == "vision_train"], soft=True, unit="model"))
    if "nmt" in tracks:
        runs.append(Run("analysis/nmt_stability", "analysis", "analysis",
                        "token-level 1-S and ECE of the NMT teachers and word-KD students",
                        20 if scale_name == "smoke" else 240,
                        deps=["nmt/teacher_ls", "nmt/teacher_nols", "nmt/student_wordkd"], soft=True, unit="model"))
    return runs
