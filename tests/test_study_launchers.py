"""Where lskd-study's runs go (lskd_study.launchers): one run per GPU with --gpus, and Slurm jobs
through submitit with --launcher slurm, on the real data.

The --gpus test needs no GPU: it checks the CUDA_VISIBLE_DEVICES each run received (recorded by
lskd-vision-train itself) and how the runs were scheduled on the GPU slots. The Slurm tests run
against the real one-node Slurm of ``scripts/slurm_local.sh`` (slurmctld, slurmd, slurmdbd with
MariaDB; .ci/run starts it): nothing here mocks sbatch or sacct."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import BIN, cli_env, require_data, run_cli

CHAIN = "vision/student_ls_T1_seed1"  # with the runs it needs: data -> teacher_ls -> cache -> student


def _cifar():
    require_data("cifar10/cifar10_jpg.tar.gz", "CIFAR-10 as JPEG files in ImageFolder layout (train/, test/)")


def _markers(out):
    return {json.loads(p.read_text())["run"]: json.loads(p.read_text()) for p in (out / ".done").glob("*.json")}


def _structure(report: str):
    """A report's structure: its headings and the header row of each table."""
    lines = report.splitlines()
    heads = [ln for ln in lines if ln.startswith("#")]
    tables = [lines[i - 1] for i, ln in enumerate(lines) if ln.startswith("| ---") and i > 0]
    return heads, tables


def test_gpus_one_run_per_gpu_never_shared(tmp_path):
    _cifar()
    from lskd_study.runner import Study

    out = tmp_path / "out"
    st = Study("smoke", str(out), tracks=("vision",), select=["vision/teacher_*", "vision/lt_teacher_*"],
               gpus=["0", "1"], quiet=True, heartbeat_s=60)
    assert st.jobs == 2 and len(st.runs) == 5  # the data subset, then four teachers on two GPUs
    assert st.run() == 0
    marks = _markers(out)
    assert set(marks) == {r.id for r in st.runs}
    spans = {}
    for rid, m in marks.items():
        gpu = re.fullmatch(r"GPU (\d)", m["device"]).group(1)
        spans.setdefault(gpu, []).append((m["start"], m["end"], rid))
        if rid != "vision/data":  # the environment the run itself received
            ran = json.loads((out / "vision" / rid.split("/")[1] / "metrics.json").read_text())["ran_on"]
            assert ran["cuda_visible_devices"] == gpu, (rid, ran)
            log = (out / "logs" / (rid.replace("/", "__") + ".log")).read_text()
            assert f"$ CUDA_VISIBLE_DEVICES={gpu} " in log
    assert set(spans) == {"0", "1"}
    for gpu, runs in spans.items():  # one run at a time on each GPU
        runs.sort()
        for (s0, e0, a), (s1, e1, b) in zip(runs, runs[1:]):
            assert s1 >= e0 - 0.05, f"GPU {gpu} shared by {a} and {b}"
    # both GPUs were busy at once
    assert any(s1 < e0 and s0 < e1 for s0, e0, _ in spans["0"] for s1, e1, _ in spans["1"])
    report = (out / "report.md").read_text()
    assert re.search(r"Where the runs ran: this machine, GPU 0: \d run\(s\); this machine, GPU 1: \d run\(s\)\.", report)
    assert "| vision/teacher_ls |" in report and "this machine, GPU" in report.split("## Runs")[1]


# ------------------------------------------------------------------ Slurm
def _sacct(*args):
    p = subprocess.run(["sacct", "-n", "-X", "-P", "--starttime=now-1days", *args], capture_output=True, text=True,
                       check=True, timeout=60)
    return [ln.split("|") for ln in p.stdout.splitlines() if ln.strip()]


def _jobs_of(out):
    """Every Slurm job named after a run of the study in ``out``: run -> [(id, state, start, end)]."""
    tag = None
    rec = json.loads((out / "slurm" / "jobs.json").read_text())
    some_id = next(iter(rec.values()))[-1]["job_id"]
    name = _sacct("-j", some_id, "-o", "JobName%200")[0][0]
    tag = name.split(".")[1]
    jobs = {}
    for jid, jname, state, start, end in _sacct("-o", "JobID,JobName%200,State,Start,End"):
        if jname.startswith(f"lskd.{tag}."):
            jobs.setdefault(jname.split(".", 2)[2], []).append((jid, state.split()[0], start, end))
    return jobs


def _study(out, *more, runs=CHAIN):
    return ["lskd-study", "--scale", "smoke", "--only", "vision", "--runs", runs, "--out", out, "--heartbeat", "5",
            *more]


def test_slurm_runs_every_run_as_a_job_keeping_dependencies(tmp_path, slurm_cluster):
    _cifar()
    local, slurm = tmp_path / "local", tmp_path / "slurm"
    run_cli(_study(local), timeout=600)
    t0 = time.time()
    proc = run_cli(_study(slurm, "--launcher", "slurm"), timeout=600)
    wall = time.time() - t0
    marks = _markers(slurm)
    assert len(marks) == 4
    jobs = _jobs_of(slurm)
    for rid, m in marks.items():  # every run was one Slurm job, that finished
        assert m["launcher"] == "slurm" and m["slurm_job"], m
        assert [(j[0], j[1]) for j in jobs[rid]] == [(m["slurm_job"], "COMPLETED")], (rid, jobs.get(rid))
    # the dependencies held: each job started after the job of the run it needs had ended (Slurm's times)
    from lskd_study.runner import Study

    st = Study("smoke", str(slurm), tracks=("vision",), select=[CHAIN], quiet=True)
    for r in st.runs:
        for d in r.deps:
            assert jobs[r.id][0][2] >= jobs[d][0][3], (r.id, jobs[r.id], d, jobs[d])
            assert marks[r.id]["start"] >= marks[d]["end"]
    # the same report as a local run's, with where each run ran
    assert _structure((slurm / "report.md").read_text()) == _structure((local / "report.md").read_text())
    assert re.search(r"\| Slurm job \d+ \([^,]+, cpu\) \|", (slurm / "report.md").read_text())
    assert "this machine |" in (local / "report.md").read_text()
    print(f"Slurm chain: {len(marks)} jobs in {wall:.0f} s")  # shown with pytest -s
    assert "4 run(s) done now" in proc.stdout


def test_slurm_submitter_stopped_and_restarted_runs_nothing_twice(tmp_path, slurm_cluster):
    _cifar()
    out = tmp_path / "out"
    args = [str(a) for a in _study(out, "--launcher", "slurm")]
    first = subprocess.Popen([str(BIN / args[0])] + args[1:], env=cli_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    record = out / "slurm" / "jobs.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (record.is_file() and "vision/teacher_ls" in record.read_text()):
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the submitter dies at once: no clean-up of any kind
    first.wait()
    teacher_job = json.loads(record.read_text())["vision/teacher_ls"][-1]["job_id"]
    assert not (out / ".done" / "vision__teacher_ls.json").exists()
    proc = run_cli(_study(out, "--launcher", "slurm"), timeout=600)
    assert f"vision/teacher_ls: waiting for its Slurm job {teacher_job} (submitted by an earlier lskd-study)" in proc.stdout
    marks = _markers(out)
    assert len(marks) == 4, sorted(marks)  # nothing lost
    assert marks["vision/teacher_ls"]["slurm_job"] == teacher_job
    jobs = _jobs_of(out)
    assert sorted(jobs) == sorted(marks)
    for rid, js in jobs.items():  # nothing ran twice
        assert [j[1] for j in js] == ["COMPLETED"], (rid, js)
    assert "4 of 4" in (out / "report.md").read_text()


def test_slurm_failed_job_shown_others_go_on_rerun_resubmits_it(tmp_path, slurm_cluster):
    _cifar()
    out = tmp_path / "out"
    args = [str(a) for a in _study(out, "--launcher", "slurm", runs="vision/teacher_*")]
    study = subprocess.Popen([str(BIN / args[0])] + args[1:], env=cli_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    record = out / "slurm" / "jobs.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (record.is_file() and "vision/teacher_ls" in record.read_text()):
        time.sleep(0.2)
    killed = json.loads(record.read_text())["vision/teacher_ls"][-1]["job_id"]
    subprocess.run(["scancel", killed], check=True, timeout=60)
    log, _ = study.communicate(timeout=600)
    assert study.returncode == 1, log
    assert re.search(r"vision/teacher_ls: FAILED after .*\n(.*\n)*.*Slurm job " + killed + r" .*CANCELLED", log), log
    marks = _markers(out)
    assert "vision/teacher_nols" in marks and "vision/teacher_ls" not in marks  # the run beside it went on
    again = run_cli(_study(out, "--launcher", "slurm", runs="vision/teacher_*"), timeout=600)
    assert f"vision/teacher_ls: its Slurm job {killed} ended CANCELLED; submitting it again" in again.stdout
    assert "vision/teacher_nols: skip (done" in again.stdout
    marks = _markers(out)
    assert marks["vision/teacher_ls"]["slurm_job"] != killed
    assert [j[1] for j in _jobs_of(out)["vision/teacher_ls"]] == ["CANCELLED", "COMPLETED"]


def test_slurm_bad_input_is_one_line_and_submits_nothing(tmp_path, slurm_cluster):
    out = tmp_path / "out"
    before = len(_sacct("-o", "JobID"))
    proc = run_cli(_study(out, "--launcher", "slurm", "--slurm-partition", "nosuch"), check=False, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in text, text
    assert re.search(r"--slurm-partition nosuch: no such partition; this cluster has: debug", text), text
    # a Slurm that does not answer: a configuration whose controller nobody listens to
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=none\nSlurmctldHost=localhost\nSlurmctldPort=6999\nMessageTimeout=2\n"
                    "NodeName=localhost CPUs=1\nPartitionName=debug Nodes=localhost Default=YES\n")
    env = {**cli_env(), "SLURM_CONF": str(conf)}
    exe = str(BIN / "lskd-study")
    p = subprocess.run([exe] + [str(a) for a in _study(out, "--launcher", "slurm")[1:]], env=env, capture_output=True,
                       text=True, timeout=120)
    text = p.stdout + p.stderr
    assert p.returncode == 2 and "Traceback" not in text, text
    assert re.search(r"--launcher slurm: Slurm does not answer \(sinfo: .*\); is slurmctld running\?", text), text
    assert not out.exists()
    assert len(_sacct("-o", "JobID")) == before  # nothing submitted


def test_slurm_state_of_a_job_sacct_does_not_list_yet(tmp_path, slurm_cluster):
    """A job just submitted is in the controller (squeue) before slurmdbd has it (sacct lists it
    seconds later under load): the launcher must see it PENDING or RUNNING, not ended. (Taking it
    for ended made a restarted submitter submit a job twice, once, in CI.)"""
    from lskd_study import launchers
    from lskd_study.runner import Study

    st = Study("smoke", str(tmp_path / "out"), tracks=("vision",), quiet=True)
    sl = launchers.SlurmLauncher(st, launchers.SlurmOptions(folder=str(tmp_path / "jobs")), in_process=None)
    jid = subprocess.run(["sbatch", "--parsable", "--job-name=lskd.lagtest", "-o", "/dev/null", "--wrap", "sleep 5"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    try:
        assert sl._state(jid, force=True) in launchers.ACTIVE
    finally:
        subprocess.run(["scancel", jid], timeout=60)
