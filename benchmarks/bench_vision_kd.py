"""Images per second of vision KD students against a cross-entropy student, measured in one run.

    python benchmarks/bench_vision_kd.py [--quick] [--batch-size 128] [--steps 10] [--rounds 3]
        [--amp [--channels-last]] [--threads N]

Two pairs, both trained through ``lskd_vision.engine.train_one_epoch`` (the CLI's
loop) on in-memory random 32x32 images, so image decoding is left out:

* same size: a ResNet-20 student of a frozen ResNet-20 teacher, online KD
  (target: KD takes <= 1.35x the time of CE);
* the study's pair: ResNet-20 teacher -> ResNet-8 student. Against the CE
  ResNet-8 it measures online KD (the teacher runs every step), cached KD (the
  student reads the teacher's stored float16 logits from an ``lskd-vision-cache``
  memmap, written here by the cache's own epoch writer, and runs no teacher), and
  the cache's build cost per epoch (teacher forward + memmap write over the same
  images), as a fraction of the CE student's epoch time. Targets: cached KD
  images/s >= 0.95x CE's; storage <= 2*K + 16 bytes per sample-epoch (K <= 100).

The storage figure is measured, not computed: a real cache is built with
``lskd-vision-cache`` (in process) from a ResNet-8 teacher trained for one epoch by
``lskd-vision-train`` on a generated image folder (1000 16x16 images, 10 classes), 2 epochs
of views; its figure is the bytes of every file in the cache folder (the ``.npy`` epoch files
with their headers and ``cache.json``) / (training samples x epochs).

Each measurement is the wall time of one ``train_one_epoch`` call (time.perf_counter);
the arms of a round run in turn and the order flips from round to round (CE, KD, ...
then ..., KD, CE) so that neither arm always runs first, and load from other processes
and slow drifts hit all alike. Each time ratio is the median of the per-round ratios
(KD seconds / CE seconds, paired within a round); images/s are medians over the rounds.
The same ratios by process CPU time (``time.process_time``: insensitive to being
descheduled, meaningful with one thread) are printed beside them.

``--amp`` runs the students and teachers under bfloat16 autocast (CPU), the way
``lskd-vision-train --amp`` does on CPU (``lskd_vision.precision``,
passed to ``train_one_epoch`` and the cache's epoch writer; losses in float32);
``--channels-last`` puts models and batches in channels_last. Ratio names then end in
``_bf16`` (and ``_cl``); the targets are the same. Besides the readable lines,
each figure is printed once as a machine-readable line::

    RATIO name=<name> value=<float> target=<op><float>|none ok=<True|False>

(``target=none``: a figure without a target, ``ok=True``). ``--quick`` is a short
run (batch 32, 4 steps, 4 rounds, 1 thread unless ``--threads``): its figures are rough.

Why the same-size ratio once read 0.727 (30 Nov 2026, --quick, load about 3): the code did
compute KD time / CE time (CE images/s / KD images/s per round, median over rounds; no
inverted pair, no cached teacher: the teacher ran every KD step), but from 3 rounds of 3
steps of batch 32 (96 images, about 5 s each at the ~20 images/s then measured) with
torch's default 2 threads on a 2-core machine that other jobs kept busy, and CE always ran
first in a round. Such rounds vary by more than KD's cost (the README's 26 Nov rounds:
0.91-1.61), so the median of three is noise: a run of the old code on 6 Dec (load about 5)
printed CE 18.1 and KD 12.0 images/s (medians over rounds: KD 1.51x the time) next to a
"median per-round ratio" of 0.864. Now the order flips each round, --quick runs 4 rounds
on one thread (the same ResNet-20 then trains at ~300 images/s instead of ~20), and the
CPU-time ratio and every round's times are printed beside the wall-time ratio.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from types import SimpleNamespace

import torch

from lskd_vision import cache as vision_cache
from lskd_vision import soft_labels
from lskd_vision.engine import LRSchedule, TeacherEnsemble, train_one_epoch
from lskd_vision.models import build_model
from lskd_vision.precision import Precision

PRECISION = Precision()  # set by main from --amp / --channels-last


def ratio_line(name, value, op=None, target=None):
    ok = True if op is None else (value >= target if op == ">=" else value <= target)
    shown = "none" if op is None else f"{op}{target:g}"
    print(f"RATIO name={name} value={value:.4f} target={shown} ok={ok}", flush=True)
    return {"value": value, "target": shown, "ok": ok}


def timed(model, loader, teacher=None, alpha=0.0, soft=None):
    """(wall seconds, CPU seconds) of one train_one_epoch over ``loader``."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    sched = LRSchedule(0.01, 10**6, kind="constant")
    t, c = time.perf_counter(), time.process_time()
    train_one_epoch(model, loader, opt, sched, 0, teacher=teacher, alpha=alpha, epsilon=0.0, temperature=4.0,
                    soft_labels=soft, precision=PRECISION)
    return time.perf_counter() - t, time.process_time() - c


def measure(model, loader, images, teacher=None, alpha=0.0, soft=None):
    return images / timed(model, loader, teacher, alpha, soft)[0]


def real_cache_bytes(work, k, amp_args):
    """Bytes per sample-epoch of a real lskd-vision-cache folder (see the module docstring)."""
    from lskd_vision.synthetic import make_image_folder
    from lskd_vision.train import main as train_main

    data = make_image_folder(os.path.join(work, "images"), num_classes=k, per_class=100, test_per_class=2,
                             size=16, seed=0)
    common = ["--val-fraction", "0", "--test-split", "none", "--workers", "0", "--no-progress",
              "--cache-images", "yes", *amp_args]
    run = os.path.join(work, "teacher")
    if train_main([data, "--output", run, "--model", "resnet8", "--epochs", "1", "--batch-size", "100",
                   "--seed", "1", *common]) != 0:
        raise SystemExit("training the cache's teacher failed")
    out, epochs = os.path.join(work, "cache"), 2
    if vision_cache.main([data, "--teacher", os.path.join(run, "checkpoint_best.pt"), "--out", out,
                          "--epochs", str(epochs), "--seed", "1", "--batch-size", "250", *common]) != 0:
        raise SystemExit("lskd-vision-cache failed")
    header = soft_labels.read_header(out)
    n = int(header["identity"]["num_train"])
    files = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs]
    total = sum(os.path.getsize(f) for f in files)
    return total / (n * epochs), total, n, epochs, len(files), header


class InMemoryViews(torch.utils.data.Dataset):
    """``(image, label, index)`` from tensors; the views do not change with the epoch."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i], i

    def set_epoch(self, epoch):
        pass


def build_cache(folder, teacher, x, y, num_classes, batch_size):
    """One epoch of views through lskd-vision-cache's epoch writer; returns (seconds, bytes on disk)."""
    dataset = InMemoryViews(x, y)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    spec = {"k": num_classes, "storage": "full", "num_classes": num_classes}
    args = SimpleNamespace(out=folder, fp16=False, precision=PRECISION)
    seconds = vision_cache._write_epoch(args, 0, loader, dataset, teacher, torch.device("cpu"), spec, None)
    size = sum(os.path.getsize(f) for f in soft_labels.epoch_files(folder, 0, "full"))
    header = {"storage": "full", "k": num_classes, "epochs": 1, "teachers": [],
              "identity": {"num_train": len(y), "options": {"seed": 0}}}
    return seconds, size, soft_labels.SoftLabels(folder, header)


def frozen(arch, num_classes):
    return PRECISION.model(TeacherEnsemble([build_model(arch, num_classes)], [{}], ["random"]))


def student_model(arch, num_classes):
    return PRECISION.model(build_model(arch, num_classes))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=10, help="training steps per round")
    p.add_argument("--rounds", type=int, default=3, help="measurement rounds")
    p.add_argument("--teacher", default="resnet20", help="the study's teacher")
    p.add_argument("--student", default="resnet8", help="the study's student")
    p.add_argument("--skip-same-size", action="store_true", help="only the study's pair")
    p.add_argument("--quick", action="store_true",
                   help="short run: batch 32, 4 steps, 4 rounds, 1 thread unless --threads (rough figures; a "
                   "loaded machine makes them noisy)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; 1 with --quick)")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CPU), as lskd-vision-train --amp")
    p.add_argument("--channels-last", action="store_true", help="channels_last models and batches")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.rounds = 32, 4, 4
        if args.threads is None:
            args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    global PRECISION
    PRECISION = Precision(torch.bfloat16 if args.amp else None, args.channels_last)
    suffix = ("_bf16" if args.amp else "") + ("_cl" if args.channels_last else "")
    amp_args = (["--amp", "--amp-dtype", "bfloat16"] if args.amp else []) + (["--channels-last"] if args.channels_last else [])
    torch.manual_seed(0)
    k, b, n = args.num_classes, args.batch_size, args.batch_size * args.steps
    x = torch.randn(n, 3, args.img_size, args.img_size)
    y = torch.randint(0, k, (n,))
    order = torch.randperm(n)  # the cached student reads rows in a shuffled order, as a real epoch does
    batches = [(x[order[i:i + b]], y[order[i:i + b]], order[i:i + b]) for i in range(0, n, b)]
    plain = [(bx, by) for bx, by, _ in batches]
    print(f"batch {b}, {args.steps} steps per round, {args.rounds} round(s), {args.img_size}x{args.img_size}, "
          f"{k} classes, {torch.get_num_threads()} threads, {PRECISION.describe()}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}", flush=True)
    res = {"batch_size": b, "steps": args.steps, "rounds": args.rounds, "threads": torch.get_num_threads(),
           "quick": args.quick, "precision": PRECISION.describe(), "ratios": {}}

    def rline(name, *rest):
        res["ratios"][name + suffix] = ratio_line(name + suffix, *rest)

    if not args.skip_same_size:
        student, teacher = student_model(args.teacher, k), frozen(args.teacher, k)
        timed(student, plain[:2]), timed(student, plain[:2], teacher, 1.0)  # warm-up, both arms
        arms = {"ce": (None, 0.0), "kd": (teacher, 1.0)}
        wall, cpu = {a: [] for a in arms}, {a: [] for a in arms}
        for r in range(args.rounds):
            for arm in (("ce", "kd") if r % 2 == 0 else ("kd", "ce")):  # the order flips each round
                w, c = timed(student, plain, *arms[arm])
                wall[arm].append(w)
                cpu[arm].append(c)
        time_r = statistics.median(t / c for t, c in zip(wall["kd"], wall["ce"]))
        cpu_r = statistics.median(t / c for t, c in zip(cpu["kd"], cpu["ce"]))
        ce_m, kd_m = n / statistics.median(wall["ce"]), n / statistics.median(wall["kd"])
        print(f"same size ({args.teacher} -> {args.teacher}), {n} images per measurement: CE {ce_m:.1f} images/s, "
              f"online KD {kd_m:.1f} images/s; KD time / CE time {time_r:.3f} (wall), {cpu_r:.3f} (CPU time)")
        print("  per round (CE s, KD s, KD/CE): " + "; ".join(
            f"{c:.2f}, {t:.2f}, {t / c:.2f}" for c, t in zip(wall["ce"], wall["kd"])))
        res["same_size"] = {"ce_images_per_s": ce_m, "kd_images_per_s": kd_m, "wall_s": wall, "cpu_s": cpu}
        rline("vision_same_size_kd_time_over_ce", time_r, "<=", 1.35)
        rline("vision_same_size_kd_cpu_time_over_ce", cpu_r, None, None)

    with tempfile.TemporaryDirectory(prefix="bench_vision_realcache_") as work:
        per_view, total, n_train, n_epochs, n_files, _ = real_cache_bytes(work, k, amp_args)
    teacher, student = frozen(args.teacher, k), student_model(args.student, k)
    with tempfile.TemporaryDirectory(prefix="bench_vision_cache_") as folder:
        _, _, soft = build_cache(folder, teacher, x, y, k, 256)  # also the warm-up of the build
        measure(student, plain[:2], 2 * b)
        measure(student, plain[:2], 2 * b, teacher, 1.0)
        measure(student, batches[:2], 2 * b, None, 1.0, soft)
        ce, online, cached, build = [], [], [], []
        steps = [lambda: ce.append(measure(student, plain, n)),
                 lambda: online.append(measure(student, plain, n, teacher, 1.0)),
                 lambda: cached.append(measure(student, batches, n, None, 1.0, soft)),
                 lambda: build.append(build_cache(folder, teacher, x, y, k, 256)[0])]
        for r in range(args.rounds):
            for step in (steps if r % 2 == 0 else steps[::-1]):  # the order flips each round
                step()
        ce_m, on_m, ca_m, build_s = (statistics.median(v) for v in (ce, online, cached, build))
        on_r = statistics.median(o / c for o, c in zip(online, ce))
        ca_r = statistics.median(a / c for a, c in zip(cached, ce))
        build_r = statistics.median(s * c / n for s, c in zip(build, ce))  # build seconds / CE epoch seconds
        print(f"study pair ({args.teacher} -> {args.student}), {n} images per epoch:")
        print(f"  CE student      {ce_m:8.1f} images/s  (rounds: {', '.join(f'{v:.1f}' for v in ce)})")
        print(f"  online KD       {on_m:8.1f} images/s  = {on_r:.3f}x CE  (rounds: {', '.join(f'{v:.1f}' for v in online)})")
        print(f"  cached KD       {ca_m:8.1f} images/s  = {ca_r:.3f}x CE  (rounds: {', '.join(f'{v:.1f}' for v in cached)}; "
              f"target >= 0.95x)")
        print(f"  cache build     {n / build_s:8.1f} images/s  = {build_s:.2f}s per epoch of {n} images "
              f"= {build_r:.3f}x a CE epoch")
        print(f"  cache storage   {per_view:.2f} bytes per sample-epoch on disk (K = {k}; target <= {2 * k + 16}): "
              f"{total} bytes in {n_files} files of a real lskd-vision-cache folder, {n_train} samples x "
              f"{n_epochs} epochs")
        res["pair"] = {"teacher": args.teacher, "student": args.student, "ce_images_per_s": ce_m,
                       "online_kd_images_per_s": on_m, "cached_kd_images_per_s": ca_m,
                       "cache_build_s_per_epoch": build_s, "images_per_epoch": n,
                       "cache_bytes_per_sample_epoch": per_view}
        for name, value, op, target in [
            ("vision_online_kd_over_ce", on_r, None, None),
            ("vision_cached_kd_over_ce", ca_r, ">=", 0.95),
            ("vision_cache_build_epoch_over_ce_epoch", build_r, None, None),
            ("vision_cache_bytes_per_sample_epoch", per_view, "<=", 2 * k + 16),
        ]:
            rline(name, value, op, target)
        del soft
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
