"""The study's executor: runs the plan's runs on job slots, as soon as the runs they need are done.

Three parts, three modules: the plan to commands (``lskd_study.commands``), the records of
what ran (``lskd_study.records``: done-markers and accounts, so a study that was cut off and
resumed can still account for its time, ``collect.accounts``), and here the scheduling: job
slots, progress, failures. ``lskd-study`` (``cli/study.py``) parses the options and drives a
:class:`Study`.
"""

import os
import re
import shlex
import signal
import subprocess
import threading
import time
from typing import Dict, List, Optional

from lskd_study import launchers, study_plan
from lskd_study.commands import Commands
from lskd_study.records import Records
from lskd_study.study_plan import fmt_dur
from lskd_fairseq import console

_print_lock = threading.Lock()
_EPOCH_RE = re.compile(r"^epoch (\d+)/(\d+)[ :]")
_RESUMED_RE = re.compile(r"^resumed from .* after epoch (\d+)")


class Study(Commands, Records):
    def __init__(self, scale: str, out: str, jobs: Optional[int] = None, tracks=("nmt", "vision"),
                 nmt_work: Optional[str] = None, threads: Optional[int] = None, quiet: bool = False,
                 heartbeat_s: float = 30.0, reuse_vision: Optional[str] = None, seeds: Optional[int] = None,
                 data_root: Optional[str] = None, select: Optional[List[str]] = None,
                 gpus: Optional[List[str]] = None, slurm: Optional[launchers.SlurmOptions] = None):
        # what a Slurm job needs to rebuild this study for one in-process run (launchers.run_in_process)
        self.kwargs = {"scale": scale, "out": os.path.abspath(out), "tracks": tuple(tracks), "nmt_work": nmt_work,
                       "threads": threads, "quiet": True, "reuse_vision": reuse_vision, "seeds": seeds,
                       "data_root": data_root, "select": select, "jobs": jobs}
        self.scale_name = scale
        self.scale = study_plan.SCALE_DEFS[scale]
        self.out = os.path.abspath(out)
        self.gpus = list(gpus or [])
        self.jobs = len(self.gpus) if self.gpus else (jobs or self.scale.jobs)
        self.tracks = tuple(tracks)
        self.nmt_work = os.path.abspath(nmt_work) if nmt_work else os.path.join(self.out, "nmt")
        ncpu = os.cpu_count() or 1
        self.threads = threads or (slurm.cpus_per_run if slurm else max(1, ncpu // self.jobs))
        self.repo = study_plan.REPO
        self.quiet = quiet
        self.reuse_vision = os.path.abspath(reuse_vision) if reuse_vision else None
        self.heartbeat_s = heartbeat_s
        self.base_seeds = seeds or self.scale.seeds  # every student; the vision T=1 pair may have more
        self.seeds = list(range(1, self.scale.vision_seed_count(self.base_seeds) + 1))
        self.data = study_plan.data_paths(data_root)
        self.runs = study_plan.plan(scale, self.out, self.tracks, seeds=self.base_seeds)
        if select:
            self.runs = launchers.select_runs(self.runs, select)
        if slurm and not jobs:
            self.jobs = len(self.runs)  # Slurm queues them; a run is submitted once the runs it needs are done
        self.slurm_opts = slurm
        self.slurm: Optional[launchers.SlurmLauncher] = None  # made by run(): a dry run writes nothing
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
        self._dirs_made = False
        self._damage: Dict[str, Optional[str]] = {}  # run -> why its marker does not count (records.damage)

    def seeds_text(self) -> str:
        extra = f", the vision T=1 pair {len(self.seeds)}" if len(self.seeds) > self.base_seeds else ""
        return f"{self.base_seeds} seed(s){extra}"

    def make_dirs(self) -> None:
        """The output folders (not made by the constructor: a dry run writes nothing)."""
        for d in ("logs", ".done", "vision", "analysis"):
            os.makedirs(os.path.join(self.out, d), exist_ok=True)
        self._dirs_made = True

    def missing_data(self) -> List[str]:
        """The data paths the planned tracks need that do not exist."""
        need = []
        if "vision" in self.tracks:
            need.append(self.data["cifar10"])
        if "nmt" in self.tracks:
            need.append(self.data["multi30k"])
        return [p for p in need if not os.path.exists(p)]

    # ------------------------------------------------------------ bookkeeping
    def log(self, msg: str) -> None:
        line = f"[study {time.strftime('%H:%M:%S')}] {msg}"
        with _print_lock:
            if not self.quiet or not self._dirs_made:
                try:
                    console.say(line)
                except (OSError, ValueError):  # stdout gone (closed pipe or terminal): keep logging to the file
                    self.quiet = True
            if self._dirs_made:
                with open(os.path.join(self.out, "logs", "study.log"), "a", encoding="utf-8") as f:
                    f.write(line + "\n")

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

    # ------------------------------------------------------------ execution
    def device(self, wid: str) -> str:
        """The GPU a job slot runs on (``--gpus``: slot k has the k-th id), or "" (this machine's default)."""
        return self.gpus[int(wid[1:]) - 1] if self.gpus else ""

    def on_line(self, wid: str, line: str, parse_vision: bool) -> None:
        """Progress from one line of a run's output: epochs (vision), sub-steps and errors (recipe)."""
        cur = self.current[wid]
        if parse_vision:
            m = _RESUMED_RE.match(line)
            if m:
                cur["done0"] = cur["done"] = int(m.group(1))
                self.log(f"run {self.index[cur['run'].id]}/{self.n_total} {cur['run'].id}: resumed after epoch {m.group(1)}")
            m = _EPOCH_RE.match(line)
            if m:
                cur["done"], cur["total"] = int(m.group(1)), int(m.group(2))
                cur.setdefault("done0", 0)
                cur["beat"] = time.time()
                self.progress(wid)
        else:
            m = re.search(r": (run|skip) +(\S+)", line)
            if m:
                cur["sub"] = m.group(2) + (" (skipped: done)" if m.group(1) == "skip" else "")
            if "ERROR" in line:
                self.log(f"  {cur['run'].id}: {line.strip()}")

    def _spawn(self, cmd: List[str], logpath: str, wid: str, parse_vision: bool, steps: List[str]) -> int:
        env = self.env()
        gpu = self.device(wid)
        if gpu:
            env["CUDA_VISIBLE_DEVICES"] = gpu  # this slot's GPU alone: runs never share one
        with open(logpath, "a", encoding="utf-8") as lf:
            lf.write(f"\n$ {'CUDA_VISIBLE_DEVICES=' + gpu + ' ' if gpu else ''}{' '.join(shlex.quote(c) for c in cmd)}\n")
            lf.flush()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                    text=True, bufsize=1, start_new_session=True, cwd=self.repo)
            self.procs.append(proc)
            cur = self.current[wid]
            cur["beat"] = time.time()
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
                    if time.time() - cur["beat"] >= self.heartbeat_s or (
                            steps and cur.get("done") != last_done and time.time() - cur["beat"] >= max(10.0, self.heartbeat_s / 2)):
                        last_done = cur.get("done")
                        cur["beat"] = time.time()
                        self.progress(wid)

            mt = threading.Thread(target=monitor, daemon=True)
            mt.start()
            try:
                for line in proc.stdout:
                    lf.write(line)
                    lf.flush()
                    self.on_line(wid, line, parse_vision)
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

    def command(self, r: study_plan.Run) -> Optional[List[str]]:
        """The run's command line, or None for the runs done in-process (a data subset, an analysis)."""
        if r.kind == "vision_train":
            return self.vision_cmd(r)
        if r.kind == "vision_cache":
            return self.vision_cache_cmd(r)
        if r.kind == "recipe_stage":
            return self.recipe_cmd(r)
        if r.kind in ("vision_subset", "analysis"):
            return None
        raise ValueError(r.kind)

    def in_process(self, r: study_plan.Run, logpath: str) -> bool:
        """Run an in-process run here; False when an analysis found models missing (not done)."""
        if r.kind == "vision_subset":
            self._vision_subset(r, logpath)
            return True
        from lskd_study import collect

        import torch

        torch.set_num_threads(self.threads)
        fn = collect.vision_stability_all if r.id == "analysis/vision_stability" else collect.nmt_stability_all
        return bool(fn(self).get("complete", False))

    def execute(self, r: study_plan.Run, wid: str = "w1") -> bool:
        i = self.index[r.id]
        if r.kind == "vision_train" and not self.is_done(r.id):
            src = self._try_reuse_vision(r)
            if src:
                self.mark_done(r.id, 0.0, {"reused": src})
                self.log(f"run {i}/{self.n_total} {r.id}: reusing the finished run {src} (same settings)")
        self.set_aside(r.id)  # a run whose recorded outputs are damaged starts over
        if self.is_done(r.id):
            self.status[r.id] = "skipped"
            self.skipped.append(r.id)
            self.log(f"run {i}/{self.n_total} {r.id}: skip (done: {self.marker(r.id)})")
            return True
        logpath = os.path.join(self.out, "logs", r.id.replace("/", "__") + ".log")
        where = f"GPU {self.device(wid)}" if self.gpus else ("Slurm" if self.slurm else wid)
        self.log(f"run {i}/{self.n_total} {r.id}: start [{where}] - {r.title} (estimated ~{fmt_dur(r.est_s * self.speed())}; "
                 f"log {logpath})")
        cur = {"run": r, "t0": time.time(), "total": r.total, "done": None, "wid": wid}
        self.current[wid] = cur
        self.status[r.id] = "running"
        info: Dict = {"launcher": "local", "device": f"GPU {self.device(wid)}" if self.gpus else "local"}
        complete = True
        try:
            cmd = self.command(r)
            if self.slurm:
                rc, info = self.slurm.run(r, cmd, logpath, cur, lambda ln: self.on_line(wid, ln, r.kind != "recipe_stage"))
                complete = info.get("complete", True)
            elif cmd is None:
                complete, rc = self.in_process(r, logpath), 0
            else:
                rc = self._spawn(cmd, logpath, wid, r.kind != "recipe_stage", r.args.get("steps", []))
            ok = rc == 0
        except Exception as e:  # noqa: BLE001 - a failed run is reported, the others go on
            import traceback

            try:
                with open(logpath, "a") as f:
                    f.write(f"\nERROR: {type(e).__name__}: {e}\n{traceback.format_exc()}\n")
            except OSError:  # the output folder itself went away: say so on the console
                self.log(f"run {i}/{self.n_total} {r.id}: {type(e).__name__}: {e}")
            ok = False
        self.current.pop(wid, None)
        if ok and not complete:
            self.log(f"run {i}/{self.n_total} {r.id}: partial (some models are missing); not marked done")
            self.status[r.id] = "partial"
            return True
        dt = time.time() - cur["t0"]
        if ok:
            if "start" in info:  # a Slurm job: its own wall time, not the wait in the queue
                dt = info["end"] - info["start"]
            self.mark_done(r.id, dt, info, slot=wid)
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
        that wait for it (``study_plan.chain_lengths``, computed once)."""
        if not self._chain:
            self._chain = study_plan.chain_lengths(self.runs)
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
            try:
                self.execute(pick, wid)
            except Exception as e:  # noqa: BLE001 - outside the run itself (reuse, marker): fail it, go on
                with self._lock:
                    self.status[pick.id] = "failed"
                    self.failed.append(pick.id)
                    self.current.pop(wid, None)
                self.log(f"run {self.index[pick.id]}/{self.n_total} {pick.id}: FAILED: {type(e).__name__}: {e}")

    def run(self) -> int:
        self.make_dirs()
        if self.slurm_opts:
            self.slurm = launchers.SlurmLauncher(self, self.slurm_opts, run_in_process)
        self.log(f"lskd-study --scale {self.scale_name}: {self.n_total} runs into {self.out} "
                 f"({self.jobs} run(s) at a time, {self.threads} thread(s) each, {self.seeds_text()}); "
                 f"first estimate ~{fmt_dur(self.study_eta())}")
        self.log(self.scale.note)
        self.log(study_plan.plan_time_line(self.scale_name, self.runs, self.jobs))
        ths = [threading.Thread(target=self.worker, args=(f"w{k + 1}",), name=f"w{k + 1}", daemon=True)
               for k in range(self.jobs)]
        for t in ths:
            t.start()
        for t in ths:
            while t.is_alive():
                t.join(0.5)
        return self.finish()

    def finish(self, report_only: bool = False) -> int:
        """Write the report; 0 only when every run is done and none failed."""
        from lskd_study import report

        if report_only and not os.path.isdir(self.out):
            self.log(f"nothing to report: {self.out} does not exist (run the study first)")
            return 1
        if not report_only:
            self.make_dirs()
        n_run = sum(1 for s in self.status.values() if s == "done")
        if not report_only:
            self.record_invocation(n_run)
        path = report.write_report(self)
        missing = [r.id for r in self.runs if not self.is_done(r.id)]
        if path is None:
            self.log("no report written: no model has finished (see logs/ for why the runs failed)")
            return 1
        from lskd_study import collect

        saved = collect.cache_savings_line(collect.cache_savings(self))
        if saved:
            self.log(saved)
        self.log(f"report: {path}  ({n_run} run(s) done now, {len(self.skipped)} skipped as already done, "
                 f"{len(self.failed)} failed; total {fmt_dur(time.time() - self.t0)})")
        if missing:
            self.log(f"the report is incomplete: {len(missing)} of {len(self.runs)} runs have not finished; "
                     "run the same command without --report-only to resume them")
        return 1 if (self.failed or missing) else 0

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass


def run_in_process(study_kwargs: Dict, rid: str, logpath: str) -> Dict:
    """Inside a Slurm job: one of the study's in-process runs (a data subset, an analysis), on a
    Study rebuilt from the submitter's settings; what its done-marker records."""
    st = Study(**study_kwargs)
    st.make_dirs()
    start = time.time()
    complete = st.in_process(st.by_id[rid], logpath)
    return {"start": start, "end": time.time(), "complete": complete, **launchers.where_am_i()}
