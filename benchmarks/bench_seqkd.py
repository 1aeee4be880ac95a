"""Benchmarks of the offline teacher artifacts (top-k cache, distilled corpus). Prints measured figures; not a test.

1. Update time of ``label_smoothed_kd --teacher-cache`` against fairseq's
   ``label_smoothed_cross_entropy`` (target <= 1.05x), measured in one process on
   the same batches, alternating the two (ABBA) so that load from other processes
   hits both alike. One update = collate (incl. the cache lookup) + forward +
   backward + Adam step. The online teacher (``--teacher-path``) is timed too, for
   reference. The figure without collation is printed as well: fairseq-train
   collates in a data-loader worker, off the training loop.
2. ``lskd-distill-data`` against ``fairseq-generate`` on the same data-bin, split,
   teacher, beam and --max-tokens (target >= 0.9x sentences per second): wall
   time of each command, and each tool's own generation-only throughput.

Usage::

    python benchmarks/bench_seqkd.py [--work /tmp/lskd-bench-seqkd] [--train-lines 2000]
        [--gen-lines 200] [--steps 30] [--beam 5]
    python benchmarks/bench_seqkd.py --quick     # 500 training lines, 50 to translate, 8 steps
    python benchmarks/bench_seqkd.py --quick --bf16

``--bf16``: 1. the three students (and so the online teacher, which follows the student's
dtype) train in bfloat16 as ``fairseq-train --bf16`` does (nmt_precision.py: model, criterion
and float batches in bfloat16, fairseq's FP16Optimizer with float32 master weights);
2. ``lskd-distill-data --bf16`` (a bfloat16 teacher) against ``fairseq-generate``, which has
no bfloat16 mode (fairseq 0.12's generate.py casts only for --fp16) and so runs in float32.
Ratio names end in ``_bf16``; the targets are the same. The work folder (data-bin, teacher,
top-k cache) is shared with the float32 runs.

Each ratio is also printed as a ``RATIO name=... value=... target=... ok=...`` line
(read by benchmarks/run_all.py).

Everything is built under --work on the first run (Multi30k subset from
../shared/data, a data-bin, a small teacher trained for --teacher-updates, a
top-k cache) and reused afterwards.
"""

import argparse
import copy
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from run_all import format_ratio

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "lskd_fairseq"
SHARED = REPO.parent / "shared" / "data" / "multi30k"
BIN = Path(sys.executable).parent
# small enough for a shared 2-core machine; pass --arch-dim 256 etc. on a real one
def arch(dim, layers):
    return (f"--arch transformer --encoder-layers {layers} --decoder-layers {layers} --encoder-embed-dim {dim} "
            f"--decoder-embed-dim {dim} --encoder-ffn-embed-dim {2 * dim} --decoder-ffn-embed-dim {2 * dim} "
            f"--encoder-attention-heads 2 --decoder-attention-heads 2").split()


ARCH = arch(64, 1)


def env():
    from lskd_fairseq.warning_filters import subprocess_env

    return subprocess_env()  # library notices silenced by name


def sh(args, **kw):
    args = [str(a) for a in args]
    exe = BIN / args[0]
    if exe.exists():
        args[0] = str(exe)
    t = time.time()
    p = subprocess.run(args, env=env(), capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{p.stderr[-3000:]}")
    return p, time.time() - t


def tok(line):
    return " ".join(re.sub(r"([.,!?;:\"()])", r" \1 ", line.strip().lower()).split())


def prepare(a):
    work = Path(a.work)
    text, data = work / "text", work / "bin"
    teacher = work / "teacher" / "checkpoint_last.pt"
    cache = work / "cache"
    if not (data / "dict.en.txt").exists():
        text.mkdir(parents=True, exist_ok=True)
        for split, name, n in (("train", "train", a.train_lines), ("valid", "val", 200),
                               ("test", "test_2016_flickr", a.gen_lines)):
            for lang in ("en", "de"):
                with gzip.open(SHARED / f"{name}.{lang}.gz", "rt", encoding="utf-8") as f:
                    lines = [tok(next(f)) for _ in range(n)]
                (text / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
        sh(["fairseq-preprocess", "-s", "en", "-t", "de", "--trainpref", text / "train", "--validpref",
            text / "valid", "--testpref", text / "test", "--destdir", data, "--thresholdsrc", "2",
            "--thresholdtgt", "2", "--workers", "1"])
    if not teacher.exists():
        print(f"training the benchmark teacher ({a.teacher_updates} updates) ...", flush=True)
        sh(["fairseq-train", data, "--cpu", *ARCH, "--optimizer", "adam", "--lr", "0.003", "--max-tokens", "2048",
            "--max-update", a.teacher_updates, "--save-dir", teacher.parent, "--no-epoch-checkpoints",
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--disable-validation",
            "--save-interval", "1000", "--dropout", "0.1"])
    if not (cache / "train.topk.json").exists():
        p, _ = sh(["lskd-teacher-cache", data, "--split", "train", "--out", cache, "--teacher-path", teacher,
                   "--k", a.k, "--cpu", "--no-progress-bar"])
        print(p.stdout.strip())
    return text, data, teacher, cache


def bench_updates(a, data, teacher, cache):
    import torch
    from fairseq import options, tasks
    from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import lskd_fairseq.tasks  # noqa: F401
    from lskd_fairseq.criterions.label_smoothed_kd import LabelSmoothedKDCriterion
    from nmt_precision import backward, bf16_parts, bf16_sample

    torch.set_num_threads(a.threads)
    parser = options.get_training_parser()
    argv = [str(data), "--user-dir", str(PLUGIN), "--task", "translation_kd", "--teacher-cache", str(cache),
            "--teacher-path", str(teacher), *arch(a.student_dim or a.arch_dim, a.student_layers or a.arch_layers),
            "--criterion", "label_smoothed_kd", "--kd-alpha", "0.5",
            "--kd-topk", str(a.k), "--label-smoothing", "0.1", "--optimizer", "adam", "--lr", "1e-3",
            "--max-tokens", str(a.max_tokens), "--cpu", "--dropout", "0.1", *(["--bf16"] if a.bf16 else [])]
    args = options.parse_args_and_arch(parser, argv)
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    torch.manual_seed(1)
    model = task.build_model(cfg.model)  # also loads the online teacher
    kd_cache = LabelSmoothedKDCriterion(task, False, 0.1, kd_alpha=0.5, kd_topk=a.k)
    ce = LabelSmoothedCrossEntropyCriterion(task, False, 0.1)
    ds = task.dataset("train")
    plain_collate = ds.collater.inner
    models = {n: copy.deepcopy(model) for n in ("ce", "cache", "online")}
    crits = {"ce": ce, "cache": kd_cache, "online": kd_cache}
    if a.bf16:  # each student cast, with its own fairseq FP16Optimizer (the criteria hold no weights)
        opts = {}
        for n in models:
            models[n], crits[n], opts[n] = bf16_parts(cfg, models[n], crits[n])
    else:
        opts = {n: torch.optim.Adam(m.parameters(), lr=1e-3) for n, m in models.items()}
    for m in models.values():
        m.train()

    def collate(name, batch):
        items = [ds[int(i)] for i in batch]
        if name == "ce":
            s = plain_collate(items)
        else:
            s = ds.collater(items)
            if name == "online":
                s.pop("teacher_topk")
        return bf16_sample(s) if a.bf16 else s

    def step(name, batch):
        t0 = time.perf_counter()
        sample = collate(name, batch)
        t1 = time.perf_counter()
        loss, _, _ = crits[name](models[name], sample)
        opts[name].zero_grad()
        backward(opts[name], loss)
        opts[name].step()
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1

    import numpy as np

    rng = np.random.RandomState(0)
    batches = ds.batch_by_size(rng.permutation(len(ds)).astype(np.int64), max_tokens=a.max_tokens,
                               required_batch_size_multiple=8)
    batches = [batches[i % len(batches)] for i in range(a.steps + 3)]
    times = {n: ([], []) for n in ("ce", "cache", "online")}
    order = ["ce", "cache", "cache", "ce"]
    for j, batch in enumerate(batches):
        names = order if j % 2 == 0 else order[::-1]
        seen = set()
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            full, comp = step(name, batch)
            if j >= 3:  # warm-up
                times[name][0].append(full)
                times[name][1].append(comp)
        if j % 4 == 0 and j >= 3:  # the online teacher, every 4th batch (it is slow)
            full, comp = step("online", batch)
            times["online"][0].append(full)
            times["online"][1].append(comp)
    ntok = statistics.mean(sum(ds.tgt_sizes[int(i)] for i in b) for b in batches)
    nparam = sum(p.numel() for p in model.parameters())
    print(f"\n== update time, student {nparam / 1e6:.2f}M parameters, {len(times['ce'][0])} updates each, "
          f"~{ntok:.0f} target tokens/update, "
          f"vocab {len(task.tgt_dict)}, k={a.k}, {a.threads} thread(s), {'bfloat16' if a.bf16 else 'float32'}")
    med = {n: (statistics.median(v[0]), statistics.median(v[1])) for n, v in times.items()}
    for n, label in (("ce", "label_smoothed_cross_entropy"), ("cache", "label_smoothed_kd --teacher-cache"),
                     ("online", "label_smoothed_kd --teacher-path (online)")):
        print(f"{label:44s} median {1000 * med[n][0]:8.1f} ms/update (with collate), "
              f"{1000 * med[n][1]:8.1f} ms (step only)")
    r_full = med["cache"][0] / med["ce"][0]
    r_step = med["cache"][1] / med["ce"][1]
    print(f"ratio teacher-cache / LS-CE: {r_full:.3f}x with collate, {r_step:.3f}x step only "
          f"(target <= 1.05x); online teacher / LS-CE: {med['online'][0] / med['ce'][0]:.3f}x")
    sfx = "_bf16" if a.bf16 else ""
    print(format_ratio(f"update_time_cache/ls_with_collate{sfx}", r_full, "<=", 1.05))
    print(format_ratio(f"update_time_cache/ls_step_only{sfx}", r_step, "<=", 1.05))
    return {"ratio_with_collate": r_full, "ratio_step_only": r_step, "median_ms": med}


def bench_distill(a, text, data, teacher):
    work = Path(a.work)
    common = ["--beam", a.beam, "--max-tokens", a.max_tokens_gen, "--cpu"]
    p_gen, wall_gen = sh(["fairseq-generate", data, "--user-dir", PLUGIN, "--gen-subset", "test",
                          "--path", teacher, *common])
    m = re.search(r"Translated ([\d,]+) sentences .* in ([\d.]+)s \(([\d.]+) sentences/s", p_gen.stdout + p_gen.stderr)
    n_gen = int(m.group(1).replace(",", "")) if m else None
    gen_self = float(m.group(3)) if m else float("nan")
    out = work / "distilled"
    p_dis, wall_dis = sh(["lskd-distill-data", data, "--split", "test", "--out", out, "--teacher-path", teacher,
                          "--source-text", text / "test.en", "--force", "--restart", "--no-progress-bar", *common,
                          *(["--bf16"] if a.bf16 else [])])
    man = json.loads((out / "test.distill.json").read_text())
    n = man["n_samples"]
    print(f"\n== distillation throughput, split test ({n} sentences), beam {a.beam}, max-tokens {a.max_tokens_gen}"
          + (", lskd-distill-data --bf16 against fairseq-generate in float32 (it has no bf16)" if a.bf16 else ""))
    print(f"fairseq-generate : wall {wall_gen:7.1f}s -> {n / wall_gen:6.2f} sentences/s end to end; "
          f"own generation-only figure {gen_self:.2f} sentences/s ({n_gen} sentences)")
    print(f"lskd-distill-data: wall {wall_dis:7.1f}s -> {n / wall_dis:6.2f} sentences/s end to end; "
          f"own generation figure {man['sentences_per_second']:.2f} sentences/s "
          f"(includes collation and writing the partial file)")
    print(f"ratio lskd-distill-data / fairseq-generate: {wall_gen / wall_dis:.3f}x end to end, "
          f"{man['sentences_per_second'] / gen_self:.3f}x generation only (target >= 0.9x)")
    sfx = "_bf16" if a.bf16 else ""
    print(format_ratio(f"distill_speed{sfx}/generate_end_to_end", wall_gen / wall_dis, ">=", 0.9))
    print(format_ratio(f"distill_speed{sfx}/generate_generation_only", man["sentences_per_second"] / gen_self,
                       ">=", 0.9))
    return {"ratio_end_to_end": wall_gen / wall_dis, "ratio_generation": man["sentences_per_second"] / gen_self}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=None, help="default /tmp/lskd-bench-seqkd (-quick with --quick)")
    p.add_argument("--train-lines", type=int, default=2000)
    p.add_argument("--gen-lines", type=int, default=200)
    p.add_argument("--teacher-updates", type=int, default=60)
    p.add_argument("--arch-dim", type=int, default=64)
    p.add_argument("--arch-layers", type=int, default=1)
    p.add_argument("--student-dim", type=int, default=0, help="student width for the update-time figure "
                   "(default: the teacher's); the teacher and its cache are reused")
    p.add_argument("--student-layers", type=int, default=0)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--max-tokens-gen", type=int, default=4096)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="bfloat16 students and distillation teacher (see above)")
    p.add_argument("--skip", choices=("updates", "distill"), action="append", default=[])
    p.add_argument("--quick", action="store_true", help="500 training lines, 50 to translate, 20 teacher "
                   "updates, 8 timed steps (its own --work folder)")
    a = p.parse_args()
    if a.quick:
        a.train_lines, a.gen_lines, a.teacher_updates, a.steps = 500, 50, 20, 8
    if a.work is None:
        a.work = "/tmp/lskd-bench-seqkd-quick" if a.quick else "/tmp/lskd-bench-seqkd"
    global ARCH
    ARCH = arch(a.arch_dim, a.arch_layers)
    t0 = time.time()
    text, data, teacher, cache = prepare(a)
    if "updates" not in a.skip:
        bench_updates(a, data, teacher, cache)
    if "distill" not in a.skip:
        bench_distill(a, text, data, teacher)
    print(f"\n(total {time.time() - t0:.0f}s; machine load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
