"""lskd-study: rerun the paper's comparison on real data and write report.md.

Does a label-smoothed teacher distill worse? The study trains, on real data,

* Multi30k en-de NMT through ``recipes/multi30k/run.sh``: teachers with and
  without LS; students without KD, with word-level KD from each teacher at T=1,
  and with sequence-level KD from each teacher; test-set sacreBLEU;
* CIFAR-10 through ``lskd-vision-train``: teachers with and without LS; a student
  without KD and students of each teacher at several T (soft labels only);

KD students read teacher caches (``lskd-vision-cache`` per teacher and seed, the
recipe's ``teacher_cache`` stage for NMT) instead of running their teachers; the
log and the report say what the caches saved. It then
measures 1-S (Shen et al.'s stability metric) and ECE of every model, draws the
paper's figures and writes ``report.md`` beside them, each table next to the
paper's published numbers and each claim given a verdict (reproduced, contradicted,
equivalent within a declared margin, or inconclusive) from paired differences over
seeds: teachers are trained once per setting, every student once per seed.

Usage::

    lskd-study --scale smoke   # < 10 min on 2 CPU cores: plumbing check (CI)
    lskd-study --scale cpu     # 2 CPU cores; --dry-run prints the estimated time
    lskd-study --scale full    # the paper's model sizes and schedules; a GPU machine
    lskd-study --scale full --gpus 0,1,2,3                 # one run per GPU, four at a time
    lskd-study --scale full --launcher slurm --slurm-partition gpu --slurm-gpus-per-run 1
                                                           # one Slurm job per run (submitit)

Data: CIFAR-10 (``DATA/cifar10/cifar10_jpg.tar.gz``) and Multi30k (``DATA/multi30k``)
under ``--data DATA``; without it, under ``$LSKD_SHARED_DATA``, else under
``../shared/data`` beside the checkout.

Outputs go to ``--out`` (default ``runs/study-<scale>``). Every run ends by
writing a marker in ``OUT/.done/``; running the study again skips finished runs
and resumes an interrupted one from its last checkpoint. ``--report-only``
rebuilds the report from what exists. Progress (run i/N, epoch or update, time
left) is printed as it goes; each run's full output is in ``OUT/logs/``.
"""

import argparse
import os
import shlex
import signal
import sys

from lskd_fairseq import console, integrity
from lskd_study import launchers, study_plan
from lskd_study.runner import Study
from lskd_study.study_plan import fmt_dur


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lskd-study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=study_plan.SCALES, default="cpu")
    p.add_argument("--out", default=None, help="output folder (default: <repo>/runs/study-<scale>)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="folder holding cifar10/cifar10_jpg.tar.gz and multi30k/ (default: $LSKD_SHARED_DATA, "
                        "else ../shared/data beside the checkout)")
    p.add_argument("--seeds", type=int, default=None,
                   help="train every student once per seed 1..N, paired across the two teachers "
                        "(default: 2 at smoke scale, 3 otherwise); teachers are trained once")
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
    p.add_argument("--report-only", action="store_true",
                   help="rebuild report.md and figures from what exists (exit 1 when runs are missing)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the runs, their commands and the estimated time; run and write nothing")
    p.add_argument("--runs", default=None, metavar="GLOB[,GLOB]",
                   help="run only the runs whose id matches (e.g. 'vision/student_ls_T1_seed1'), and the runs they "
                        "need; --dry-run lists the ids")
    p.add_argument("--heartbeat", type=float, default=30.0, help="seconds between progress lines")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress lines on the terminal (logs/study.log keeps them all); results and errors only")
    g = p.add_argument_group("where the runs go")
    g.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: on this machine, --jobs at a time (default); slurm: one Slurm job per run, "
                        "through submitit, each submitted when the runs it needs are done")
    g.add_argument("--gpus", default=None, metavar="IDS|N",
                   help="local launcher: one run per GPU (CUDA_VISIBLE_DEVICES set to it alone), as many at once "
                        "as GPUs; a list of ids (0,1,2,3) or a count (4)")
    g = p.add_argument_group("Slurm (with --launcher slurm)")
    g.add_argument("--slurm-partition", default=None, help="partition (default: the cluster's default partition)")
    g.add_argument("--slurm-time", type=int, default=None, metavar="MIN",
                   help="time limit of each job in minutes (default: twice the run's estimate plus 15)")
    g.add_argument("--slurm-gpus-per-run", type=int, default=None, metavar="N",
                   help="GPUs per job (default: 1 at full scale, 0 otherwise)")
    g.add_argument("--slurm-cpus-per-run", type=int, default=None, metavar="N",
                   help="CPUs per job, also its threads (default: --threads, else 8 at full scale, 1 otherwise)")
    g.add_argument("--slurm-mem-gb", type=float, default=None, metavar="GB", help="memory per job (default: the cluster's)")
    g.add_argument("--slurm-sbatch-args", default="", metavar="ARGS",
                   help="more sbatch options for every job, e.g. '--qos=high --account=lab'")
    g.add_argument("--slurm-folder", default=None, metavar="DIR",
                   help="submitit's folder: each job's script, logs and result (default OUT/slurm/jobs)")
    return p


def launch_options(args, out: str):
    """The launcher settings of the command line: (GPU ids, SlurmOptions or None); ValueError
    with one line naming the problem and the fix. Nothing is submitted or started before this."""
    slurm_flags = [f"--{k.replace('_', '-')}" for k in ("slurm_partition", "slurm_time", "slurm_gpus_per_run",
                                                        "slurm_cpus_per_run", "slurm_mem_gb", "slurm_folder")
                   if getattr(args, k) is not None] + (["--slurm-sbatch-args"] if args.slurm_sbatch_args else [])
    if args.launcher == "local":
        if slurm_flags:
            raise ValueError(f"{slurm_flags[0]} needs --launcher slurm (the runs go to this machine otherwise)")
        if args.gpus is None:
            return [], None
        gpus = launchers.parse_gpus(args.gpus)
        if args.jobs is not None and args.jobs != len(gpus):
            raise ValueError(f"--jobs {args.jobs} with --gpus {args.gpus}: one run per GPU, so {len(gpus)} at a time; "
                             "leave --jobs out")
        why = launchers.check_gpus(gpus)
        if why:
            raise ValueError(why)
        return gpus, None
    if args.gpus is not None:
        raise ValueError("--gpus is for the local launcher; under Slurm each job gets its GPUs from the scheduler: "
                         "use --slurm-gpus-per-run")
    for flag, value in (("--slurm-time", args.slurm_time), ("--slurm-cpus-per-run", args.slurm_cpus_per_run)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if args.slurm_gpus_per_run is not None and args.slurm_gpus_per_run < 0:
        raise ValueError(f"--slurm-gpus-per-run must be 0 or more, got {args.slurm_gpus_per_run}")
    full = args.scale == "full"
    opts = launchers.SlurmOptions(
        folder=args.slurm_folder or os.path.join(out, "slurm", "jobs"), partition=args.slurm_partition,
        time_min=args.slurm_time,
        gpus_per_run=args.slurm_gpus_per_run if args.slurm_gpus_per_run is not None else (1 if full else 0),
        cpus_per_run=args.slurm_cpus_per_run or args.threads or (8 if full else 1), mem_gb=args.slurm_mem_gb,
        sbatch=launchers.parse_sbatch_args(args.slurm_sbatch_args))
    if not args.dry_run:
        why = launchers.check_slurm(args.slurm_partition)
        if why:
            raise ValueError(why)
    return [], opts


def dry_run(st: Study) -> int:
    for r in st.runs:
        cmd = st.command(r) or ["(in-process)"]
        done = " [done]" if st.is_done(r.id) else ""
        if st.slurm_opts:
            o = st.slurm_opts
            done += (f" [Slurm job: {launchers.time_limit(o, r.est_s)} min, {o.cpus_per_run} CPU(s), "
                     f"{o.gpus_per_run} GPU(s)]")
        deps = f" (after {', '.join(r.deps)})" if r.deps else ""
        console.result(f"{st.index[r.id]:>2}/{st.n_total} {r.id}{done}: {r.title}{deps}\n      "
              f"{' '.join(shlex.quote(c) for c in cmd)}")
    total = sum(r.est_s for r in st.runs)
    span = study_plan.estimate_makespan(st.runs, st.jobs)
    console.result(f"estimated: {fmt_dur(total)} of run time, about {fmt_dur(span)} on {st.jobs} job slot(s) "
          f"({st.seeds_text()}; first estimates from the speeds in study/speeds.py)")
    console.result(study_plan.plan_time_line(st.scale_name, st.runs, st.jobs))
    return 0


def main(argv=None) -> int:
    import logging

    import matplotlib

    from lskd_fairseq.warning_filters import silence_known_warnings

    matplotlib.use("Agg")
    silence_known_warnings()
    for name in ("matplotlib", "PIL", "fairseq", "lskd_fairseq", "sacrebleu"):
        logging.getLogger(name).setLevel(logging.WARNING)
    parser = build_parser()
    args = parser.parse_args(argv)
    console.configure(quiet=args.quiet)
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.data is not None and not os.path.isdir(args.data):
        console.error("lskd-study", f"--data {args.data}: no such folder (give the folder that holds "
                      "cifar10/ and multi30k/)")
        return 2
    out = args.out or os.path.join(study_plan.REPO, "runs", f"study-{args.scale}")
    if not args.dry_run:
        try:
            integrity.check_output_dir(out, "--out")
            if args.nmt_work:
                integrity.check_output_dir(args.nmt_work, "--nmt-work")
        except integrity.OutputError as e:
            console.error("lskd-study", str(e))
            return 2
    tracks = (args.only,) if args.only else ("nmt", "vision")
    select = [g for g in (args.runs or "").split(",") if g.strip()] or None
    try:
        gpus, slurm = launch_options(args, os.path.abspath(out))
        st = Study(args.scale, out, jobs=args.jobs, tracks=tracks, nmt_work=args.nmt_work, threads=args.threads,
                   heartbeat_s=args.heartbeat, reuse_vision=args.reuse_vision, seeds=args.seeds, data_root=args.data,
                   select=select, gpus=gpus, slurm=slurm)
    except ValueError as e:
        console.error("lskd-study", str(e))
        return 2
    if args.dry_run:
        return dry_run(st)
    if args.report_only:
        return st.finish(report_only=True)
    missing = st.missing_data()
    if missing:
        console.error("lskd-study", f"data not found: {', '.join(missing)}. Point the study at the folder that "
                      f"holds cifar10/ and multi30k/ with --data DIR or LSKD_SHARED_DATA=DIR (looked in "
                      f"{st.data['root']}), or run one track with --only.")
        return 2

    def _term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    try:
        return st.run()
    except KeyboardInterrupt:
        st.kill()
        if st.slurm:
            st.log("interrupted: the submitted Slurm jobs go on; run the same command again to follow them "
                   "(nothing is submitted twice)")
        else:
            st.log("interrupted: finished runs keep their markers; run the same command again to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
