"""Where the study's runs execute.

* ``--launcher local`` (the default): on this machine, ``--jobs`` at a time; with ``--gpus``,
  one run per GPU (``CUDA_VISIBLE_DEVICES`` set to that GPU alone), as many at once as GPUs.
* ``--launcher slurm``: each run of the plan is one Slurm job, submitted through submitit
  once the runs it needs are done, with the same command line as a local run. The submitted
  jobs are recorded in ``OUT/slurm/jobs.json`` (and named ``lskd.<study>.<run>``), so a
  submitter that was stopped and started again finds its jobs, pending, running or finished,
  submits none of them twice and resubmits the ones that failed or were preempted.

Job side: :func:`run_command` (and ``lskd_study.runner.run_in_process``) run inside the Slurm job; what they
return (wall time, host, device, job id) is what the run's done-marker records.
"""

import fnmatch
import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from lskd_fairseq import integrity
from lskd_fairseq.atomic import atomic_write_json

# Slurm states a job can still leave (it is waiting, running or being requeued)
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUSPENDED", "RESIZING",
          "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}
# sbatch options that lskd-study sets itself, each from one of its own options
OWN_SBATCH = {"job-name": "the run id", "output": "--slurm-folder", "error": "--slurm-folder",
              "partition": "--slurm-partition", "time": "--slurm-time", "gpus-per-node": "--slurm-gpus-per-run",
              "cpus-per-task": "--slurm-cpus-per-run", "mem": "--slurm-mem-gb", "dependency": "the plan",
              "nodes": "one node per run", "ntasks-per-node": "one task per run"}


# ------------------------------------------------------------------ local GPUs
def parse_gpus(spec: str) -> List[str]:
    """``--gpus 0,1,3`` (those ids) or ``--gpus 4`` (ids 0..3); ValueError naming the problem."""
    spec = spec.strip()
    if "," not in spec and spec.isdigit():
        n = int(spec)
        if n < 1:
            raise ValueError(f"--gpus {spec}: give a number of GPUs (at least 1) or a list of ids such as 0,1")
        return [str(i) for i in range(n)]
    ids = [s.strip() for s in spec.split(",")]
    bad = [s for s in ids if not s.isdigit()]
    if bad or not ids:
        raise ValueError(f"--gpus {spec}: not a GPU id list; give ids such as 0,1,2,3 or a count such as 4")
    dup = sorted({s for s in ids if ids.count(s) > 1}, key=int)
    if dup:
        raise ValueError(f"--gpus {spec}: GPU {', '.join(dup)} listed twice; runs must not share a GPU")
    return ids


def check_gpus(ids: List[str]) -> Optional[str]:
    """Why these GPU ids cannot be used on this machine (None when they all exist)."""
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install counts as none
        n = 0
    if n == 0:
        return (f"--gpus {','.join(ids)}: this machine has no CUDA device (torch.cuda.is_available() is False); "
                "leave --gpus out to run on the CPU")
    missing = [i for i in ids if int(i) >= n]
    if missing:
        return (f"--gpus {','.join(ids)}: GPU {', '.join(missing)} does not exist; this machine has {n} "
                f"(ids 0-{n - 1})")
    return None


# ------------------------------------------------------------------ Slurm options
@dataclass
class SlurmOptions:
    folder: str  # submitit's folder: one subfolder per job (its sbatch script, logs, pickles)
    partition: Optional[str] = None
    time_min: Optional[int] = None  # None: from each run's estimate (see time_limit)
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem_gb: Optional[float] = None
    sbatch: Dict[str, object] = field(default_factory=dict)  # extra sbatch options, by name
    poll_s: float = 5.0


def parse_sbatch_args(text: str) -> Dict[str, object]:
    """``--slurm-sbatch-args "--qos=high --account lab --exclusive"`` as submitit's
    ``slurm_additional_parameters``; ValueError for a token that is not an sbatch option, or for
    one lskd-study sets from its own options."""
    out: Dict[str, object] = {}
    toks = shlex.split(text or "")
    i = 0
    while i < len(toks):
        t = toks[i]
        if not t.startswith("--") or len(t) < 3:
            raise ValueError(f"--slurm-sbatch-args: {t!r} is not a long sbatch option; write them as --name=value "
                             "(for example --slurm-sbatch-args '--qos=high --account=lab')")
        key, eq, value = t[2:].partition("=")
        if not eq:
            if i + 1 < len(toks) and not toks[i + 1].startswith("--"):
                value, i = toks[i + 1], i + 1
            else:
                value = True
        if key in OWN_SBATCH:
            raise ValueError(f"--slurm-sbatch-args: --{key} is set by lskd-study from {OWN_SBATCH[key]}; "
                             "use that instead")
        out[key.replace("-", "_")] = value
        i += 1
    return out


def _slurm_answer(cmd: List[str]) -> Tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return 127, f"{cmd[0]} not found"
    except subprocess.TimeoutExpired:
        return 124, f"{cmd[0]} gave no answer within 30 s"
    return p.returncode, (p.stdout if p.returncode == 0 else (p.stderr or p.stdout)).strip()


def check_slurm(partition: Optional[str]) -> Optional[str]:
    """Why ``--launcher slurm`` cannot submit here (None when Slurm answers and knows the partition)."""
    start = "sudo bash scripts/slurm_local.sh start"
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return ("--launcher slurm: no Slurm here (sbatch and sinfo are not on PATH); run lskd-study on the "
                f"cluster's login node, or start a one-node Slurm on this machine ({start})")
    rc, text = _slurm_answer(["sinfo", "-h", "-o", "%R"])
    if rc != 0:
        return (f"--launcher slurm: Slurm does not answer (sinfo: {text.splitlines()[-1] if text else rc}); "
                f"is slurmctld running? On this machine: {start}")
    parts = sorted(set(text.split()))
    if partition and partition not in parts:
        return (f"--slurm-partition {partition}: no such partition; this cluster has: {', '.join(parts) or 'none'} "
                "(sinfo -s lists them)")
    if shutil.which("sacct") is None or _slurm_answer(["sacct", "-n", "-X", "--starttime", "now-1minutes"])[0] != 0:
        return ("--launcher slurm: sacct does not answer, so failed and preempted jobs cannot be told from running "
                "ones; the cluster needs accounting (slurmdbd)" + (f"; on this machine: {start}" if not partition else ""))
    return None


def time_limit(opts: SlurmOptions, est_s: float) -> int:
    """Minutes asked for one run: --slurm-time, else twice the plan's estimate plus 15 minutes."""
    if opts.time_min:
        return int(opts.time_min)
    return int(2 * est_s / 60) + 15


# ------------------------------------------------------------------ job side
class RunFailed(RuntimeError):
    """A run's command exited non-zero inside its Slurm job (the job is then FAILED)."""


def where_am_i() -> Dict:
    """Host, Slurm job id and device of the process running a run."""
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    return {"host": socket.gethostname(), "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "device": f"GPU {gpus}" if gpus else "cpu"}


def run_command(cmd: List[str], env_updates: Dict[str, str], cwd: str, logpath: str) -> Dict:
    """Inside a Slurm job: run the command (its output appended to the run's log), the job's
    own environment (CUDA_VISIBLE_DEVICES from Slurm) plus the study's settings."""
    env = {**os.environ, **env_updates}
    start = time.time()
    with open(logpath, "a", encoding="utf-8") as lf:
        lf.write(f"\n[slurm job {os.environ.get('SLURM_JOB_ID')} on {socket.gethostname()}]\n"
                 f"$ {' '.join(shlex.quote(c) for c in cmd)}\n")
        lf.flush()
        rc = subprocess.call(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if rc != 0:
        raise RunFailed(f"{cmd[0] if cmd[0] != 'bash' else cmd[1]} exited with status {rc}; log {logpath}")
    return {"start": start, "end": time.time(), **where_am_i()}


# ------------------------------------------------------------------ submitter side
class SlurmLauncher:
    """Submits the study's runs as Slurm jobs and waits for them (one thread per waiting run)."""

    def __init__(self, study, opts: SlurmOptions, in_process):
        """``in_process(study_kwargs, run_id, logpath)``: the job function of the in-process runs
        (``lskd_study.runner.run_in_process``)."""
        import submitit
        from submitit.slurm.slurm import SlurmInfoWatcher

        self.st, self.opts, self.in_process = study, opts, in_process
        self.submitit = submitit
        self.folder = os.path.abspath(opts.folder)
        os.makedirs(self.folder, exist_ok=True)
        self.executor = submitit.AutoExecutor(folder=os.path.join(self.folder, "%j"), cluster="slurm")
        self.watcher = SlurmInfoWatcher(delay_s=max(1, int(opts.poll_s)))
        self.tag = hashlib.sha1(study.out.encode()).hexdigest()[:8]
        self.record_path = os.path.join(study.out, "slurm", "jobs.json")
        self._lock = threading.Lock()
        self.jobs: Dict[str, List[Dict]] = integrity.load_json(self.record_path, "Slurm job record", required=False) or {}

    def job_name(self, rid: str) -> str:
        return f"lskd.{self.tag}.{rid}"

    def _job(self, job_id: str):
        job = self.submitit.SlurmJob(folder=os.path.join(self.folder, "%j"), job_id=job_id)
        job.watcher = self.watcher  # polled every --poll seconds, not submitit's default 10 minutes
        return job

    def _record(self, rid: str, job_id: str, how: str) -> None:
        with self._lock:
            self.jobs.setdefault(rid, []).append({"job_id": job_id, "how": how, "time": time.time(),
                                                  "invocation": self.st.t0})
            atomic_write_json(self.record_path, self.jobs, indent=1)

    def _state(self, job_id: str, force: bool = False) -> str:
        """The job's state from sacct (through submitit's watcher); a job sacct does not list yet
        (slurmdbd is written asynchronously, seconds behind under load) is asked of the controller."""
        state = self.watcher.get_state(job_id, mode="force" if force else "standard").split()[0].upper()
        if state == "UNKNOWN":
            rc, text = _slurm_answer(["squeue", "-h", "-j", str(job_id), "-o", "%T"])
            if rc == 0 and text.split():
                state = text.split()[0].upper()
        return state

    def _known_state(self, job) -> str:
        """The state of a job of an earlier invocation, waiting up to a minute while neither the
        accounting nor the controller lists it (a job just submitted, or just ended)."""
        deadline = time.time() + 60
        state = self._state(job.job_id, force=True)
        while state == "UNKNOWN" and not job.paths.result_pickle.exists() and time.time() < deadline:
            time.sleep(2)
            state = self._state(job.job_id, force=True)
        return "COMPLETED" if state == "UNKNOWN" and job.paths.result_pickle.exists() else state

    def _by_name(self, rid: str) -> List[Tuple[str, str]]:
        """Jobs of this run that Slurm knows by name (a submission the record missed: the
        submitter stopped between sbatch and writing jobs.json)."""
        found = []
        for cmd in (["squeue", "-h", f"--name={self.job_name(rid)}", "-o", "%i|%T"],  # the controller: live jobs
                    ["sacct", "-n", "-X", "-P", f"--name={self.job_name(rid)}", "--starttime=now-30days",
                     "-o", "JobID,State"]):
            rc, text = _slurm_answer(cmd)
            if rc == 0:
                found += [tuple(ln.split("|")[:2]) for ln in text.splitlines() if "|" in ln]
        return list(dict.fromkeys(found))

    def existing(self, rid: str) -> Optional[str]:
        """A job of an earlier invocation to wait for instead of submitting: one still pending or
        running, or one that finished well while no submitter was watching; None otherwise (a
        failed, cancelled or preempted job is resubmitted)."""
        known = [j["job_id"] for j in self.jobs.get(rid, [])]
        candidates = list(dict.fromkeys(list(reversed(known)) + [jid for jid, _ in self._by_name(rid) if jid not in known]))
        for jid in candidates:
            job = self._job(jid)
            state = self._known_state(job)
            if state in ACTIVE or (state == "COMPLETED" and job.paths.result_pickle.exists()):
                if jid not in known:
                    self._record(rid, jid, "found by name")
                return jid
            if jid == (known[-1] if known else None):
                self.st.log(f"  {rid}: its Slurm job {jid} ended {state}; submitting it again")
        return None

    def submit(self, r, fn, *args) -> str:
        o = self.opts
        params = {"name": self.job_name(r.id), "timeout_min": time_limit(o, r.est_s), "cpus_per_task": o.cpus_per_run,
                  "nodes": 1, "tasks_per_node": 1, "slurm_additional_parameters": dict(o.sbatch)}
        if o.partition:
            params["slurm_partition"] = o.partition
        if o.gpus_per_run:
            params["gpus_per_node"] = o.gpus_per_run
        if o.mem_gb:
            params["mem_gb"] = o.mem_gb
        with self._lock:  # one executor: its parameters and sbatch call together
            self.executor.update_parameters(**params)
            job = self.executor.submit(fn, *args)
        self._record(r.id, job.job_id, "submitted")
        return job.job_id

    def run(self, r, cmd: Optional[List[str]], logpath: str, cur: Dict, on_line) -> Tuple[int, Dict]:
        """Submit (or find) the run's job, follow its log, and return (0 or 1, what the job
        reported). ``on_line`` reads each new line of the run's log, as for a local run."""
        jid = self.existing(r.id)
        if jid:
            self.st.log(f"  {r.id}: waiting for its Slurm job {jid} (submitted by an earlier lskd-study)")
        elif cmd is None:
            jid = self.submit(r, self.in_process, self.st.kwargs, r.id, logpath)
        else:
            jid = self.submit(r, run_command, cmd, self.st.env_updates(), self.st.repo, logpath)
        cur["sub"] = f"slurm job {jid}"
        job = self._job(jid)
        offset = os.path.getsize(logpath) if os.path.isfile(logpath) else 0
        last_beat = time.time()
        while True:
            done = job.paths.result_pickle.exists()
            state = "COMPLETED" if done else self._state(jid)
            offset = self._follow(logpath, offset, on_line)
            if done or (state not in ACTIVE and state != "UNKNOWN"):
                break
            if time.time() - last_beat >= self.st.heartbeat_s:
                last_beat = time.time()
                cur["sub"] = f"slurm job {jid} {state.lower()}"
                self.st.progress(cur["wid"])
            time.sleep(min(self.opts.poll_s, 2.0))
        self._follow(logpath, offset, on_line)
        info = {"slurm_job": jid, "launcher": "slurm"}
        try:
            res = job.result() if job.paths.result_pickle.exists() else None
        except Exception as e:  # noqa: BLE001 - the job's own error, shown in the run's log
            res, why = None, str(e).strip().splitlines()
            self._append(logpath, f"Slurm job {jid} failed:\n" + "\n".join(why[-20:]))
            return 1, info
        if res is None:
            self._append(logpath, f"Slurm job {jid} ended {self._state(jid, force=True)} without a result; "
                                  f"its own log: {job.paths.stderr}\n{_tail(job.paths.stderr)}")
            return 1, info
        return 0, {**info, **res}

    @staticmethod
    def _follow(logpath: str, offset: int, on_line) -> int:
        """Hand the log's complete new lines to ``on_line``; the offset after them."""
        try:
            with open(logpath, "rb") as f:
                f.seek(offset)
                for raw in f:
                    if not raw.endswith(b"\n"):  # a line still being written: read it next time
                        break
                    on_line(raw.decode("utf-8", "replace"))
                    offset += len(raw)
        except OSError:
            pass
        return offset

    @staticmethod
    def _append(logpath: str, text: str) -> None:
        with open(logpath, "a", encoding="utf-8") as f:
            f.write("\n" + text.rstrip() + "\n")


def _tail(path, n: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def select_runs(runs, patterns: List[str]):
    """The runs whose id matches one of the glob patterns, and every run they need (in plan
    order); ValueError when a pattern matches no run."""
    by_id = {r.id: r for r in runs}
    want = set()
    for p in patterns:
        hit = [r.id for r in runs if fnmatch.fnmatchcase(r.id, p)]
        if not hit:
            raise ValueError(f"--runs {p}: no run of this plan matches (lskd-study --dry-run lists them)")
        want.update(hit)
    stack = list(want)
    while stack:
        for d in by_id[stack.pop()].deps:
            if d not in want:
                want.add(d)
                stack.append(d)
    return [r for r in runs if r.id in want]
