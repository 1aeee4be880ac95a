"""Markdown table of lskd-vision-train runs: ``python -m lskd_vision.report RUN_DIR [RUN_DIR ...]``.

Reads each run's ``metrics.json`` and ``config.json``; prints one row per run
(teacher(s), LS, KD setting, val/test top-1, top-5, ECE, best epoch, train time).
"""

import argparse
import json
import os
import sys
from typing import List
from lskd_fairseq import console


def _fmt(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


def table(run_dirs: List[str]) -> str:
    rows = [
        "| run | model | LS ε (convention) | teacher | KD α / T | val top-1 | test top-1 | test top-5 | test ECE | test NLL | best epoch | train time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in run_dirs:
        path = os.path.join(d, "metrics.json")
        if not os.path.isfile(path):
            rows.append(f"| {os.path.basename(d.rstrip('/'))} | (no metrics.json: not finished) |" + " |" * 10)
            continue
        m = json.load(open(path))
        c = m["config"]
        archs = c.get("teacher_archs") or ["lskd"] * len(c.get("teachers", []))
        teachers = ", ".join(os.path.basename(os.path.dirname(t)) if a == "lskd" else f"{a} ({os.path.basename(t)})"
                             for t, a in zip(c.get("teachers", []), archs)) or "–"
        kd = f"{c['kd_alpha']:g} / {c['kd_temperature']:g}" if c.get("teachers") else "–"
        # runs from before the convention was recorded used fairseq's, the default then
        ls = f"{c['label_smoothing']:g} ({c.get('ls_convention', 'fairseq')})" if c["label_smoothing"] else "0"
        test = m.get("test") or {}
        val = m.get("val") or {}
        rows.append(
            f"| {os.path.basename(d.rstrip('/'))} | {c['arch']} | {ls} | {teachers} | {kd} | {_fmt(val.get('top1'))} | "
            f"{_fmt(test.get('top1'))} | {_fmt(test.get('top5'))} | {_fmt(test.get('ece'), 4)} | "
            f"{_fmt(test.get('nll_loss'), 4)} | {m['best_epoch']}/{m['epochs']} | {m['train_time_s'] / 60:.1f} min |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lskd_vision.report", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run folders (the --output of lskd-vision-train)")
    args = p.parse_args(argv)
    console.result(table(args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
