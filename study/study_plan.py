"""What ``lskd-study`` runs at each scale: the settings, the list of runs and their estimates.

Two tracks that do not depend on each other:

* ``nmt``: the Multi30k recipe (``recipes/multi30k/run.sh``, owned by the
  recipes), stage by stage: data, teachers with and without LS and the
  teachers' translations of the training set, once; then, once per seed, a
  student without KD, word-level KD students of each teacher at T=1,
  sequence-level KD students of each teacher, test BLEU, and word-level KD
  students of each teacher at each T in ``kd_sweep_temperatures``, all with the
  recipe's ``--seed`` (it names seed N's students ``<name>_s<N>``, seed 1's by
  their plain names, beside the same teachers in one work folder).
* ``vision``: ``lskd-vision-train`` on CIFAR-10 (the JPEG tarball): teachers
  with and without LS, once; per seed, a student without KD and students of each
  teacher at each T in ``temperatures`` (alpha = 1: soft labels only, the paper's
  setting); and, when ``long_tail_imbalance`` is set, the same two teachers and
  their T=1 students again on a long-tailed training set (class c keeps
  ``n_max * F^(-c/(C-1))`` images, n_max a whole class; the test set stays balanced).

The two students of one seed get the same ``--seed`` (initialisation, data order,
augmentations): the report compares them as pairs. Then the ``analysis``
(stability of every model) that the report reads.

The NMT scales are the recipe's own (``--scale`` is passed through), so a study
and a recipe run at the same scale produce the same models. The estimates
(``est_s``) come from throughput measured on the 2-core machine; the report
replaces them by the runs' measured times.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from lskd_study.speeds import (BUDGET_S, FORWARD_S_PER_IMG, NMT_UPDATES_PER_S, PRECISION,
                                precision_args, precision_reason, vision_train_s)
from lskd_study.stats import seeds_for_half_width

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO, "recipes", "multi30k", "run.sh")


def default_data_root() -> str:
    """$LSKD_SHARED_DATA, else ../shared/data beside the checkout."""
    return os.environ.get("LSKD_SHARED_DATA") or os.path.join(os.path.dirname(REPO), "shared", "data")


def data_paths(root: Optional[str] = None) -> Dict[str, str]:
    """Where the study reads its data under ``root`` (default: :func:`default_data_root`)."""
    root = os.path.abspath(root or default_data_root())
    return {"root": root, "cifar10": os.path.join(root, "cifar10", "cifar10_jpg.tar.gz"),
            "multi30k": os.path.join(root, "multi30k")}


CIFAR10_TRAIN_PER_CLASS = 5000
CIFAR10_CLASSES = 10


SCALES = ("smoke", "cpu", "full")
# The seed-to-seed SD of the paired T=1 difference (LS-teacher student minus no-LS-teacher student,
# top-1 points) measured by the 6 Dec cpu study: 3 seeds, 95% CI [-2.60, +1.00] (half-width 1.80 =
# t(0.975, 2) * SD / sqrt(3)); docs/studies/2026-12-06/report.md. With the non-inferiority margin
# (verdicts.VISION_MARGIN, 0.5 points; a test holds them equal) it sets how many seeds the cpu
# scale gives the T=1 pair.
T1_PAIRED_SD = 0.725
T1_MARGIN = 0.5
# the cpu scale's training lengths (chosen from the speeds in lskd_study.speeds to fit BUDGET_S; see the cpu note).
# 7 Dec: the 10-epoch / 1,600-update teachers finished in 1h18m and missed their targets (82.7-82.8%,
# 28.7-28.9 BLEU; docs/studies/2026-12-07), so the 40 minutes left in the budget go to the teachers:
# 18 epochs and 2,000 updates, estimated at 1h40m on 2 slots with the 7 Dec speeds.
CPU_TEACHER_EPOCHS = 18
CPU_STUDENT_EPOCHS = 6
CPU_NMT_TEACHER_UPDATES = 2000
CPU_NMT_STUDENT_UPDATES = 600


@dataclass
class VisionScale:
    teacher_arch: str
    student_arch: str
    teacher_epochs: int
    student_epochs: int
    batch_size: int
    lr: float
    temperatures: List[float]
    # the teachers' optimiser: SGD (Nesterov when set), weight decay, warm-up epochs, then cosine
    nesterov: bool = False
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.1
    ls_convention: str = "uniform"  # eps/K on every class, as torchvision (the paper's ImageNet models)
    # smoke: a symlinked subset folder (train/test per class); otherwise the tarball itself
    subset_train_per_class: int = 0
    subset_test_per_class: int = 0
    train_per_class: int = 0  # lskd-vision-train --train-per-class of the teachers (0 = all)
    student_train_per_class: int = 0  # the same for the students (0 = all)
    val_fraction: float = 0.1
    small_input_stem: bool = False
    long_tail_imbalance: float = 0.0  # F > 1 adds the long-tailed arm (0: none)
    # the long-tailed runs: no validation carve, so n_max is the full class (5000 on CIFAR-10, as
    # CIFAR-10-LT), the last epoch is kept; many-shot > MANY training images, few-shot < FEW
    long_tail_val_fraction: float = 0.0
    shot_thresholds: Tuple[int, int] = (100, 20)
    extra: List[str] = field(default_factory=list)
    # KD students read a soft-label cache (lskd-vision-cache) of their teacher, one per teacher, data
    # arm and seed (a seed fixes the views), instead of running the teacher
    teacher_cache: bool = True
    est_cache_s: float = 20  # one cache: the teacher over every view of a student's epochs
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
    # word-level KD students read each teacher's lskd-teacher-cache (recipe stage teacher_cache)
    teacher_cache: bool = True
    est_cache_s: float = 60  # both teachers' caches
    # recipe options the study sets on top of the recipe's scale (e.g. a shorter budget)
    recipe_options: Dict[str, str] = field(default_factory=dict)


@dataclass
class Scale:
    name: str
    vision: VisionScale
    nmt: NmtScale
    jobs: int  # tracks run side by side (1 thread each when 2)
    note: str
    seeds: int = 3  # every student is trained once per seed (1..seeds); teachers once
    # the NMT track's students use the first nmt_seeds of those seeds (0: all of them)
    nmt_seeds: int = 0
    # the vision T=1 pair (both teachers' students at T=1 and their caches), the paper's Table 2
    # comparison, is trained for seeds 1..max(seeds, t1_seeds): more seeds where the verdict needs them
    t1_seeds: int = 0

    def vision_seed_count(self, seeds: int) -> int:
        """Seeds of the vision T=1 pair when the other students have ``seeds``."""
        return max(seeds, self.t1_seeds)

    def nmt_seed_list(self, seeds: List[int]) -> List[int]:
        return list(seeds[: self.nmt_seeds]) if self.nmt_seeds else list(seeds)


SCALE_DEFS: Dict[str, Scale] = {
    "smoke": Scale(
        name="smoke",
        vision=VisionScale(
            teacher_arch="resnet8", student_arch="resnet8", teacher_epochs=1, student_epochs=1,
            batch_size=32, lr=0.05, temperatures=[1, 2, 4],
            subset_train_per_class=40, subset_test_per_class=20, val_fraction=0.1,
            long_tail_imbalance=10, shot_thresholds=(25, 8), est_teacher_s=12, est_student_s=12,
            extra=precision_args(),  # the cpu scale's precision, so that the smoke study runs its path
        ),
        nmt=NmtScale("smoke", 12, 8, est_teacher_s=20, est_student_s=15, est_other_s=20,
                     est_distill_s=40, est_eval_s=25, top_tokens=200, kd_sweep_temperatures=[2]),
        jobs=2,
        seeds=2,
        note=(
            "smoke scale is a plumbing check: a few hundred sentences and images, one epoch "
            "or a dozen updates per model. Nothing about the paper's claims can be concluded from it."
        ),
    ),
    "cpu": Scale(
        name="cpu",
        vision=VisionScale(
            # sized to the 2-hour budget on 2 cores from the speeds measured on 7 Dec (see the note):
            # teachers on the whole training set less the seeded 10% validation carve (45,000 images),
            # CPU_TEACHER_EPOCHS epochs of SGD with Nesterov momentum 0.9, weight decay 5e-4, one warm-up
            # epoch and a cosine schedule; students: ResNet-8 on 1,000 images a class, reading the
            # teachers' soft-label caches; the long-tailed arm on CIFAR-10-LT (imbalance 100)
            teacher_arch="resnet20", student_arch="resnet8", teacher_epochs=CPU_TEACHER_EPOCHS,
            student_epochs=CPU_STUDENT_EPOCHS,
            batch_size=128, lr=0.1, temperatures=[1, 4], nesterov=True, warmup_epochs=1.0,
            train_per_class=0, student_train_per_class=1000, val_fraction=0.1,
            long_tail_imbalance=100, shot_thresholds=(1500, 200),
            extra=precision_args(),
            est_teacher_s=vision_train_s("resnet20", 45000, CPU_TEACHER_EPOCHS),
            est_student_s=vision_train_s("resnet8", 10000, CPU_STUDENT_EPOCHS) + 20,
            est_cache_s=10000 * CPU_STUDENT_EPOCHS * FORWARD_S_PER_IMG[PRECISION]["resnet20"] + 15,
        ),
        # teachers: the recipe's cpu models, early-stopped on validation BLEU (patience 5 epochs), at
        # most CPU_NMT_TEACHER_UPDATES updates of 2048 tokens (what the budget holds at ~2 updates/s:
        # ~6.8 epochs, short of convergence); students: CPU_NMT_STUDENT_UPDATES updates
        nmt=NmtScale("cpu", CPU_NMT_TEACHER_UPDATES, CPU_NMT_STUDENT_UPDATES,
                     est_teacher_s=CPU_NMT_TEACHER_UPDATES / NMT_UPDATES_PER_S["teacher"] * 1.15,
                     est_student_s=CPU_NMT_STUDENT_UPDATES / NMT_UPDATES_PER_S["student"] + 15, est_other_s=40,
                     est_distill_s=75, est_eval_s=12, est_cache_s=150, kd_sweep_temperatures=[4],
                     recipe_options={"MAX_UPDATE_TEACHER": str(CPU_NMT_TEACHER_UPDATES),
                                     "MAX_UPDATE_STUDENT": str(CPU_NMT_STUDENT_UPDATES), "BF16": "auto"}),
        jobs=2,
        seeds=3,
        nmt_seeds=2,
        # the T=1 pair's seeds: the fewest whose 95% interval is narrower than the margin at the
        # measured seed variance (T1_PAIRED_SD): 11 (10 would give +-0.52)
        t1_seeds=seeds_for_half_width(T1_PAIRED_SD, T1_MARGIN) or 3,
        note=(
            "cpu scale, sized to finish within 2 hours on the 2-core machine "
            f"({'bfloat16 autocast + channels_last' if PRECISION == 'bfloat16' else 'float32'}): Multi30k "
            "en-de with the recipe's cpu models (teachers early-stopped on validation BLEU, at most "
            f"{CPU_NMT_TEACHER_UPDATES} updates; students {CPU_NMT_STUDENT_UPDATES} updates; word-level KD at T = 1 and 4) and "
            f"CIFAR-10 with ResNet-20 teachers trained on the whole training set (less the validation "
            f"carve) for {CPU_TEACHER_EPOCHS} epochs and ResNet-8 students on 1,000 images a class for "
            f"{CPU_STUDENT_EPOCHS} epochs at T = 1 and 4, plus the long-tailed arm (CIFAR-10-LT, "
            "imbalance 100: teachers and T=1 students). KD students read teacher caches. Teachers are "
            "trained once per setting; vision students once per seed (3; the T=1 pair 11), NMT students for "
            "the first 2 seeds, paired by seed. Far below the paper's settings."
        ),
    ),
    "full": Scale(
        name="full",
        vision=VisionScale(
            teacher_arch="resnet50", student_arch="resnet18", teacher_epochs=200, student_epochs=200,
            batch_size=128, lr=0.1, temperatures=[1, 2, 4], val_fraction=0.1, small_input_stem=True,
            nesterov=True, warmup_epochs=1.0, long_tail_imbalance=100, shot_thresholds=(1500, 200),
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


def seed_name(base: str, seed: int) -> str:
    """The run (and folder) name of a student trained with ``seed``."""
    return f"{base}_seed{seed}"


def recipe_name(base: str, seed: Optional[int]) -> str:
    """The Multi30k recipe's name of a student trained with ``seed`` (its --seed): the plain
    name for seed 1, ``<name>_s<seed>`` otherwise (teachers: seed None, the plain name)."""
    return base if seed in (None, 1) else f"{base}_s{seed}"


def split_seed_name(name: str) -> Tuple[str, Optional[int]]:
    """``student_ls_T1_seed2`` -> (``student_ls_T1``, 2); a teacher's name -> (name, None)."""
    base, sep, tail = name.rpartition("_seed")
    if sep and tail.isdigit():
        return base, int(tail)
    return name, None


def long_tail_images(scale: Scale) -> int:
    """Training images of the long-tailed CIFAR-10 copy (n_max = a whole class)."""
    f = scale.vision.long_tail_imbalance
    n_max = CIFAR10_TRAIN_PER_CLASS
    return sum(int(n_max * f ** (-c / (CIFAR10_CLASSES - 1)) + 1e-9) for c in range(CIFAR10_CLASSES))


def cache_name(teacher: str, seed: int) -> str:
    """The study's run (and folder) name of ``teacher``'s soft-label cache for students of ``seed``."""
    return seed_name(f"cache_{teacher}", seed)


def vision_runs(scale: Scale, work: str, seeds: List[int]) -> List[Run]:
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
                        {"arch": v.teacher_arch, "epochs": v.teacher_epochs, "label_smoothing": ls, "teacher": None,
                         "role": "teacher", "seed": 0},
                        total=v.teacher_epochs, deps=list(data_dep)))
    f = v.long_tail_imbalance
    lt = bool(f and f > 1)
    # the long-tailed copy's size against a balanced teacher's and a balanced student's training
    # images, for the estimates (a long-tailed student trains on the whole long-tailed copy)
    teacher_images = CIFAR10_CLASSES * CIFAR10_TRAIN_PER_CLASS * (1 - v.val_fraction)
    student_images = CIFAR10_CLASSES * v.student_train_per_class if v.student_train_per_class else teacher_images
    lt_images = long_tail_images(scale) if lt else 0
    share, student_share = lt_images / teacher_images, lt_images / student_images
    if lt:
        for name, ls in teachers:
            runs.append(Run(f"vision/lt_{name}", "vision", "vision_train",
                            f"long-tailed CIFAR-10 (imbalance {f:g}) teacher {v.teacher_arch}, LS {ls:g}",
                            v.est_teacher_s * share,
                            {"arch": v.teacher_arch, "epochs": v.teacher_epochs, "label_smoothing": ls, "teacher": None,
                             "imbalance_factor": f, "role": "teacher", "seed": 0},
                            total=v.teacher_epochs, deps=list(data_dep)))
    def cache_dep(teacher: str, seed: int, imbalance: float = 0.0) -> List[str]:
        """The student's dependency: its teacher, or the teacher's cache for this seed (made once)."""
        if not v.teacher_cache:
            return [f"vision/{teacher}"]
        rid = f"vision/{cache_name(teacher, seed)}"
        if rid not in made:
            made.add(rid)
            args = {"teacher": teacher, "epochs": v.student_epochs, "seed": seed, "role": "cache"}
            if imbalance:
                args["imbalance_factor"] = imbalance
            runs.append(Run(rid, "vision", "vision_cache",
                            f"soft-label cache of {teacher} for seed {seed}'s students ({v.student_epochs} epochs of views)",
                            v.est_cache_s * (student_share if imbalance else 1.0), args,
                            total=v.student_epochs, deps=[f"vision/{teacher}"]))
        return [rid]

    def student_run(name: str, t: float, seed: int) -> Run:
        base = f"student_{name[len('teacher_'):]}_{t_tag(t)}"
        return Run(f"vision/{seed_name(base, seed)}", "vision", "vision_train",
                   f"CIFAR-10 student {v.student_arch} <- {name}, KD alpha 1, T={t:g}, seed {seed}",
                   v.est_student_s,
                   {"arch": v.student_arch, "epochs": v.student_epochs, "label_smoothing": 0.0,
                    "teacher": name, "kd_temperature": t, "role": "student", "seed": seed},
                   total=v.student_epochs, deps=cache_dep(name, seed))

    made: set = set()
    for seed in seeds:
        runs.append(Run(f"vision/{seed_name('student_nokd', seed)}", "vision", "vision_train",
                        f"CIFAR-10 student {v.student_arch}, no KD, seed {seed}",
                        v.est_student_s * (1.0 if v.teacher_cache else 0.6),
                        {"arch": v.student_arch, "epochs": v.student_epochs, "label_smoothing": 0.0, "teacher": None,
                         "role": "student", "seed": seed},
                        total=v.student_epochs, deps=list(data_dep)))
        for t in v.temperatures:
            for name, _ in teachers:
                runs.append(student_run(name, t, seed))
        if lt:
            for name, _ in teachers:
                base = f"lt_student_{name[len('teacher_'):]}_T1"
                runs.append(Run(f"vision/{seed_name(base, seed)}", "vision", "vision_train",
                                f"long-tailed CIFAR-10 student {v.student_arch} <- lt_{name}, KD alpha 1, T=1, "
                                f"seed {seed}", v.est_student_s * student_share,
                                {"arch": v.student_arch, "epochs": v.student_epochs, "label_smoothing": 0.0,
                                 "teacher": f"lt_{name}", "kd_temperature": 1.0, "imbalance_factor": f, "role": "student",
                                 "seed": seed},
                                total=v.student_epochs, deps=cache_dep(f"lt_{name}", seed, f)))
    for seed in range(seeds[-1] + 1, scale.vision_seed_count(len(seeds)) + 1):  # extra seeds: the T=1 pair only
        for name, _ in teachers:
            runs.append(student_run(name, 1.0, seed))
    return runs


_T = ["nmt/teacher_ls", "nmt/teacher_nols"]
# (study run id, recipe stage(s), recipe step(s) holding a training log, title, kind, deps)
NMT_SHARED = [
    ("nmt/data", "prepare:binarize", [], "Multi30k data: raw text, sentencepiece, binarize", None, []),
    ("nmt/teacher_ls", "teacher_ls", ["teacher_ls"], "NMT teacher with LS", "teacher", ["nmt/data"]),
    ("nmt/teacher_nols", "teacher_nols", ["teacher_nols"], "NMT teacher without LS", "teacher", ["nmt/data"]),
    ("nmt/distill", "distill", [], "NMT teachers translate the training set (sequence-level KD data)", None, _T),
]
# with NmtScale.teacher_cache: both teachers' top-k caches, read by every word-level KD student
NMT_CACHE = ("nmt/teacher_cache", "teacher_cache", [], "NMT teachers' top-k caches of the training and "
             "validation targets (lskd-teacher-cache)", None, _T)
# per seed: the ids get _seed<s>, the recipe's steps <name>_s<s>; deps in {} are runs of the same seed
NMT_PER_SEED = [
    ("nmt/student_nokd", "student_nokd", ["student_nokd"], "NMT student, no KD", "student", ["nmt/data"]),
    ("nmt/student_wordkd", "student_wordkd", ["student_wordkd_ls", "student_wordkd_nols"],
     "NMT word-level KD students of both teachers, T=1", "student2", _T),
    ("nmt/student_seqkd", "student_seqkd", ["student_seqkd_ls", "student_seqkd_nols"],
     "NMT sequence-level KD students of both teachers", "student2", ["nmt/distill"]),
    ("nmt/evaluate", "evaluate", [], "NMT test-set BLEU of the teachers and this seed's students", None,
     _T + ["{nmt/student_nokd}", "{nmt/student_wordkd}", "{nmt/student_seqkd}"]),
]


def nmt_runs(scale: Scale, work: str, seeds: List[int]) -> List[Run]:
    n = scale.nmt
    runs = []

    def make(rid, stage, steps, title, what, deps, seed):
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
        elif rid == NMT_CACHE[0]:
            est, total = n.est_cache_s, None
        else:
            est, total = n.est_other_s, None
        lo, _, hi = stage.partition(":")
        if seed is not None:
            rid, title = seed_name(rid, seed), f"{title}, seed {seed}"
            deps = [seed_name(d[1:-1], seed) if d.startswith("{") else d for d in deps]
            steps = [recipe_name(st, seed) for st in steps]
            if rid.startswith("nmt/evaluate") and seed != seeds[0]:
                deps.append(seed_name("nmt/evaluate", seeds[0]))  # the first evaluation scores the teachers
        return Run(rid, "nmt", "recipe_stage", title, est,
                   {"stage": lo, "stop_stage": hi or lo, "steps": steps, "seed": seed,
                    "max_update": n.max_update_teacher if what == "teacher" else n.max_update_student},
                   total=total, unit="update", deps=list(deps))

    for spec in NMT_SHARED + ([NMT_CACHE] if n.teacher_cache else []):
        runs.append(make(*spec, None))
    word_deps = [NMT_CACHE[0]] if n.teacher_cache else []
    steps = nmt_sweep_names(scale)
    for seed in seeds:
        for spec in NMT_PER_SEED:
            runs.append(make(*spec, seed))
            if spec[0] == "nmt/student_wordkd":
                runs[-1].deps += word_deps
        if steps:
            runs.append(Run(seed_name("nmt/temperature_sweep", seed), "nmt", "recipe_stage",
                            "NMT word-level KD students of both teachers at T = "
                            + ", ".join(f"{t:g}" for t in n.kd_sweep_temperatures) + f", seed {seed}",
                            len(steps) * (n.est_student_s + n.est_eval_s),
                            {"stage": "temperature_sweep", "stop_stage": "temperature_sweep",
                             "steps": [recipe_name(st, seed) for st in steps],
                             "max_update": n.max_update_student, "seed": seed},
                            total=len(steps) * n.max_update_student, unit="update",
                            deps=_T + word_deps + [seed_name("nmt/evaluate", seed)]))
    return runs


def nmt_sweep_pairs(scale: Scale) -> List[Tuple[float, str, str]]:
    """(T, student of the LS teacher, student of the no-LS teacher): the recipe's model names of the
    NMT temperature sweep (T=1 left out, as the recipe does: those are student_wordkd_*)."""
    return [(float(t), f"student_wordkd_ls_{t_tag(t)}", f"student_wordkd_nols_{t_tag(t)}")
            for t in scale.nmt.kd_sweep_temperatures if float(t) != 1.0]


def nmt_sweep_names(scale: Scale) -> List[str]:
    """Recipe model names of the NMT temperature sweep, in training order."""
    return [name for _, ls, nols in nmt_sweep_pairs(scale) for name in (ls, nols)]


def plan(scale_name: str, work: str, tracks=("nmt", "vision"), seeds: Optional[int] = None) -> List[Run]:
    scale = SCALE_DEFS[scale_name]
    seed_list = list(range(1, (seeds or scale.seeds) + 1))
    runs: List[Run] = []
    if "nmt" in tracks:
        runs += nmt_runs(scale, work, scale.nmt_seed_list(seed_list))
    if "vision" in tracks:
        runs += vision_runs(scale, work, seed_list)
    if "vision" in tracks:
        n_models = sum(1 for r in runs if r.kind == "vision_train")
        runs.append(Run("analysis/vision_stability", "analysis", "analysis",
                        "1-S, ECE, class-mean softmax and penultimate features of every CIFAR-10 model",
                        2 * n_models if scale_name == "smoke" else 8 * n_models,  # 6 Dec: 238 s, 31 models
                        deps=[r.id for r in runs if r.kind == "vision_train"], soft=True, unit="model"))
    if "nmt" in tracks:
        runs.append(Run("analysis/nmt_stability", "analysis", "analysis",
                        "token-level 1-S and ECE of the NMT teachers and the first seed's word-KD students",
                        20 if scale_name == "smoke" else 40,  # 7 Dec: 23 s
                        deps=["nmt/teacher_ls", "nmt/teacher_nols", seed_name("nmt/student_wordkd", seed_list[0])],
                        soft=True, unit="model"))
    return runs


def plan_time_line(scale_name: str, runs: List[Run], jobs: int) -> str:
    """The precision the CPU runs use and what the plan's estimate says against the budget (printed
    before the study starts: on a CPU without bf16 the cpu scale takes longer than it is sized for)."""
    span = estimate_makespan(runs, jobs)
    line = (f"precision: {PRECISION} ({precision_reason()}); estimated ~{fmt_dur(span)} on {jobs} job slot(s) "
            f"at the speeds measured in {PRECISION}")
    if scale_name == "cpu" and span > BUDGET_S:
        line += (f": LONGER than the {BUDGET_S // 3600} h the cpu scale is sized for"
                 + (" (it is sized for bfloat16 speeds; this CPU runs float32)" if PRECISION != "bfloat16" else ""))
    return line


def fmt_dur(s: Optional[float]) -> str:
    if s is None or s != s:
        return "?"
    s = max(0, int(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def chain_lengths(runs: List[Run]) -> Dict[str, float]:
    """For every run, the estimated seconds from its start to the end of the longest chain of
    runs that wait for it (its critical-path length): lskd-study starts the ready run with the
    longest chain first."""
    by_id = {r.id: r for r in runs}
    after: Dict[str, List[str]] = {r.id: [] for r in runs}
    for r in runs:
        for d in r.deps:
            if d in after:
                after[d].append(r.id)
    chain: Dict[str, float] = {}

    def chain_s(rid: str) -> float:
        if rid not in chain:
            chain[rid] = by_id[rid].est_s + max((chain_s(a) for a in after[rid]), default=0.0)
        return chain[rid]

    for r in runs:
        chain_s(r.id)
    return chain


def estimate_makespan(runs: List[Run], jobs: int) -> float:
    """Seconds the plan takes on ``jobs`` slots by its estimates, scheduled as lskd-study does
    (the ready run with the longest chain of runs behind it first)."""
    by_id = {r.id: r for r in runs}
    chain = chain_lengths(runs)

    done: Dict[str, float] = {}  # run -> end time
    slots = [0.0] * max(1, jobs)
    pending = sorted(runs, key=lambda r: -chain[r.id])
    while pending:
        k = min(range(len(slots)), key=lambda i: slots[i])
        now = slots[k]
        ready = [r for r in pending if all(d in done and done[d] <= now for d in r.deps if d in by_id)]
        if not ready:
            later = [done[d] for r in pending for d in r.deps if d in done and done[d] > now]
            slots[k] = min(later) if later else now + 1.0
            continue
        r = ready[0]
        pending.remove(r)
        slots[k] = now + r.est_s
        done[r.id] = slots[k]
    return max(slots)
