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
from lskd_study import study_plan
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
    p.add_argument("--heartbeat", type=float, default=30.0, help="seconds between progress lines")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress lines on the terminal (logs/study.log keeps them all); results and errors only")
    return p


def dry_run(st: Study) -> int:
    for r in st.runs:
        cmd = st.vision_cmd(r) if r.kind == "vision_train" else st.recipe_cmd(r) if r.kind == "recipe_stage" \
            else ["(in-process)"]
        done = " [done]" if st.is_done(r.id) else ""
        deps = f" (after {', '.join(r.deps)})" if r.deps else ""
        console.result(f"{st.index[r.id]:>2}/{st.n_total} {r.id}{done}: {r.title}{deps}\n      "
              f"{' '.join(shlex.quote(c) for c in cmd)}")
    total = sum(r.est_s for r in st.runs)
    span = study_plan.estimate_makespan(st.runs, st.jobs)
    console.result(f"estimated: {fmt_dur(total)} of run time, about {fmt_dur(span)} on {st.jobs} job slot(s) "
          f"({len(st.seeds)} seed(s); first estimates, see study_plan.py)")
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
    st = Study(args.scale, out, jobs=args.jobs, tracks=tracks, nmt_work=args.nmt_work, threads=args.threads,
               heartbeat_s=args.heartbeat, reuse_vision=args.reuse_vision, seeds=args.seeds, data_root=args.data)
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
        st.log("interrupted: finished runs keep their markers; run the same command again to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
