"""Benchmarks for word-level KD (label_smoothed_kd) against fairseq's
label_smoothed_cross_entropy. Prints what it measured; asserts nothing.

  (a) time per training step with a same-size online teacher vs. the LS criterion,
      same batches, one process, the criteria taking turns step by step (median);
  (b) peak memory of the criterion's loss computation (forward + backward) at a
      32k vocabulary and 8k target tokens, vs. the LS criterion; each variant runs
      in a fresh process and its peak resident memory above the inputs is read
      from the kernel (ru_maxrss).

Usage:
  python benchmarks/bench_kd_criterion.py            # both
  python benchmarks/bench_kd_criterion.py --only memory
  python benchmarks/bench_kd_criterion.py --only speed --updates 30
  python benchmarks/bench_kd_criterion.py --quick    # smaller (8k vocab, 4k tokens, 6 steps): minutes
  python benchmarks/bench_kd_criterion.py --quick --bf16   # the same in bfloat16

--bf16: (a) the models, criteria and batches in bfloat16 with fairseq's FP16Optimizer (float32
master weights), as ``fairseq-train --bf16`` trains (see nmt_precision.py); (b) bfloat16 logits
(and teacher outputs), the LS criterion's log-softmax upcast to float32 as fairseq's
``get_normalized_probs`` does. The ratio names end in ``_bf16``; the targets are the same.

Each ratio is also printed as a ``RATIO name=... value=... target=... ok=...`` line
(read by benchmarks/run_all.py).
"""

import argparse
import gzip
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run_all import format_ratio

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARED = REPO.parent / "shared" / "data" / "multi30k"

# ----------------------------------------------------------------------------- memory


def _memory_child(variant: str, vocab: int, tokens: int, topk: int, bf16: bool = False) -> None:
    """Runs in a fresh process: print the peak RSS growth of one loss computation."""
    import torch

    sys.path.insert(0, str(REPO))
    from lskd_fairseq.losses import label_smoothed_nll_loss, ls_kd_loss

    torch.manual_seed(0)
    torch.set_num_threads(1)
    dtype = torch.bfloat16 if bf16 else torch.float32
    logits = torch.randn(tokens, vocab, dtype=dtype).requires_grad_()
    target = torch.randint(4, vocab, (tokens,))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB: the student's logits and targets
    # the teacher's output counts towards the criterion: in the online setting it is made here
    if variant == "kd_full":
        teacher = torch.randn(tokens, vocab, dtype=dtype)
    elif variant == "kd_topk":
        # the online teacher yields its top-k chunk by chunk (Teacher.score); only (N, k) exists
        vals, _ = torch.randn(tokens, topk, dtype=dtype).sort(dim=-1, descending=True)
        teacher = (torch.randint(0, vocab, (tokens, topk)), vals)
    if variant == "ls":  # fairseq's criterion: model.get_normalized_probs, then the LS loss
        lprobs = torch.log_softmax(logits.float(), dim=-1)
        loss, _ = label_smoothed_nll_loss(lprobs, target, 0.1, ignore_index=1)
    else:  # label_smoothed_kd with kd_alpha > 0: one fused pass over the logits
        loss, _ = ls_kd_loss(None, target, 0.1, logits, teacher, alpha=0.5, temperature=1.0,
                             topk=topk if variant == "kd_topk" else 0, ignore_index=1)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"variant": variant, "peak_mib": (peak - base) / 1024}))


def bench_memory(vocab: int, tokens: int, topk: int, bf16: bool = False) -> dict:
    results = {}
    sfx = "_bf16" if bf16 else ""
    for variant in ("ls", "kd_full", "kd_topk"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", variant, "--vocab", str(vocab), "--tokens", str(tokens),
             "--topk", str(topk), *(["--bf16"] if bf16 else [])],
            capture_output=True, text=True, check=True,
        ).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
    ls = results["ls"]["peak_mib"]
    print(f"\n(b) criterion peak memory, vocab {vocab}, {tokens} target tokens, forward + backward "
          f"(MiB above the student's logits; the teacher's output is counted){', bfloat16 logits' if bf16 else ''}")
    print(f"  label_smoothed_cross_entropy      {ls:8.0f} MiB")
    print(f"  label_smoothed_kd, full vocab     {results['kd_full']['peak_mib']:8.0f} MiB  "
          f"ratio {results['kd_full']['peak_mib'] / ls:.2f}x  (target <= 1.5x)")
    print(f"  label_smoothed_kd, kd_topk {topk:<5d}  {results['kd_topk']['peak_mib']:8.0f} MiB  "
          f"ratio {results['kd_topk']['peak_mib'] / ls:.2f}x  (target <= 1.1x)")
    print(format_ratio(f"memory_kd_full_vocab/ls{sfx}", results["kd_full"]["peak_mib"] / ls, "<=", 1.5))
    print(format_ratio(f"memory_kd_top{topk}/ls{sfx}", results["kd_topk"]["peak_mib"] / ls, "<=", 1.1))
    return results


# ----------------------------------------------------------------------------- speed

ARCH = (
    "--arch transformer --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 "
    "--encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4 "
    "--share-decoder-input-output-embed --dropout 0.1"
).split()


def _run(cmd, **kw):
    from lskd_fairseq.warning_filters import subprocess_env

    env = subprocess_env()  # library notices silenced by name
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=True, env=env, **kw)


def _prepare(work: Path, n_train: int) -> Path:
    text = work / "text"
    text.mkdir(parents=True)
    for split, name, n in (("train", "train", n_train), ("valid", "val", 200)):
        for lang in ("en", "de"):
            with gzip.open(SHARED / f"{name}.{lang}.gz", "rt", encoding="utf-8") as f:
                lines = [" ".join(re.sub(r"([.,!?])", r" \1", next(f).lower()).split()) for _ in range(n)]
            (text / f"{split}.{lang}").write_text("\n".join(lines) + "\n")
    _run([BIN / "fairseq-preprocess", "--source-lang", "en", "--target-lang", "de", "--trainpref", text / "train",
          "--validpref", text / "valid", "--destdir", work / "bin", "--joined-dictionary", "--workers", "1"])
    return work / "bin"


def _interleaved_step_times(data: Path, teacher: Path, steps: int, topk: int, bf16: bool = False) -> dict:
    """Seconds per training step (forward, backward, Adam) of each criterion, measured in
    one process on the same batches, the criteria taking turns step by step so that
    changes in machine load hit all of them alike. Median over ``steps`` each."""
    import statistics

    import torch

    sys.path.insert(0, str(REPO))
    import lskd_fairseq.tasks  # noqa: F401  (registers the plugin)
    from nmt_precision import backward, bf16_parts, bf16_sample
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    def build(extra):
        # the baseline runs without a teacher (translation_kd refuses a teacher it cannot use)
        teacher_args = [] if "label_smoothed_cross_entropy" in extra else ["--teacher-path", str(teacher)]
        parser = options.get_training_parser()
        args = options.parse_args_and_arch(
            parser, [str(data), "--cpu", *ARCH, "--task", "translation_kd", *teacher_args,
                     "--optimizer", "adam", "--lr", "5e-4", "--max-tokens", "2048", *extra,
                     *(["--bf16"] if bf16 else [])])
        cfg = convert_namespace_to_omegaconf(args)
        task = tasks.setup_task(cfg.task)
        return cfg, task, task.build_model(cfg.model), task.build_criterion(cfg.criterion)

    variants = {
        "label_smoothed_cross_entropy": ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"],
        "label_smoothed_kd (full vocab)": ["--criterion", "label_smoothed_kd", "--label-smoothing", "0.1", "--kd-alpha", "0.5"],
        f"label_smoothed_kd (kd_topk {topk})": ["--criterion", "label_smoothed_kd", "--label-smoothing", "0.1",
                                                 "--kd-alpha", "0.5", "--kd-topk", str(topk)],
    }
    runs = {}
    for name, extra in variants.items():
        torch.manual_seed(1)
        cfg, task, model, crit = build(extra)
        if bf16:
            model, crit, opt = bf16_parts(cfg, model, crit)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=5e-4)
        model.train()
        runs[name] = (model, crit, opt)
    task.load_dataset("train")
    itr = task.get_batch_iterator(task.dataset("train"), max_tokens=2048, seed=1).next_epoch_itr(shuffle=True)
    batches = [bf16_sample(b) if bf16 else b for _, b in zip(range(steps + 3), itr)]
    times = {name: [] for name in runs}
    for i, sample in enumerate(batches):
        for name, (model, crit, opt) in runs.items():
            t0 = time.perf_counter()
            loss, _, _ = crit(model, sample)
            backward(opt, loss)
            opt.step()
            opt.zero_grad()
            if i >= 3:  # warm-up
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_speed(steps: int, topk: int, n_train: int = 3000, bf16: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = _prepare(work, n_train=n_train)
        # a same-size teacher: this architecture after a few LS updates (its quality does not matter for timing)
        _run([BIN / "fairseq-train", data, "--cpu", *ARCH, "--optimizer", "adam", "--lr", "5e-4", "--max-tokens", "2048",
              "--max-update", "2", "--save-dir", work / "teacher", "--no-epoch-checkpoints", "--disable-validation",
              "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"])
        best = _interleaved_step_times(data, work / "teacher" / "checkpoint_last.pt", steps, topk, bf16)
    base = best["label_smoothed_cross_entropy"]
    print(f"\n(a) seconds per training step (forward, backward, Adam), transformer 3+3 layers d=256 with a "
          f"same-size online teacher, Multi30k, max-tokens 2048; median of {steps} steps, the criteria "
          f"taking turns step by step in one process{'; bfloat16 (fairseq --bf16 setup)' if bf16 else ''}")
    for name, t in best.items():
        ratio = "" if name == "label_smoothed_cross_entropy" else f"  ratio {t / base:.2f}x (target <= 1.35x)"
        print(f"  {name:34s} {t * 1000:8.1f} ms{ratio}")
    for name, t in best.items():
        if name != "label_smoothed_cross_entropy":
            tag = "full_vocab" if "full vocab" in name else f"top{topk}"
            print(format_ratio(f"step_time_kd_{tag}/ls{'_bf16' if bf16 else ''}", t / base, "<=", 1.35))
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["speed", "memory"])
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--updates", type=int, default=20, help="timed steps per criterion")
    p.add_argument("--quick", action="store_true",
                   help="a smaller problem: vocab 8192, 4096 tokens, 6 timed steps, 1000 training lines")
    p.add_argument("--bf16", action="store_true", help="bfloat16, as fairseq-train --bf16 (see above)")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    a = p.parse_args()
    n_train = 3000
    if a.quick:
        a.vocab, a.tokens, a.updates, n_train = 8192, 4096, 6, 1000
    if a.memory_child:
        return _memory_child(a.memory_child, a.vocab, a.tokens, a.topk, a.bf16)
    if a.only in (None, "memory"):
        bench_memory(a.vocab, a.tokens, a.topk, a.bf16)
    if a.only in (None, "speed"):
        bench_speed(a.updates, a.topk, n_train, a.bf16)


if __name__ == "__main__":
    main()
