"""Run every benchmark and print one summary of measured ratios against their targets (``make bench``).

Each benchmark runs in its own process (with its quick option unless ``--full``) and
reports each ratio it measures as one machine-readable line::

    RATIO name=<name> value=<float> target=<op><float> ok=<True|False>

where ``op`` is ``<=`` or ``>=``, or ``target=none`` for a figure reported without a
target (shown as "info"). This script collects those lines and prints a table:
benchmark, ratio, value, target, verdict. A benchmark that is missing, fails, times out
or prints no RATIO line shows as such in the table instead of stopping the run.

    python benchmarks/run_all.py                 # quick versions, a few minutes
    python benchmarks/run_all.py --full          # the benchmarks' own (slow) defaults
    python benchmarks/run_all.py --only bench_seqkd.py    # both its entries (float32 and --bf16)

Exit status: 0 when every benchmark ran and every ratio met its target, 1 otherwise.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))

# (script, arguments of its quick version[, arguments of every run, quick or --full]);
# None: --quick if the script's --help offers it, else its defaults. A script with more than one
# entry (float32 and bfloat16 runs) is shown as "script args" in the summary.
BENCHMARKS = [
    ("bench_kd_criterion.py", ["--quick"]),
    ("bench_kd_criterion.py", ["--quick"], ["--bf16"]),
    ("bench_seqkd.py", ["--quick"]),
    ("bench_seqkd.py", ["--quick"], ["--bf16"]),
    ("bench_vision_kd.py", None),
    ("bench_vision_kd.py", None, ["--amp", "--channels-last"]),
    ("bench_precision.py", ["--quick"]),  # bf16 against float32 through the CLIs (issue 18)
]


def entries():
    """``(script, quick arguments or None, arguments of every run)`` of each BENCHMARKS entry."""
    return [(e[0], e[1], list(e[2]) if len(e) > 2 else []) for e in BENCHMARKS]

_RATIO = re.compile(r"^RATIO\s+(.*)$")
_TARGET = re.compile(r"^(<=|>=)\s*([-+0-9.eE]+)$")


def format_ratio(name: str, value: float, op: str, target: float) -> str:
    """The RATIO line a benchmark prints for one measured ratio (``op``: ``<=`` or ``>=``)."""
    if op not in ("<=", ">="):
        raise ValueError(f"op must be <= or >=, not {op!r}")
    if re.search(r"\s", name):
        raise ValueError(f"a ratio name has no spaces: {name!r}")
    return f"RATIO name={name} value={value:.4f} target={op}{target:g} ok={meets(value, op, target)}"


def meets(value: float, op: str, target: float) -> bool:
    return value <= target if op == "<=" else value >= target


@dataclass
class Ratio:
    name: str
    value: Optional[float]
    op: str  # <=, >=, "" (no target) or ? (unreadable)
    target: float
    ok: bool
    problem: str = ""  # why the line could not be read, or why its ok= is not believed


@dataclass
class Result:
    script: str
    status: str  # ran | missing | failed | timeout
    detail: str = ""
    seconds: float = 0.0
    ratios: List[Ratio] = field(default_factory=list)


def parse_ratios(text: str) -> List[Ratio]:
    """The RATIO lines of a benchmark's output. The verdict is recomputed from value and
    target; a line whose ok= disagrees, or that cannot be read, is kept with a problem."""
    out = []
    for line in text.splitlines():
        m = _RATIO.match(line.strip())
        if not m:
            continue
        fields = dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
        name = fields.get("name", "?")
        t = _TARGET.match(fields.get("target", ""))
        try:
            value = float(fields["value"])
        except (KeyError, ValueError):
            value = None
        if fields.get("target") == "none" and value is not None and value == value:
            out.append(Ratio(name, value, "", float("nan"), True))  # a figure without a target
            continue
        if t is None or value is None or value != value:  # NaN: nothing was measured
            out.append(Ratio(name, value, t.group(1) if t else "?", float(t.group(2)) if t else float("nan"),
                             False, problem=f"unreadable line: {line.strip()}"))
            continue
        op, target = t.group(1), float(t.group(2))
        ok = meets(value, op, target)
        problem = ""
        if "ok" in fields and fields["ok"] != str(ok):
            problem = f"the benchmark said ok={fields['ok']}"
        out.append(Ratio(name, value, op, target, ok, problem))
    return out


def quick_args(path: str, declared: Optional[Sequence[str]]) -> List[str]:
    if declared is not None:
        return list(declared)
    try:
        helptext = subprocess.run([sys.executable, path, "--help"], capture_output=True, text=True,
                                  timeout=300).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ["--quick"] if "--quick" in helptext else []


def run_one(script: str, args: Sequence[str], timeout: float, echo: bool = True, label: Optional[str] = None) -> Result:
    path = os.path.join(HERE, script)
    name = label or script
    if not os.path.isfile(path):
        return Result(name, "missing", f"{path} does not exist")
    cmd = [sys.executable, path, *args]
    if echo:
        print(f"\n=== {script} {' '.join(args)}", flush=True)
    t0 = time.time()
    lines: List[str] = []
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=HERE,
                                start_new_session=True)
    except OSError as e:
        return Result(name, "failed", str(e))
    timed_out = threading.Event()

    def stop():  # the benchmark and whatever it started (its own process group)
        timed_out.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass

    watchdog = threading.Timer(timeout, stop)
    watchdog.start()
    try:
        for line in proc.stdout:  # echoed as it comes: these runs take minutes
            lines.append(line)
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()
        rc = proc.wait()
    finally:
        watchdog.cancel()
    text = "".join(lines)
    if timed_out.is_set():
        return Result(name, "timeout", f"stopped after {timeout:.0f} s", time.time() - t0, parse_ratios(text))
    res = Result(name, "ran" if rc == 0 else "failed", "" if rc == 0 else f"exit {rc}: {_last_line(text)}",
                 time.time() - t0, parse_ratios(text))
    if res.status == "ran" and not res.ratios:
        res.status, res.detail = "failed", "printed no RATIO line"
    return res


def _last_line(text: str) -> str:
    rest = [l.strip() for l in text.splitlines() if l.strip()]
    return rest[-1][:160] if rest else "(no output)"


def summary(results: Sequence[Result]) -> str:
    rows = [("benchmark", "ratio", "value", "target", "verdict")]
    for r in results:
        if r.status != "ran":
            rows.append((r.script, "–", "–", "–", f"{r.status.upper()}: {r.detail}"))
        for q in r.ratios:
            value = "–" if q.value is None else f"{q.value:.3f}"
            target = {"?": "?", "": "none"}.get(q.op, f"{q.op} {q.target:g}")
            verdict = "ok" if q.ok and not q.problem else ("MISSED" if not q.problem else f"CHECK: {q.problem}")
            if q.op == "" and not q.problem:
                verdict = "info"
            rows.append((r.script, q.name, value, target, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for j, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
        if j == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 7)
    return "\n".join(lines)


def all_ok(results: Sequence[Result]) -> bool:
    return all(r.status == "ran" and r.ratios and all(q.ok and not q.problem for q in r.ratios) for r in results)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="run the benchmarks at their own defaults (slow)")
    p.add_argument("--only", action="append", metavar="SCRIPT", help="run only this benchmark (repeatable)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark (default 3600)")
    a = p.parse_args(argv)
    known = [s for s, _, _ in entries()]
    for s in a.only or []:
        if s not in known:
            p.error(f"unknown benchmark {s!r}; benchmarks: {', '.join(known)}")
    results = []
    counts = {s: known.count(s) for s in known}
    for script, declared, always in entries():
        if a.only and script not in a.only:
            continue
        path = os.path.join(HERE, script)
        args = [] if a.full or not os.path.isfile(path) else quick_args(path, declared)
        label = " ".join([script, *always]) if counts[script] > 1 and always else script
        results.append(run_one(script, [*args, *always], a.timeout, label=label))
    print(f"\n=== summary ({'full' if a.full else 'quick'} runs; load average {os.getloadavg()[0]:.1f}: "
          f"timings on a busy machine are noisy)")
    print(summary(results))
    return 0 if all_ok(results) else 1


if __name__ == "__main__":
    sys.exit(main())
