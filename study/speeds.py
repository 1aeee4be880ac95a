"""The measured speeds behind the study's estimates, and the precision its CPU runs use.

``lskd-study`` sizes its cpu scale from these (``study_plan``) and prints, before it starts,
the precision it chose for this CPU and the estimate against ``BUDGET_S``; the report
replaces the estimates by the runs' measured times.
"""

import os
from typing import List, Optional


# One-thread CPU throughput of lskd-vision-train end to end (images a second: batch 128, CIFAR-10
# augmentation, images decoded once into RAM, validation excluded) with two such runs side by side on
# the 2-core machine, per precision, and the cost of a teacher's forward pass per image (a cache, or
# an online KD student): the estimates of the cpu scale. The report replaces them by measured times.
# float32: measured 6 Dec 2026 (docs/benchmarks.md). bfloat16 (AVX-512 with avx512_bf16, no AMX):
# calibrated 7 Dec from the run records of the 6 Dec study (docs/studies/2026-12-06/done: ResNet-20
# teachers 1,385 s for 10 epochs of 45,000 images, ResNet-8 students 61 s for 6 epochs of 10,000,
# ResNet-20 caches 44 s for 60,000 views; the bare-step figures of 6 Dec, 300 and 750 images/s and
# 0.9 ms a view, had put them at 1,650, 108 and 69 s). Recalibrated again from the 7 Dec study's
# records (docs/studies/2026-12-07/done), which ran on an otherwise idle machine: ResNet-20 teachers
# 975-1,003 s for 10 epochs of 45,000 images (with the 1.1 allowance for evaluation: ~500 images/s),
# ResNet-8 students 55 s for 6 epochs of 10,000 (~1,850), caches 38-40 s for 60,000 views (0.4 ms);
# the 6 Dec figures had put the 7 Dec plan at 1h45m for a study that took 1h18m.
TRAIN_IMG_PER_S = {
    "bfloat16": {"resnet20": 500.0, "resnet8": 1850.0},
    "float32": {"resnet20": 150.0, "resnet8": 380.0},
}
FORWARD_S_PER_IMG = {
    "bfloat16": {"resnet20": 0.0004, "resnet8": 0.00015},
    "float32": {"resnet20": 0.0021, "resnet8": 0.0009},
}
# fairseq-train updates a second of the Multi30k recipe's cpu teacher (3+3 layers, d=128, 2048 tokens)
# and student (2+2, d=64, 1024 tokens), one thread, beside other work. fairseq's whole-model --bf16
# measured 0.92x float32 for this shape on an AVX512-BF16 CPU without AMX, so the recipe's BF16=auto
# keeps float32 there: the NMT track runs in float32 unless the CPU has AMX. Calibrated 7 Dec from the
# 6 Dec study's run records (teachers 1,251 and 1,315 s for 1,600 updates with validation, beside a
# vision run: 1.4 updates/s with the 1.15 validation allowance; students ~110 s for 600 updates); a
# bare float32 teacher step on an idle machine did 1.98 updates/s (6 Dec). 7 Dec study (idle machine):
# teachers 825 and 838 s for 1,600 updates (2.2 updates/s with the allowance), students 79 s for 600
# (~9 updates/s with the 15 s start-up).
NMT_UPDATES_PER_S = {"teacher": 2.2, "student": 9.0}


def cpu_precision() -> str:
    """``bfloat16`` where this CPU computes bf16 in hardware (AMX or AVX-512 BF16), else ``float32``:
    the precision of the study's CPU runs (``lskd_vision.precision.cpu_has_bf16``)."""
    if os.environ.get("LSKD_STUDY_PRECISION") in ("float32", "bfloat16"):  # tests and comparisons
        return os.environ["LSKD_STUDY_PRECISION"]
    from lskd_vision.precision import cpu_has_bf16

    return "bfloat16" if cpu_has_bf16() else "float32"


PRECISION = cpu_precision()
BUDGET_S = 2 * 3600  # the cpu scale's target: the whole study within 2 hours on 2 cores, in one go


def precision_reason() -> str:
    if os.environ.get("LSKD_STUDY_PRECISION"):
        return f"LSKD_STUDY_PRECISION={os.environ['LSKD_STUDY_PRECISION']}"
    from lskd_vision.precision import cpu_bf16_description

    return cpu_bf16_description()


def vision_train_s(arch: str, images: int, epochs: int, teacher_arch: Optional[str] = None,
                   precision: str = PRECISION) -> float:
    """Estimated seconds of one lskd-vision-train run on one CPU thread."""
    per_img = 1.0 / TRAIN_IMG_PER_S[precision].get(arch, 100.0)
    if teacher_arch:
        per_img += FORWARD_S_PER_IMG[precision].get(teacher_arch, 0.004)
    return images * epochs * per_img * 1.1  # + validation and test passes


def precision_args(precision: str = PRECISION) -> List[str]:
    """lskd-vision-train / lskd-vision-cache options of a CPU run in ``precision``."""
    return ["--amp", "--amp-dtype", "bfloat16", "--channels-last"] if precision == "bfloat16" else []


def amp_args(extra: List[str]) -> List[str]:
    """The precision and memory-format options among a vision run's extra options (what its
    teacher cache must run with too)."""
    out, i = [], 0
    while i < len(extra):
        if extra[i] in ("--amp", "--channels-last"):
            out.append(extra[i])
        elif extra[i] == "--amp-dtype" and i + 1 < len(extra):
            out += extra[i:i + 2]
            i += 1
        i += 1
    return out
