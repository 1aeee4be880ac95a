"""Images per second of KD student training (same-size frozen teacher) vs plain cross-entropy.

    python benchmarks/bench_vision_kd.py [--model resnet20] [--batch-size 128] [--steps 20]

Both runs go through ``lskd_vision.engine.train_one_epoch`` (the CLI's loop) on
in-memory random 32x32 images, so data loading is left out. CE and KD
measurements alternate (CE, KD, CE, KD, ...) so that load from other processes
hits both alike; the reported figures are medians over the rounds. The ratio is
CE images/s divided by KD images/s (target: <= 1.35).
"""

import argparse
import json
import statistics
import time

import torch

from lskd_vision.engine import LRSchedule, TeacherEnsemble, train_one_epoch
from lskd_vision.models import build_model


def measure(model, loader, teacher, alpha, steps_per_round):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    sched = LRSchedule(0.01, 10**6, kind="constant")
    t = time.perf_counter()
    train_one_epoch(model, loader, opt, sched, 0, teacher=teacher, alpha=alpha, epsilon=0.0, temperature=1.0)
    return steps_per_round * loader[0][0].size(0) / (time.perf_counter() - t)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=10, help="training steps per round")
    p.add_argument("--rounds", type=int, default=3, help="CE/KD measurement pairs")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    y = torch.randint(0, args.num_classes, (args.batch_size,))
    loader = [(x, y)] * args.steps
    student = build_model(args.model, args.num_classes)
    teacher = TeacherEnsemble([build_model(args.model, args.num_classes)], [{}], ["random"])
    # warm-up (allocator, first-call overheads)
    measure(student, loader[:2], None, 0.0, 2)
    measure(student, loader[:2], teacher, 1.0, 2)
    ce, kd = [], []
    for _ in range(args.rounds):
        ce.append(measure(student, loader, None, 0.0, args.steps))
        kd.append(measure(student, loader, teacher, 1.0, args.steps))
    ce_m, kd_m = statistics.median(ce), statistics.median(kd)
    ratios = [c / k for c, k in zip(ce, kd)]
    res = {
        "model": args.model, "batch_size": args.batch_size, "img_size": args.img_size,
        "threads": torch.get_num_threads(), "steps_per_round": args.steps, "rounds": args.rounds,
        "ce_images_per_s": ce_m, "kd_images_per_s": kd_m, "ratio_ce_over_kd": ce_m / kd_m,
        "per_round_ratio": ratios, "target": 1.35,
    }
    print(f"{args.model}, batch {args.batch_size}, {args.img_size}x{args.img_size}, {torch.get_num_threads()} threads")
    print(f"CE training: {ce_m:8.1f} images/s  (rounds: {', '.join(f'{v:.1f}' for v in ce)})")
    print(f"KD training: {kd_m:8.1f} images/s  (rounds: {', '.join(f'{v:.1f}' for v in kd)})")
    print(f"ratio CE/KD: {ce_m / kd_m:.3f}x (per round: {', '.join(f'{r:.3f}' for r in ratios)}; target <= 1.35)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
