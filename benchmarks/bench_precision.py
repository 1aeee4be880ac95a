"""bfloat16 against float32, end to end through the project's own CLIs, one thread (issue 18 §4).

    python benchmarks/bench_precision.py [--quick] [--rounds 2] [--only vision|nmt]

1. ``lskd-vision-train`` on the CIFAR-10 JPEGs (``../shared/data/cifar10/cifar10_jpg.tar.gz``;
   ``--train-per-class`` images per class, no validation or test split, 2 epochs, batch 128,
   ``--threads 1 --workers 0``): the second epoch's ``epoch_time_s`` (``metrics.csv``) in
   float32 against ``--amp --amp-dtype bfloat16 --channels-last``, for ResNet-20 (target:
   bf16 >= 2.5x as fast) and ResNet-8 (>= 2.0x).
2. ``fairseq-train --user-dir lskd_fairseq`` of the study's NMT teacher (the Multi30k ``cpu``
   recipe's: transformer 3+3 layers, d=128, ffn 512, 4 heads, ``--share-all-embeddings``,
   label-smoothed CE 0.1, Adam (0.9, 0.98), inverse-sqrt, dropout 0.2, max-tokens 2048):
   updates/s with ``--bf16`` against float32 (target >= 1.6x). Updates/s is fairseq's own
   ``ups`` of the ``train_inner`` records after update 20 (``--log-interval 10``), combined as
   updates / seconds. Data: the recipe's binarized Multi30k en-de from ``--m30k``
   (default /tmp/m30k/en-de/bin, copied first) or, when that is absent, built into the work
   folder with ``SCALE=cpu bash recipes/multi30k/run.sh --stop-stage binarize``.

Every run is its own process with OMP_NUM_THREADS=MKL_NUM_THREADS=1; the two precisions
alternate (fp32, bf16, fp32, bf16, ...) so that load from other processes hits both, and each
ratio is the median of the per-round ratios (float32 time / bf16 time). The CPU it ran on is
printed first (torch's CPU capability, AMX tiles, the avx512_bf16 flag; also as target-less
RATIO lines ``cpu_amx_tiles`` / ``cpu_avx512_bf16`` = 1 or 0): without AMX, bf16 matmuls and
convolutions run on AVX512-BF16 at best, and the targets (set for AMX CPUs) are not expected
to be met.
"""

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run_all import format_ratio

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PLUGIN = REPO / "lskd_fairseq"
CIFAR = REPO.parent / "shared" / "data" / "cifar10" / "cifar10_jpg.tar.gz"
M30K = "/tmp/m30k/en-de/bin"

VISION_TARGETS = {"resnet20": 2.5, "resnet8": 2.0}
NMT_TARGET = 1.6
BF16_VISION = ["--amp", "--amp-dtype", "bfloat16", "--channels-last"]
TEACHER = ("--arch transformer --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 128 --decoder-embed-dim 128 "
           "--encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 "
           "--decoder-attention-heads 4 --share-all-embeddings --criterion label_smoothed_cross_entropy "
           "--label-smoothing 0.1 --optimizer adam --adam-betas (0.9,0.98) --lr 1.5e-3 --lr-scheduler inverse_sqrt "
           "--warmup-updates 800 --warmup-init-lr 1e-07 --dropout 0.2 --weight-decay 0.0001 --max-tokens 2048").split()


def env():
    from lskd_fairseq.warning_filters import subprocess_env

    return dict(subprocess_env(), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # library notices by name


def run(cmd, **kw):
    cmd = [str(c) for c in cmd]
    p = subprocess.run(cmd, env=env(), capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{(p.stdout + p.stderr)[-3000:]}")
    return p


def cpu_info():
    import torch

    from lskd_vision.precision import cpu_amx_tiles, cpu_flags

    cap = torch.backends.cpu.get_cpu_capability()
    amx, flags = cpu_amx_tiles(), cpu_flags()
    bf16 = "avx512_bf16" in flags
    print(f"INFO cpu: torch capability {cap}, AMX tiles {'yes' if amx else 'no'}, "
          f"avx512_bf16 {'yes' if bf16 else 'no'}, amx_bf16 flag {'yes' if 'amx_bf16' in flags else 'no'}; "
          f"torch {torch.__version__}, {os.cpu_count()} cores", flush=True)
    print(f"RATIO name=cpu_amx_tiles value={float(amx):.4f} target=none ok=True")
    print(f"RATIO name=cpu_avx512_bf16 value={float(bf16):.4f} target=none ok=True", flush=True)
    return {"capability": cap, "amx": amx, "avx512_bf16": bf16}


def paired(fp32, bf16):
    """Median of the per-round ratios float32 time / bf16 time (= bf16 speed-up)."""
    return statistics.median(a / b for a, b in zip(fp32, bf16))


# ----------------------------------------------------------------------------- vision
def vision_epoch_time(work, arch, bf16, r, a):
    out = Path(work) / f"vision_{arch}_{'bf16' if bf16 else 'fp32'}_{r}"
    cmd = [BIN / "lskd-vision-train", a.cifar, "--output", out, "--model", arch, "--train-per-class",
           a.train_per_class, "--val-fraction", "0", "--test-split", "none", "--epochs", "2", "--batch-size", "128",
           "--threads", "1", "--workers", "0", "--no-progress", "--seed", "1", *(BF16_VISION if bf16 else [])]
    run(cmd)
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cfg = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
    seconds = float(rows[-1]["epoch_time_s"])  # the 2nd epoch: the first pays for warm-up
    shutil.rmtree(out, ignore_errors=True)
    return seconds, cfg.get("precision"), cfg.get("memory_format")


def bench_vision(work, a):
    res = {}
    for arch in a.vision_archs:
        times = {False: [], True: []}
        for r in range(a.rounds):
            for bf16 in (False, True) if r % 2 == 0 else (True, False):
                s, prec, fmt = vision_epoch_time(work, arch, bf16, r, a)
                times[bf16].append(s)
                print(f"  {arch} round {r + 1}: {prec or ('bf16' if bf16 else 'fp32')}, {fmt}: 2nd epoch "
                      f"{s:.2f}s ({10 * a.train_per_class / s:.0f} images/s)", flush=True)
        ratio = paired(times[False], times[True])
        print(f"lskd-vision-train {arch}, {10 * a.train_per_class} images/epoch, 1 thread: float32 "
              f"{statistics.median(times[False]):.2f}s, bf16+channels_last {statistics.median(times[True]):.2f}s "
              f"per epoch -> bf16 {ratio:.3f}x as fast (target >= {VISION_TARGETS.get(arch, 2.0)}x)", flush=True)
        res[arch] = ratio
    return res


# ----------------------------------------------------------------------------- nmt
def nmt_data(work, a):
    src = Path(a.m30k)
    dst = Path(work) / "m30k_bin"
    if (src / "dict.en.txt").exists() and (src / "train.en-de.en.bin").exists():
        shutil.copytree(src, dst)  # another process may rebuild its folder meanwhile
        print(f"NMT data: the binarized Multi30k en-de from {src}", flush=True)
        return dst
    print(f"NMT data: {src} absent; binarizing Multi30k en-de with the cpu recipe (a minute or two) ...", flush=True)
    w = Path(work) / "m30k"
    e = dict(env(), SCALE="cpu", WORK=str(w), PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    p = subprocess.run(["bash", str(REPO / "recipes" / "multi30k" / "run.sh"), "--stop-stage", "binarize"],
                       env=e, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"building the Multi30k data-bin failed:\n{(p.stdout + p.stderr)[-3000:]}")
    return w / "en-de" / "bin"


_INNER = re.compile(r"\|\s*train_inner\s*\|\s*(\{.*\})\s*$")


def nmt_updates_per_s(data, bf16, a):
    cmd = [BIN / "fairseq-train", data, "--user-dir", PLUGIN, "--cpu", *(["--bf16"] if bf16 else []), *TEACHER,
           "--max-update", a.max_update, "--log-format", "json", "--log-interval", "10", "--disable-validation",
           "--no-save", "--seed", "1", "--num-workers", "0"]
    p = run(cmd)
    updates = seconds = 0.0
    for line in (p.stdout + p.stderr).splitlines():
        m = _INNER.search(line)
        if not m:
            continue
        rec = json.loads(m.group(1))
        if int(rec["num_updates"]) > 20:  # the first 20 updates are warm-up
            updates += 10
            seconds += 10 / float(rec["ups"])
    if not updates:
        sys.exit(f"no train_inner record after update 20 in the log of {' '.join(map(str, cmd))}")
    return updates / seconds


def bench_nmt(work, a):
    data = nmt_data(work, a)
    ups = {False: [], True: []}
    for r in range(a.rounds):
        for bf16 in (False, True) if r % 2 == 0 else (True, False):
            u = nmt_updates_per_s(data, bf16, a)
            ups[bf16].append(u)
            print(f"  teacher round {r + 1}: {'bf16' if bf16 else 'fp32'} {u:.3f} updates/s", flush=True)
    ratio = statistics.median(b / f for f, b in zip(ups[False], ups[True]))
    print(f"fairseq-train NMT teacher (3+3, d=128, ffn 512), max-tokens 2048, 1 thread, updates 21-{a.max_update}: "
          f"float32 {statistics.median(ups[False]):.3f}, --bf16 {statistics.median(ups[True]):.3f} updates/s "
          f"-> bf16 {ratio:.3f}x (target >= {NMT_TARGET}x)", flush=True)
    return ratio


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="200 images per class, 1 round of each vision pair, NMT 1 round of 40 updates")
    p.add_argument("--rounds", type=int, default=2, help="fp32/bf16 pairs per measurement (default 2)")
    p.add_argument("--train-per-class", type=int, default=300, help="CIFAR-10 training images per class")
    p.add_argument("--max-update", type=int, default=60, help="fairseq-train updates per NMT run")
    p.add_argument("--cifar", default=str(CIFAR))
    p.add_argument("--m30k", default=M30K, help="a binarized Multi30k en-de (joined dictionary) to copy")
    p.add_argument("--vision-archs", nargs="+", default=["resnet20", "resnet8"])
    p.add_argument("--only", choices=("vision", "nmt"))
    p.add_argument("--json", default=None, help="also write the figures to this file")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.train_per_class, a.max_update = 1, 200, 40
    t0 = time.time()
    print(time.strftime("%Y-%m-%d %H:%M:%S %Z"), f"load average {os.getloadavg()[0]:.1f}", flush=True)
    res = {"cpu": cpu_info()}
    with tempfile.TemporaryDirectory(prefix="bench_precision_") as work:
        if a.only in (None, "vision"):
            res["vision"] = bench_vision(work, a)
        if a.only in (None, "nmt"):
            res["nmt"] = bench_nmt(work, a)
    for arch, r in res.get("vision", {}).items():
        print(format_ratio(f"vision_{arch}_epoch_time_fp32/bf16_channels_last", r, ">=", VISION_TARGETS.get(arch, 2.0)))
    if "nmt" in res:
        print(format_ratio("nmt_teacher_updates_per_s_bf16/fp32", res["nmt"], ">=", NMT_TARGET))
    if not res["cpu"]["amx"]:
        print("note: this CPU has no AMX: bf16 targets are set for AMX CPUs")
    print(f"(total {time.time() - t0:.0f}s; load average {os.getloadavg()[0]:.1f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
