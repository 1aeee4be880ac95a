"""Images per second of vision KD students against a cross-entropy student, measured in one run.

    python benchmarks/bench_vision_kd.py [--quick] [--batch-size 128] [--steps 10] [--rounds 3]

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

Measurements alternate (CE, KD, ... per round) so that load from other processes
hits all alike; images/s are medians over the rounds, and each ratio is the median of
the per-round ratios (paired within a round, so slow drifts in load cancel). Besides the readable lines,
each figure is printed once as a machine-readable line::

    RATIO name=<name> value=<float> target=<op><float>|none ok=<True|False>

(``target=none``: a figure without a target, ``ok=True``). ``--quick`` is a short
run (small batches, few steps): its figures are rough.
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


def ratio_line(name, value, op=None, target=None):
    ok = True if op is None else (value >= target if op == ">=" else value <= target)
    shown = "none" if op is None else f"{op}{target:g}"
    print(f"RATIO name={name} value={value:.4f} target={shown} ok={ok}", flush=True)
    return {"value": value, "target": shown, "ok": ok}


def measure(model, loader, images, teacher=None, alpha=0.0, soft=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    sched = LRSchedule(0.01, 10**6, kind="constant")
    t = time.perf_counter()
    train_one_epoch(model, loader, opt, sched, 0, teacher=teacher, alpha=alpha, epsilon=0.0, temperature=4.0,
                    soft_labels=soft)
    return images / (time.perf_counter() - t)


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
    args = SimpleNamespace(out=folder, fp16=False)
    seconds = vision_cache._write_epoch(args, 0, loader, dataset, teacher, torch.device("cpu"), spec, None)
    size = sum(os.path.getsize(f) for f in soft_labels.epoch_files(folder, 0, "full"))
    header = {"storage": "full", "k": num_classes, "epochs": 1, "teachers": [],
              "identity": {"num_train": len(y), "options": {"seed": 0}}}
    return seconds, size, soft_labels.SoftLabels(folder, header)


def frozen(arch, num_classes):
    return TeacherEnsemble([build_model(arch, num_classes)], [{}], ["random"])


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
                   help="short run: batch 32, 3 steps, 3 rounds (rough figures; a loaded machine makes them noisy)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.rounds = 32, 3, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    k, b, n = args.num_classes, args.batch_size, args.batch_size * args.steps
    x = torch.randn(n, 3, args.img_size, args.img_size)
    y = torch.randint(0, k, (n,))
    order = torch.randperm(n)  # the cached student reads rows in a shuffled order, as a real epoch does
    batches = [(x[order[i:i + b]], y[order[i:i + b]], order[i:i + b]) for i in range(0, n, b)]
    plain = [(bx, by) for bx, by, _ in batches]
    print(f"batch {b}, {args.steps} steps per round, {args.rounds} round(s), {args.img_size}x{args.img_size}, "
          f"{k} classes, {torch.get_num_threads()} threads")
    res = {"batch_size": b, "steps": args.steps, "rounds": args.rounds, "threads": torch.get_num_threads(),
           "quick": args.quick, "ratios": {}}

    if not args.skip_same_size:
        student, teacher = build_model(args.teacher, k), frozen(args.teacher, k)
        measure(student, plain[:2], 2 * b), measure(student, plain[:2], 2 * b, teacher, 1.0)  # warm-up
        ce, kd = [], []
        for _ in range(args.rounds):
            ce.append(measure(student, plain, n))
            kd.append(measure(student, plain, n, teacher, 1.0))
        ce_m, kd_m = statistics.median(ce), statistics.median(kd)
        time_r = statistics.median(c / k_ for c, k_ in zip(ce, kd))
        print(f"same size ({args.teacher} -> {args.teacher}): CE {ce_m:.1f} images/s, online KD {kd_m:.1f} images/s")
        res["same_size"] = {"ce_images_per_s": ce_m, "kd_images_per_s": kd_m}
        res["ratios"]["vision_same_size_kd_time_over_ce"] = ratio_line(
            "vision_same_size_kd_time_over_ce", time_r, "<=", 1.35)

    teacher, student = frozen(args.teacher, k), build_model(args.student, k)
    with tempfile.TemporaryDirectory(prefix="bench_vision_cache_") as folder:
        _, size, soft = build_cache(folder, teacher, x, y, k, 256)  # also the warm-up of the build
        measure(student, plain[:2], 2 * b)
        measure(student, plain[:2], 2 * b, teacher, 1.0)
        measure(student, batches[:2], 2 * b, None, 1.0, soft)
        ce, online, cached, build = [], [], [], []
        for _ in range(args.rounds):
            ce.append(measure(student, plain, n))
            online.append(measure(student, plain, n, teacher, 1.0))
            cached.append(measure(student, batches, n, None, 1.0, soft))
            build.append(build_cache(folder, teacher, x, y, k, 256)[0])
        ce_m, on_m, ca_m, build_s = (statistics.median(v) for v in (ce, online, cached, build))
        per_view = size / n
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
        print(f"  cache storage   {per_view:.2f} bytes per sample-epoch on disk (K = {k}; target <= {2 * k + 16})")
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
            res["ratios"][name] = ratio_line(name, value, op, target)
        del soft
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
