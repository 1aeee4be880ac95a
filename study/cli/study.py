"""lskd-study: rerun the paper's comparison on real data and write report.md.

Does a label-smoothed teacher distill worse? The study trains, on real data,

* Multi30k en-de NMT through ``recipes/multi30k/run.sh``: teachers with and
  without LS; students without KD, with word-level KD from each teacher at T=1,
  and with sequence-level KD from each teacher; test-set sacreBLEU;
* CIFAR-10 through ``lskd-vision-train``: teachers with and without LS; a student
  without KD and students of each teacher at T in {1, 2, 4} (soft labels only);

measures 1-S (Shen et al.'s stability metric) and ECE of every model, draws the
paper's figures and writes ``report.md`` beside them, each table next to the
paper's published numbers and each claim marked reproduced or not at this scale.

Usage::

    lskd-study --scale smoke   # < 10 min on 2 CPU cores: plumbing check (CI)
    lskd-study --scale cpu     # about 2 hours on 2 CPU cores
    lskd-study --scale full    # the paper's model sizes and schedules; a GPU machine

Outputs go to ``--out`` (default ``runs/study-<scale>``). Every run ends by
writing a marker in ``OUT/.done/``; running the study again skips finished runs
and resumes an interrupted one from its last checkpoint. ``--report-only``
rebuilds the report from what exists. Progress (run i/N, epoch or update, time
left) is printed as it goes; each run's full output is in ``OUT/logs/``.
"""

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

from lskd_fairseq.atomic import atomic_write_json
from lskd_study import study_plan as SP

_print_lock = threading.Lock()


def fmt_dur(s: Optional[float]) -> str:
    if s is None or s != s:
        return "?"
    s = max(0, int(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Study:
    def __init__(self, scale: str, out: str, jobs: Optional[int] = None, tracks=("nmt", "vision"),
                 nmt_work: Optional[str] = None, threads: Optional[int] = None, quiet: bool = False,
                 heartbeat_s: float = 30.0, reuse_vision: Optional[str] = None):
        self.scale_name = scale
        self.scale = SP.SCALE_DEFS[scale]
        self.out = os.path.abspath(out)
        self.jobs = jobs or self.scale.jobs
        self.tracks = tuple(tracks)
        self.nmt_work = os.path.abspath(nmt_work) if nmt_work else os.path.join(self.out, "nmt")
        ncpu = os.cpu_count() or 1
        self.threads = threads or max(1, ncpu // self.jobs)
        self.quiet = quiet
        self.reuse_vision = os.path.abspath(reuse_vision) if reuse_vision else None
        self.heartbeat_s = heartbeat_s
        self.runs = SP.plan(scale, self.out, self.tracks)
        self.n_total = len(self.runs)
        self.index = {r.id: i + 1 for i, r in enumerate(self.runs)}
        self.by_id = {r.id: r for r in self.runs}
        self._chain: Dict[str, float] = {}  # critical-path seconds, see chain_s
        self.status: Dict[str, str] = {}
        self.durations: Dict[str, float] = {}
        self.est_done = 0.0
        self.obs_done = 0.0
        self.failed: List[str] = []
        self.skipped: List[str] = []
        self.current: Dict[str, Dict] = {}  # worker -> {run, t0, done, total}
        self._lock = threading.Lock()
        self.procs: List[subprocess.Popen] = []
        self.t0 = time.time()
        for d in ("logs", ".done", "vision", "analysis"):
            os.makedirs(os.path.join(self.out, d), exist_ok=True)

    # ------------------------------------------------------------ bookkeeping
    def log(self, msg: str) -> None:
        line = f"[study {time.strftime('%H:%M:%S')}] {msg}"
        with _print_lock:
            if not self.quiet:
                try:
                    print(line, flush=True)
                except (OSError, ValueError):  # stdout gone (closed pipe or terminal): keep logging to the file
                    self.quiet = True
            with open(os.path.join(self.out, "logs", "study.log"), "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def marker(self, rid: str) -> str:
        return os.path.join(self.out, ".done", rid.replace("/", "__") + ".json")

    def is_done(self, rid: str) -> bool:
        """A run is done when its marker exists; an analysis run also needs its marker to be
        newer than those of the runs it reads (a model trained since is analysed again)."""
        path = self.marker(rid)
        if not os.path.isfile(path):
            return False
        r = self.by_id.get(rid)
        if r is not None and r.kind == "analysis":
            mine = os.path.getmtime(path)
            deps = [self.marker(dd) for dd in r.deps]
            if any(os.path.isfile(m) and os.path.getmtime(m) > mine for m in deps):
                return False
        return True

    def mark_done(self, rid: str, seconds: float, extra: Optional[Dict] = None) -> None:
        path = self.marker(rid)
        atomic_write_json(path, {"run": rid, "seconds": seconds,
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 "scale": self.scale_name, **(extra or {})})

    def speed(self) -> float:
        """Observed / estimated time of the runs finished in this session, shrunk towards 1 by a
        prior worth two average runs (so one unusually fast or slow short run does not swing it)."""
        prior = 2.0 * sum(r.est_s for r in self.runs) / max(1, len(self.runs))
        return (self.obs_done + prior) / (self.est_done + prior)

    def study_eta(self) -> float:
        """Remaining estimated time: running runs' own estimates plus pending runs' priors
        (scaled by how fast finished runs were), spread over the workers."""
        sp = self.speed()
        running = {c["run"].id: c for c in list(self.current.values())}
        rem = 0.0
        for r in self.runs:
            stt = self.status.get(r.id)
            if stt in ("done", "skipped", "failed"):
                continue
            rem += max(0.0, self.run_eta(running[r.id])) if r.id in running else r.est_s * sp
        return rem / max(1, self.jobs)

    def run_eta(self, cur: Dict) -> float:
        el = time.time() - cur["t0"]
        done, total = cur.get("done"), cur.get("total")
        if total and done and done > cur.get("done0", 0):
            frac_new = (done - cur.get("done0", 0)) / max(1, total - cur.get("done0", 0))
            return el * (1 - frac_new) / max(frac_new, 1e-6)
        return max(0.0, cur["run"].est_s * self.speed() - el)

    def progress(self, wid: str, extra: str = "") -> None:
        cur = self.current.get(wid)
        if not cur:
            return
        r = cur["run"]
        pos = ""
        if cur.get("sub"):
            pos += f" {cur['sub']}"
        if cur.get("total"):
            pos += f" {r.unit} {cur.get('done') or 0}/{cur['total']}"
        left = self.run_eta(cur)
        if cur.get("total") and cur.get("done") == cur["total"]:
            left_s = "~0s (final evaluation)"
        else:
            left_s = f"~{fmt_dur(left)}" if left > 0 else "? (over the estimate)"
        self.log(f"run {self.index[r.id]}/{self.n_total} {r.id}:{pos}{extra} | elapsed {fmt_dur(time.time() - cur['t0'])}"
                 f", run left {left_s}, study left ~{fmt_dur(self.study_eta())}")

    # ------------------------------------------------------------ commands
    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env["PYTHONWARNINGS"] = "ignore"
        env["OMP_NUM_THREADS"] = str(self.threads)
        env["MKL_NUM_THREADS"] = str(self.threads)
        env["PYTHONUNBUFFERED"] = "1"
        bindir = os.path.dirname(sys.executable)
        if bindir not in env.get("PATH", "").split(os.pathsep):
            env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        return env

    def vision_data(self) -> str:
        v = self.scale.vision
        if v.subset_train_per_class:
            return os.path.join(self.out, "data", f"cifar10-subset-{v.subset_train_per_class}-{v.subset_test_per_class}")
        return SP.CIFAR10_TARBALL

    def vision_dir(self, name: str) -> str:
        return os.path.join(self.out, "vision", name)

    def vision_cmd(self, r: SP.Run) -> List[str]:
        v = self.scale.vision
        a = r.args
        name = r.id.split("/", 1)[1]
        cmd = [os.path.join(os.path.dirname(sys.executable), "lskd-vision-train"), self.vision_data(),
               "--output", self.vision_dir(name), "--resume",
               "--model", a["arch"], "--epochs", str(a["epochs"]), "--batch-size", str(v.batch_size),
               "--lr", str(v.lr), "--label-smoothing", str(a["ls"]), "--ls-convention", v.ls_convention,
               "--weight-decay", "5e-4", "--sched", "cosine", "--val-fraction", str(v.val_fraction),
               "--workers", "0", "--threads", str(self.threads), "--seed", "0", "--no-progress"]
        if v.train_per_class:
            cmd += ["--train-per-class", str(v.train_per_class)]
        if v.small_input_stem:
            cmd += ["--small-input-stem"]
        if a.get("imbalance"):
            cmd += ["--imbalance-factor", f"{a['imbalance']:g}"]
        if a.get("teacher"):
            cmd += ["--teacher", os.path.join(self.vision_dir(a["teacher"]), "checkpoint_best.pt"),
                    "--kd-alpha", "1", "--kd-temperature", f"{a['T']:g}"]
        return cmd + list(v.extra)

    def recipe_cmd(self, r: SP.Run) -> List[str]:
        cmd = ["bash", SP.RECIPE, "--scale", self.scale.nmt.recipe_scale, "--work", self.nmt_work,
               "--data-dir", SP.MULTI30K_DIR,
               "--stage", r.args["stage"], "--stop-stage", r.args["stop_stage"]]
        if self.scale.nmt.kd_sweep_temperatures:
            cmd += ["--kd-sweep-temperatures", " ".join(f"{t:g}" for t in self.scale.nmt.kd_sweep_temperatures)]
        return cmd

    # ------------------------------------------------------------ execution
    def _spawn(self, cmd: List[str], logpath: str, track: str, parse_vision: bool, steps: List[str]) -> int:
        with open(logpath, "a", encoding="utf-8") as lf:
            lf.write(f"\n$ {' '.join(shlex.quote(c) for c in cmd)}\n")
            lf.flush()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env(),
                                    text=True, bufsize=1, start_new_session=True, cwd=SP.REPO)
            self.procs.append(proc)
            cur = self.current[track]
            epoch_re = re.compile(r"^epoch (\d+)/(\d+) ")
            resumed_re = re.compile(r"^resumed from .* after epoch (\d+)")
            last_beat = [time.time()]
            stop = threading.Event()

            def monitor():  # NMT: the recipe writes fairseq's output to its own step logs
                last_done = None
                while not stop.wait(2.0):
                    if steps:
                        done = self._nmt_updates(steps)
                        if done is not None:
                            if "done0" not in cur:
                                cur["done0"] = done
                            cur["done"] = done
                    if time.time() - last_beat[0] >= self.heartbeat_s or (
                            steps and cur.get("done") != last_done and time.time() - last_beat[0] >= max(10.0, self.heartbeat_s / 2)):
                        last_done = cur.get("done")
                        last_beat[0] = time.time()
                        self.progress(track)

            mt = threading.Thread(target=monitor, daemon=True)
            mt.start()
            try:
                for line in proc.stdout:
                    lf.write(line)
                    lf.flush()
                    if parse_vision:
                        m = resumed_re.match(line)
                        if m:
                            cur["done0"] = cur["done"] = int(m.group(1))
                            self.log(f"run {self.index[cur['run'].id]}/{self.n_total} {cur['run'].id}: resumed after epoch {m.group(1)}")
                        m = epoch_re.match(line)
                        if m:
                            cur["done"], cur["total"] = int(m.group(1)), int(m.group(2))
                            cur.setdefault("done0", 0)
                            last_beat[0] = time.time()
                            self.progress(track)
                    else:
                        m = re.search(r": (run|skip) +(\S+)", line)
                        if m:
                            cur["sub"] = m.group(2) + (" (skipped: done)" if m.group(1) == "skip" else "")
                        if "ERROR" in line:
                            self.log(f"  {cur['run'].id}: {line.strip()}")
                rc = proc.wait()
            finally:
                stop.set()
                mt.join(timeout=5)
        return rc

    def _nmt_updates(self, steps: List[str]) -> Optional[int]:
        total = 0
        seen = False
        pat = re.compile(r"num_updates[ =](\d+)")
        for st in steps:
            p = os.path.join(self.nmt_work, "logs", f"en-de.{st}.log")
            if os.path.isfile(os.path.join(self.nmt_work, ".done", f"en-de.{st}")):
                seen = True
                total += self.current_total_step(st)
                continue
            if not os.path.isfile(p):
                continue
            try:
                with open(p, "rb") as f:
                    f.seek(max(0, os.path.getsize(p) - 20000))
                    tail = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            ms = pat.findall(tail)
            if ms:
                seen = True
                total += int(ms[-1])
        return total if seen else None

    def current_total_step(self, step: str) -> int:
        n = self.scale.nmt
        return n.max_update_teacher if step.startswith("teacher") else n.max_update_student

    def _vision_subset(self, r: SP.Run, logpath: str) -> None:
        """Symlinked ImageFolder subset of the CIFAR-10 tarball (smoke scale only).

        A thin adapter over lskd_vision.data (which extracts the tarball once into
        its cache); the images are links, nothing is copied.
        """
        from lskd_vision import data as D

        dest = self.vision_data()
        tmp = dest + ".tmp"
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        splits = D.find_splits(SP.CIFAR10_TARBALL)
        for split, samples, n in (("train", splits.train, r.args["train"]), ("test", splits.test, r.args["test"])):
            sub = D.per_class_subset(samples, n, 0)
            for p, y in sub.samples:
                d = os.path.join(tmp, split, sub.classes[y])
                os.makedirs(d, exist_ok=True)
                os.symlink(os.path.realpath(p), os.path.join(d, os.path.basename(p)))
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        with open(logpath, "a") as f:
            f.write(f"subset of {splits.root}: {r.args['train']} train / {r.args['test']} test images a class -> {dest}\n")

    # names used by recipes/vision/cifar10_ls_kd.sh for the same runs
    REUSE_NAMES = {"teacher_nols": "teacher_ce", "teacher_ls": "teacher_ls",
                   "student_nols_T1": "student_from_ce", "student_ls_T1": "student_from_ls"}
    REUSE_KEYS = ("arch", "epochs", "label_smoothing", "ls_convention", "train_per_class", "val_fraction",
                  "split_seed", "seed", "batch_size", "lr", "weight_decay", "sched", "kd_alpha",
                  "kd_temperature", "kd_topk", "small_input_stem", "imbalance_factor")

    def _try_reuse_vision(self, r: SP.Run) -> Optional[str]:
        """Link a finished run of recipes/vision/cifar10_ls_kd.sh with the same settings instead of training."""
        name = r.id.split("/", 1)[1]
        theirs = self.REUSE_NAMES.get(name)
        if not self.reuse_vision or not theirs:
            return None
        src = os.path.join(self.reuse_vision, theirs)
        m = None
        try:
            with open(os.path.join(src, "metrics.json")) as f:
                m = json.load(f)
        except (OSError, ValueError):
            return None
        cfg = m.get("config", {})
        want = self._vision_config_expected(r)
        diff = [k for k in self.REUSE_KEYS if k in want and cfg.get(k) != want[k]]
        if os.path.realpath(str(cfg.get("data", ""))) != os.path.realpath(self.vision_data()):
            want["data"] = self.vision_data()
            diff.append("data")
        if diff:
            self.log(f"  {r.id}: not reusing {src}: settings differ ({', '.join(f'{k} {cfg.get(k)!r} != {want[k]!r}' for k in diff)})")
            return None
        dest = self.vision_dir(name)
        if os.path.lexists(dest):
            if os.path.islink(dest):
                os.unlink(dest)
            else:
                return None  # a run of our own exists: let it finish instead
        os.symlink(os.path.abspath(src), dest)
        return src

    def _vision_config_expected(self, r: SP.Run) -> Dict:
        v, a = self.scale.vision, r.args
        return {"arch": a["arch"], "epochs": a["epochs"], "label_smoothing": float(a["ls"]),
                "ls_convention": v.ls_convention, "train_per_class": v.train_per_class, "val_fraction": v.val_fraction,
                "split_seed": 0, "seed": 0, "batch_size": v.batch_size, "lr": v.lr, "weight_decay": 5e-4,
                "sched": "cosine", "kd_alpha": 1.0 if a.get("teacher") else 0.0,
                "kd_temperature": float(a.get("T", 1.0)), "kd_topk": 0, "small_input_stem": v.small_input_stem,
                "imbalance_factor": float(a.get("imbalance") or 1.0)}

    def execute(self, r: SP.Run, wid: str = "w1") -> bool:
        i = self.index[r.id]
        if r.kind == "vision_train" and not self.is_done(r.id):
            src = self._try_reuse_vision(r)
            if src:
                self.mark_done(r.id, 0.0, {"reused": src})
                self.log(f"run {i}/{self.n_total} {r.id}: reusing the finished run {src} (same settings)")
        if self.is_done(r.id):
            self.status[r.id] = "skipped"
            self.skipped.append(r.id)
            self.log(f"run {i}/{self.n_total} {r.id}: skip (done: {self.marker(r.id)})")
            return True
        self.log(f"run {i}/{self.n_total} {r.id}: start [{wid}] - {r.title} (estimated ~{fmt_dur(r.est_s * self.speed())}; "
                 f"log {os.path.join(self.out, 'logs', r.id.replace('/', '__') + '.log')})")
        logpath = os.path.join(self.out, "logs", r.id.replace("/", "__") + ".log")
        cur = {"run": r, "t0": time.time(), "total": r.total, "done": None}
        self.current[wid] = cur
        self.status[r.id] = "running"
        ok = True
        try:
            if r.kind == "vision_subset":
                self._vision_subset(r, logpath)
                rc = 0
            elif r.kind == "vision_train":
                rc = self._spawn(self.vision_cmd(r), logpath, wid, True, [])
            elif r.kind == "recipe_stage":
                rc = self._spawn(self.recipe_cmd(r), logpath, wid, False, r.args.get("steps", []))
            elif r.kind == "analysis":
                from lskd_study import report as R

                import torch

                torch.set_num_threads(self.threads)
                fn = R.vision_stability_all if r.id == "analysis/vision_stability" else R.nmt_stability_all
                complete = fn(self).get("complete", False)
                rc = 0
                if not complete:
                    self.log(f"run {i}/{self.n_total} {r.id}: partial (some models are missing); not marked done")
                    self.status[r.id] = "partial"
                    self.current.pop(wid, None)
                    return True
            else:
                raise ValueError(r.kind)
            ok = rc == 0
        except Exception as e:  # noqa: BLE001 - a failed run is reported, the others go on
            import traceback

            with open(logpath, "a") as f:
                f.write(f"\nERROR: {type(e).__name__}: {e}\n{traceback.format_exc()}\n")
            ok = False
        dt = time.time() - cur["t0"]
        self.current.pop(wid, None)
        if ok:
            self.mark_done(r.id, dt)
            self.status[r.id] = "done"
            self.durations[r.id] = dt
            self.est_done += r.est_s
            self.obs_done += dt
            self.log(f"run {i}/{self.n_total} {r.id}: done in {fmt_dur(dt)} | study left ~{fmt_dur(self.study_eta())}")
        else:
            self.status[r.id] = "failed"
            self.failed.append(r.id)
            tail = ""
            try:
                with open(logpath, encoding="utf-8", errors="replace") as f:
                    tail = "".join(f.readlines()[-25:])
            except OSError:
                pass
            self.log(f"run {i}/{self.n_total} {r.id}: FAILED after {fmt_dur(dt)}; log {logpath}\n{tail}")
        return ok

    def chain_s(self, rid: str) -> float:
        """Estimated seconds from the start of ``rid`` to the end of the longest chain of runs
        that wait for it (critical-path length); cached."""
        if rid not in self._chain:
            after = [r.id for r in self.runs if rid in r.deps]
            self._chain[rid] = self.by_id[rid].est_s + max((self.chain_s(a) for a in after), default=0.0)
        return self._chain[rid]

    def worker(self, wid: str) -> None:
        """Take the ready run (dependencies done) with the longest chain of runs behind it, so
        the slow track starts first and the study ends sooner; ties keep plan order."""
        while True:
            with self._lock:
                pending = sorted((r for r in self.runs if r.id not in self.status),
                                 key=lambda r: -self.chain_s(r.id))
                if not pending:
                    return
                pick = None
                for r in pending:
                    bad = [dd for dd in r.deps if self.status.get(dd) == "failed"]
                    if r.soft:
                        if all(self.status.get(dd) in ("done", "skipped", "failed") for dd in r.deps):
                            pick = r
                            break
                        continue
                    if bad:
                        self.status[r.id] = "failed"
                        self.failed.append(r.id)
                        self.log(f"run {self.index[r.id]}/{self.n_total} {r.id}: not run ({', '.join(bad)} failed)")
                        continue
                    if all(self.status.get(dd) in ("done", "skipped") for dd in r.deps):
                        pick = r
                        break
                if pick is not None:
                    self.status[pick.id] = "claimed"
            if pick is None:
                if not [r for r in self.runs if r.id not in self.status]:
                    return
                time.sleep(0.5)
                continue
            self.execute(pick, wid)

    def run(self) -> int:
        self.log(f"lskd-study --scale {self.scale_name}: {self.n_total} runs into {self.out} "
                 f"({self.jobs} run(s) at a time, {self.threads} thread(s) each); "
                 f"first estimate ~{fmt_dur(self.study_eta())}")
        self.log(self.scale.note)
        ths = [threading.Thread(target=self.worker, args=(f"w{k + 1}",), name=f"w{k + 1}", daemon=True)
               for k in range(self.jobs)]
        for t in ths:
            t.start()
        for t in ths:
            while t.is_alive():
                t.join(0.5)
        return self.finish()

    def finish(self) -> int:
        from lskd_study import report as R

        path = R.write_report(self)
        n_run = sum(1 for s in self.status.values() if s == "done")
        self.log(f"report: {path}  ({n_run} run(s) done now, {len(self.skipped)} skipped as already done, "
                 f"{len(self.failed)} failed; total {fmt_dur(time.time() - self.t0)})")
        return 1 if self.failed else 0

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lskd-study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=SP.SCALES, default="cpu")
    p.add_argument("--out", default=None, help="output folder (default: <repo>/runs/study-<scale>)")
    p.add_argument("--only", choices=["nmt", "vision"], default=None, help="run one track only (NMT or vision)")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs at a time (default: 2 for smoke/cpu, 1 for full); a run starts when the runs it needs are done")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per run (default: cores / jobs)")
    p.add_argument("--nmt-work", default=None,
                   help="the Multi30k recipe's work folder (default OUT/nmt); point it at an existing "
                        "recipe run of the same scale to reuse its models")
    p.add_argument("--reuse-vision", default=None,
                   help="output folder of recipes/vision/cifar10_ls_kd.sh: its teachers and T=1 students are "
                        "linked instead of retrained when their recorded settings equal this scale's")
    p.add_argument("--report-only", action="store_true", help="rebuild report.md and figures from what exists")
    p.add_argument("--dry-run", action="store_true", help="print the runs and their commands, run nothing")
    p.add_argument("--heartbeat", type=float, default=30.0, help="seconds between progress lines")
    return p


def main(argv=None) -> int:
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    import logging
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    warnings.filterwarnings("ignore")
    for name in ("matplotlib", "PIL", "fairseq", "lskd_fairseq"):
        logging.getLogger(name).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    out = args.out or os.path.join(SP.REPO, "runs", f"study-{args.scale}")
    tracks = (args.only,) if args.only else ("nmt", "vision")
    st = Study(args.scale, out, jobs=args.jobs, tracks=tracks, nmt_work=args.nmt_work, threads=args.threads,
               heartbeat_s=args.heartbeat, reuse_vision=args.reuse_vision)
    if args.dry_run:
        for r in st.runs:
            cmd = st.vision_cmd(r) if r.kind == "vision_train" else st.recipe_cmd(r) if r.kind == "recipe_stage" else ["(in-process)"]
            done = " [done]" if st.is_done(r.id) else ""
            deps = f" (after {', '.join(r.deps)})" if r.deps else ""
            print(f"{st.index[r.id]:>2}/{st.n_total} {r.id}{done}: {r.title}{deps}\n      {' '.join(shlex.quote(c) for c in cmd)}")
        return 0
    if args.report_only:
        return st.finish() and 0
    def _term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    try:
        return st.run()
    except KeyboardInterrupt:
        st.kill()
        st.log("interrupted: finished runs keep their markers; run the same command again to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
