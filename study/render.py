"""report.md: the collected measurements, the verdicts and the figures as markdown.

Pure formatting: every number comes from ``collect``, every verdict from
``verdicts``, every figure from ``report_figures``.
"""

import json
import os
import time
from typing import Dict, List, Optional

from . import paper_numbers
from . import speeds, study_plan
from .study_plan import fmt_dur
from .collect import (CACHE_SAVINGS_HOW, NMT_NAMES, acc, accounts, bleu, cache_savings, cache_savings_line, load_json, ran_on,
                      ls_convention, mean_std_text, paired, seed_values)
from .stats import INCONCLUSIVE, paired_diffs, t_interval
from .verdicts import MARGINS_WHY, Row, interval_text

BUDGET_S = speeds.BUDGET_S


def f2(x, nd=2, pct=False) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "–"
    return f"{x:.{nd}f}" + ("%" if pct else "")


def table(header: List[str], rows: List[List]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _seed_ms(table_: Dict, base: str, seeds, value=acc, nd=2) -> str:
    return mean_std_text(list(seed_values(table_, base, seeds, value).values()), nd)


# ------------------------------------------------------------------ sections
def header(study, L: List[str]) -> None:
    L.append(f"# lskd study report: does a label-smoothed teacher distill worse? (scale `{study.scale_name}`)")
    L.append("")
    L.append(f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `lskd-study --scale "
             f"{study.scale_name} --seeds {study.base_seeds}` into `{study.out}`. Paper: {paper_numbers.PAPER}; "
             "published numbers transcribed in `study/paper_numbers.py`.")
    L.append("")
    if study.scale_name == "smoke":
        L.append("> **Smoke scale: nothing can be concluded from these numbers.** The models see a few hundred "
                 "images or sentences for one epoch or a dozen updates; this run only checks that every step, "
                 "table and figure is produced end to end on real data. Every claim below is therefore marked "
                 "*inconclusive*.")
    else:
        L.append("> " + study.scale.note)
    L.append("")
    L.append(precision_line(study))
    L.append("")
    missing = [r.id for r in study.runs if not study.is_done(r.id)]
    if missing or study.failed:
        L.append(f"**Incomplete:** {len(missing)} of {len(study.runs)} runs have not finished: {', '.join(missing)}"
                 + (f" (failed or not started after a failure in this invocation: {', '.join(study.failed)}; "
                    "see `logs/`)" if study.failed else "")
                 + ". Tables show what exists; rerun the same command to resume.")
        L.append("")


def precision_line(study) -> str:
    """The precision and memory format the runs recorded (config.json), against the plan's."""
    seen = {}
    for r in study.runs:
        if r.kind in ("vision_train", "vision_cache"):
            cfg = load_json(os.path.join(study.vision_dir(r.id.split("/", 1)[1]),
                                         "config.json" if r.kind == "vision_train" else "cache.json")) or {}
            key = (cfg.get("precision", "float32"), cfg.get("memory_format", "contiguous"))
            if cfg:
                seen[key] = seen.get(key, 0) + 1
    recorded = "; ".join(f"{n} run(s) in {p} ({mf})" for (p, mf), n in sorted(seen.items())) or "none yet"
    return (f"**Precision:** the plan chose `{speeds.PRECISION}` for CPU runs "
            f"({speeds.precision_reason()}). Vision runs recorded: {recorded}. NMT: the recipe's "
            f"`BF16={study.scale.nmt.recipe_options.get('BF16', 'auto')}`.")


def claims_section(rows: List[Row], L: List[str]) -> None:
    L.append("## Claims")
    L.append("")
    L.append(table(["claim (paper)", "verdict", "measured here", "interval", "n", "test"],
                   [[r.claim, f"**{r.verdict}**", r.measured, r.interval, r.n, r.test] for r in rows]))
    L.append("")
    open_rows = [r for r in rows if r.verdict == INCONCLUSIVE and r.change]
    if open_rows:
        L.append("What would change the inconclusive verdicts (estimated from the measured mean and spread):")
        L.append("")
        for r in open_rows:
            L.append(f"- **{r.key}**: {r.change}.")
        L.append("")
    L.append("Verdicts: *reproduced*; *contradicted* (significant in the opposite direction); *equivalent within "
             "±m* (a two one-sided tests equivalence at 5%); *inconclusive* (none of these; a non-significant "
             "difference is never read as 'as good'). Students are compared by their paired difference per seed "
             "(the LS teacher's student minus the no-LS teacher's student, same seed: same initialisation, data "
             "order and augmentations); the t-interval over seeds measures seed-to-seed training noise. For "
             "BLEU, the paired bootstrap over test sentences (sacreBLEU's significance API) measures test-set "
             "noise only: which sentences were drawn into the test set. Teachers are trained once per setting, "
             "so claims about teachers rest on test-set noise or are descriptive, as their rows say.")
    L.append("")
    L.append(MARGINS_WHY)
    L.append("")


def time_section(study, L: List[str]) -> None:
    acc_ = accounts(study)
    L.append("## Time")
    L.append("")
    L.append(f"Runs finished: {acc_['runs']} of {acc_['planned']}. Sum of the runs' own wall times: "
             f"**{fmt_dur(acc_['sum_s'])}** ({acc_['sum_s'] / 3600:.2f} h). Makespan on the {acc_['jobs']} job "
             f"slot(s), from the runs' recorded start and end times: **{fmt_dur(acc_['makespan_s'])}** "
             f"({acc_['makespan_s'] / 3600:.2f} h, over {acc_['invocations']} invocation(s) of lskd-study; "
             "time between invocations is not counted).")
    if acc_["one_go_s"] is not None:
        L.append(f"The study ran in one go: its real wall time was **{fmt_dur(acc_['one_go_s'])}** "
                 f"({acc_['one_go_s'] / 3600:.2f} h). The README quotes this figure.")
    else:
        L.append("The study did not run in one go (it was resumed, reused runs, or is not finished), so it has "
                 "no real wall time; the README quotes the makespan.")
    if acc_["ran_on"]:
        L.append("")
        L.append("Where the runs ran: " + "; ".join(f"{where}: {n} run(s)" for where, n in acc_["ran_on"]) + ".")
    rows = cache_savings(study)
    if rows:
        L.append("")
        L.append(f"Teacher caches: {cache_savings_line(rows)}. {CACHE_SAVINGS_HOW}")
    span = study_plan.estimate_makespan(study.runs, study.jobs)
    total = sum(r.est_s for r in study.runs)
    if span > BUDGET_S and study.scale_name != "full":
        groups: Dict[str, float] = {}
        for r in study.runs:
            role = r.args.get("role") or ("teacher" if "teacher" in r.id and "seed" not in r.id else "")
            key = f"{r.track} {'teachers' if role == 'teacher' else 'students and other runs'}"
            groups[key] = groups.get(key, 0.0) + r.est_s
        L.append("")
        L.append(f"**Budget:** this plan's first estimate is {fmt_dur(total)} of run time, about "
                 f"{fmt_dur(span)} on {study.jobs} job slot(s): over the {BUDGET_S // 3600} h target. By group: "
                 + "; ".join(f"{k} {fmt_dur(s)}" for k, s in sorted(groups.items()))
                 + ". The estimates come from single-thread throughput measured on the 2-core machine "
                 "(`lskd_study.speeds.TRAIN_IMG_PER_S`); the measured times above replace them once the runs finish.")
    L.append("")


def teachers_section(study, d: Dict, L: List[str]) -> None:
    curves = d.get("teacher_curves") or []
    if not curves:
        return
    L.append("## Teachers' training: where each stopped and why")
    L.append("")
    rows = [[c["label"], c.get("best_epoch", "–"), c.get("last_epoch", "–"), c["why"], f2(c.get("test"))]
            for c in curves]
    L.append(table(["teacher", "kept epoch", "last epoch", "why it stopped / what was kept",
                    "test top-1 (%) / BLEU"], rows))
    L.append("")
    if study.scale_name == "cpu":
        L.append(teacher_targets_text(study, curves))
        L.append("")


# what the teachers were meant to reach at cpu scale (the study's design), and what each costs
TEACHER_TARGETS = {"vision": (88.0, "% top-1 (ResNet-20, CIFAR-10 test)"),
                   "nmt": (33.0, " BLEU (Multi30k test_2016_flickr)")}


def teacher_targets_text(study, curves: List[Dict]) -> str:
    """The teachers' targets, how far each finished teacher is from its target, and why."""
    v, n = study.scale.vision, study.scale.nmt
    parts = []
    for c in curves:
        track = c["label"].split("/", 1)[0]
        if track not in TEACHER_TARGETS or c["label"].startswith("vision/lt_") or c.get("test") is None:
            continue
        target, unit = TEACHER_TARGETS[track]
        gap = c["test"] - target
        parts.append(f"{c['label']} {c['test']:.2f} ({'meets it' if gap >= 0 else f'misses by {-gap:.2f}'})")
    cost = teacher_cost_text(study)
    return (f"Targets: CIFAR-10 teachers ≥ {TEACHER_TARGETS['vision'][0]:g}{TEACHER_TARGETS['vision'][1]}, "
            f"Multi30k teachers ≥ {TEACHER_TARGETS['nmt'][0]:g}{TEACHER_TARGETS['nmt'][1]}. Measured: "
            + ("; ".join(parts) if parts else "no teacher has finished") + ". " + cost)


def teacher_cost_text(study) -> str:
    """What each finished teacher cost, from its run record (done-marker seconds; images a second
    from its metrics.json), and the schedule the scale gave it. Only measured figures."""
    v, n = study.scale.vision, study.scale.nmt
    per_run = accounts(study)["per_run"]
    parts = []
    for name in ("teacher_nols", "teacher_ls"):
        m = load_json(os.path.join(study.vision_dir(name), "metrics.json"))
        secs = per_run.get(f"vision/{name}")
        if m and secs:
            imgs = (m.get("dataset") or {}).get("sizes", {}).get("train", 0) * int(m.get("epochs") or 0)
            speed = imgs / float(m["train_time_s"]) if m.get("train_time_s") else 0.0
            parts.append(f"vision/{name}: {m.get('epochs')} epochs in {fmt_dur(secs)} "
                         f"({speed:.0f} training images/s, {(m.get('config') or {}).get('precision', 'float32')})")
    for name in ("teacher_ls", "teacher_nols"):
        secs = per_run.get(f"nmt/{name}")
        if secs:
            parts.append(f"nmt/{name}: {fmt_dur(secs)}")
    return (f"Schedules: CIFAR-10 teachers {v.teacher_epochs} epochs (fixed, cosine); Multi30k teachers early-stopped "
            f"on validation BLEU, at most {n.recipe_options.get('MAX_UPDATE_TEACHER', n.max_update_teacher)} updates. "
            "Measured cost (this study's run records): " + ("; ".join(parts) if parts else "no teacher has finished")
            + ".")


def table1(study, d: Dict, L: List[str]) -> None:
    vm, vs, nm, ns = d["vision"], d["vstab"], d["nmt"], d["nstab"]
    v = study.scale.vision
    L.append("## Teachers with and without LS: accuracy and 1-S (compare: paper Table 1)")
    L.append("")
    L.append("1-S = (1/K) Σ_c (1/n_c) Σ_{i∈c} ‖p_i − p̄_c‖² on the test split (vision) or over the gold target tokens "
             f"of the validation split under teacher forcing, classes = the {study.scale.nmt.top_tokens} most frequent "
             "target tokens (NMT). Lower = more information erased.")
    L.append("")
    a, b = vm.get("teacher_nols"), vm.get("teacher_ls")
    sa, sb = vs.get("teacher_nols"), vs.get("teacher_ls")
    rows = [[f"**this study**: CIFAR-10 {v.teacher_arch}",
             f"{f2(acc(a))} / {f2(acc(a, 'top5'))}", f2(sa and sa['one_minus_S'], 4), f2(sa and sa['calibration']['ece'], 4),
             f"{f2(acc(b))} / {f2(acc(b, 'top5'))}", f2(sb and sb['one_minus_S'], 4), f2(sb and sb['calibration']['ece'], 4)]]
    ta, tb = ns.get("teacher_nols"), ns.get("teacher_ls")
    ra, rb = nm.get("teacher_nols"), nm.get("teacher_ls")
    if "nmt" in study.tracks:
        rows.append(["**this study**: Multi30k en-de transformer (BLEU / valid token acc.)",
                     f"{f2(bleu(ra))} / {f2(ta and ta['token_accuracy'])}", f2(ta and ta['one_minus_S'], 5),
                     f2(ta and ta['calibration']['ece'], 4),
                     f"{f2(bleu(rb))} / {f2(tb and tb['token_accuracy'])}", f2(tb and tb['one_minus_S'], 5),
                     f2(tb and tb['calibration']['ece'], 4)])
    for r in paper_numbers.TABLE1:
        rows.append([f"paper: ImageNet {r[0]}", f"{f2(r[1], 3)} / {f2(r[2], 3)}", f2(r[3], 4), "–",
                     f"{f2(r[4], 3)} / {f2(r[5], 3)}" if r[4] is not None else "–", f2(r[6], 4), "–"])
    L.append(table(["model", "top-1 / top-5 w/o LS", "1-S w/o LS", "ECE w/o LS", "top-1 / top-5 w/ LS",
                    "1-S w/ LS", "ECE w/ LS"], rows))
    L.append("")
    if sa and sb and sa.get("classes"):
        L.append("Per-class 1-S of the CIFAR-10 teachers (test split). Shen et al. argue that LS erases the "
                 "within-class variation mostly for classes that are easy to separate anyway:")
        L.append("")
        rows = []
        acc_n = (a or {}).get("test", {}).get("per_class_top1") or []
        acc_l = (b or {}).get("test", {}).get("per_class_top1") or []
        for c, name in enumerate(sa["classes"]):
            x, y = sa["per_class"][c], sb["per_class"][c]
            rows.append([name, f2(acc_n[c] if c < len(acc_n) else None, 1), f2(x, 4),
                         f2(acc_l[c] if c < len(acc_l) else None, 1), f2(y, 4),
                         f"{(y - x) / x * 100:+.0f}%" if x else "–"])
        L.append(table(["class", "top-1 w/o LS", "1-S w/o LS", "top-1 w/ LS", "1-S w/ LS", "change"], rows))
        L.append("")
    L.append("Müller et al.'s ECE for comparison: " + "; ".join(
        f"{k}: {x:.3f} → {y:.3f}" for k, (x, y) in paper_numbers.ECE.items()) + ".")
    L.append("")


def table2(study, d: Dict, L: List[str]) -> None:
    vm, vs, seeds = d["vision"], d["vstab"], d["seeds"]
    v = study.scale.vision
    L.append("## Distillation at T = 1, soft labels only (compare: paper Table 2)")
    L.append("")
    rows = []
    n_test = next((int(m["test"].get("num_images", 0)) for m in vm.values() if m.get("test")), 0)
    for t_name, label in (("nols", "w/o LS"), ("ls", "w/ LS")):
        t = vm.get(f"teacher_{t_name}")
        rows.append([f"**this study**: CIFAR-10 ({n_test or '–'} test images)", label,
                     f"{f2(acc(t))} / {f2(acc(t, 'top5'))}", v.student_arch,
                     f"{_seed_ms(vm, f'student_{t_name}_T1', seeds)} (std over seeds) / "
                     f"{_seed_ms(vm, f'student_{t_name}_T1', seeds, lambda m: acc(m, 'top5'))}"])
    rows.append(["**this study**: CIFAR-10", "(no teacher)", "–", f"{v.student_arch}, no KD",
                 f"{_seed_ms(vm, 'student_nokd', seeds)} / {_seed_ms(vm, 'student_nokd', seeds, lambda m: acc(m, 'top5'))}"])
    for r in paper_numbers.TABLE2:
        rows.append([f"paper: {r[0]}", "w/ LS" if r[1] else "w/o LS", f"{f2(r[2], 3)} / {f2(r[3], 3)}",
                     r[4], f"{f2(r[5], 3)} ± {f2(r[6], 3)} (std, n = 3) / {f2(r[7], 3)}"])
    L.append(table(["data", "teacher", "teacher top-1 / top-5", "student", "student top-1 / top-5 (mean ± std, n)"],
                   rows))
    L.append("")
    def loss(m):
        return ((m or {}).get("train_last_epoch") or {}).get("train_loss")

    ss, la, lb = paired(vm, "student_ls_T1", "student_nols_T1", seeds, value=loss)
    if ss:
        L.append(f"Last-epoch training loss of the students (the paper's Fig. 5 point; here the KD term "
                 f"T²·KL(teacher‖student), which leaves out the teacher's entropy that the paper's soft-label "
                 f"cross-entropy includes): {mean_std_text(la, 4)} (LS teacher) vs {mean_std_text(lb, 4)} (no-LS "
                 f"teacher); teachers' mean output entropy on the test split "
                 f"{f2((vs.get('teacher_ls') or {}).get('mean_entropy'), 4)} vs "
                 f"{f2((vs.get('teacher_nols') or {}).get('mean_entropy'), 4)} nats.")
        L.append("")


def temperature_section(study, d: Dict, L: List[str]) -> None:
    vm, nm, seeds = d["vision"], d["nmt"], d["seeds"]
    v = study.scale.vision
    L.append("## Student accuracy against temperature (compare: Chandrasegaran et al.)")
    L.append("")
    rows = []
    for t in sorted(set(v.temperatures) | set(paper_numbers.TEMPERATURE)):
        a, b = f"student_ls_{study_plan.t_tag(t)}", f"student_nols_{study_plan.t_tag(t)}"
        ours = t in v.temperatures
        ss, xa, xb = paired(vm, a, b, seeds) if ours else ([], [], [])
        diff = interval_text(t_interval(paired_diffs(xa, xb)), "superiority") if ss else "–"
        pp = paper_numbers.TEMPERATURE.get(t)
        rows.append([f"{t:g}", _seed_ms(vm, b, seeds) if ours else "–", _seed_ms(vm, a, seeds) if ours else "–",
                     diff, f2(pp and pp[0], 3), f2(pp and pp[1], 3), f"{pp[1] - pp[0]:+.2f}" if pp else "–"])
    L.append(table(["T", f"this study: student of teacher w/o LS (CIFAR-10 {v.student_arch})", "student of teacher w/ LS",
                    "w/ − w/o, paired by seed", "paper: w/o LS (ImageNet R50→R18)", "paper: w/ LS",
                    "paper: w/ − w/o"], rows))
    L.append("")
    pairs = [(1.0, "student_wordkd_ls", "student_wordkd_nols")] + study_plan.nmt_sweep_pairs(study.scale)
    if "nmt" in study.tracks and len(pairs) > 1:
        L.append(f"Multi30k word-level KD students (test BLEU, mean ± std over seeds; the recipe's KD settings "
                 f"otherwise, {study.scale.nmt.recipe_scale} scale):")
        L.append("")
        rows = []
        for t, a, b in pairs:
            ss, xa, xb = paired(nm, a, b, seeds, value=bleu)
            rows.append([f"{t:g}", _seed_ms(nm, b, seeds, bleu), _seed_ms(nm, a, seeds, bleu),
                         interval_text(t_interval(paired_diffs(xa, xb)), "superiority") if ss else "–"])
        L.append(table(["T", "student of teacher w/o LS", "student of teacher w/ LS", "w/ − w/o, paired by seed"], rows))
        L.append("")


def _shots(m: Optional[Dict]) -> str:
    t = (m or {}).get("test") or {}
    parts = [f"{g} {t[f'{g}_shot_top1']:.1f} ({t.get(f'{g}_shot_classes')} cl.)" for g in ("many", "medium", "few")
             if t.get(f"{g}_shot_top1") is not None and t.get(f"{g}_shot_classes")]
    return ", ".join(parts) or "–"


def long_tail_section(study, d: Dict, L: List[str]) -> None:
    v, vm, vs, seeds = study.scale.vision, d["vision"], d["vstab"], d["seeds"]
    f = v.long_tail_imbalance
    if not (f and f > 1) or "vision" not in study.tracks:
        return
    many, few = v.shot_thresholds
    L.append(f"## Long-tailed CIFAR-10, imbalance {f:g} (compare: paper appendix, whose numbers are not available here)")
    L.append("")
    L.append(f"The long-tailed training set keeps n_max·{f:g}^(−c/9) images of class c, n_max = a whole class "
             f"(no validation carve, the last epoch is kept: CIFAR-10-LT); the test set stays balanced. Shot groups: "
             f"many > {many}, few < {few} training images, medium otherwise. With 10 classes the ImageNet-LT "
             "thresholds (100/20) leave the few-shot group empty and put 8 classes in many-shot; these split the "
             "classes about 3/4/3. Only non-empty groups are shown.")
    L.append("")
    rows = []
    for pre, setname in (("", "balanced"), ("lt_", f"long-tailed ({f:g})")):
        for role, name_ls, name_no in (("teacher", "teacher_ls", "teacher_nols"),
                                       ("student (T=1)", "student_ls_T1", "student_nols_T1")):
            for name, lab in ((name_no, "w/o LS"), (name_ls, "w/ LS")):
                arch = v.teacher_arch if role == "teacher" else v.student_arch
                if role == "teacher":
                    m = vm.get(pre + name)
                    top1, shots = f2(acc(m)), _shots(m)
                    s1 = f2((vs.get(pre + name) or {}).get("one_minus_S"), 4)
                else:
                    m = vm.get(study_plan.seed_name(pre + name, seeds[0]))
                    top1, shots = _seed_ms(vm, pre + name, seeds), _shots(m) + f" (seed {seeds[0]})"
                    s1 = _seed_ms(vs, pre + name, seeds, lambda x: (x or {}).get("one_minus_S"), 4)
                n_train = sum((m or {}).get("dataset", {}).get("train_counts") or []) or "–"
                rows.append([setname, f"{role} {arch}", lab, n_train, top1, shots, s1])
    L.append(table(["training set", "model", "teacher trained", "train images", "test top-1", "shot groups top-1",
                    "1-S"], rows))
    L.append("")


def nmt_section(study, d: Dict, L: List[str]) -> None:
    nm, ns, seeds = d["nmt"], d["nstab"], d["seeds"]
    if "nmt" not in study.tracks:
        return
    L.append("## Multi30k en-de NMT (compare: Shen et al. IWSLT14 curves; Chandrasegaran et al. WMT En-De)")
    L.append("")
    labels = {
        "teacher_ls": ("teacher", "–", "LS 0.1"), "teacher_nols": ("teacher", "–", "no LS"),
        "student_nokd": ("student", "none", ""), "student_wordkd_ls": ("student", "word-level, T=1", "LS teacher"),
        "student_wordkd_nols": ("student", "word-level, T=1", "no-LS teacher"),
        "student_seqkd_ls": ("student", "sequence-level", "LS teacher"),
        "student_seqkd_nols": ("student", "sequence-level", "no-LS teacher"),
    }
    rows = []
    for name in NMT_NAMES:
        role, kd, what = labels[name]
        if role == "teacher":
            r, s = nm.get(name), ns.get(name)
            rows.append([name, role, kd, what, (r or {}).get("num_updates", "–"), f2(bleu(r)), f2(r and r.get("chrf")),
                         f2(s and s["one_minus_S"], 5), f2(s and s["calibration"]["ece"], 4)])
            continue
        first = nm.get(study_plan.seed_name(name, seeds[0]))
        kd = (first or {}).get("kd") if (first or {}).get("kd") not in (None, "–") else kd
        s = ns.get(study_plan.seed_name(name, seeds[0]))
        rows.append([name, role, kd, what, (first or {}).get("num_updates", "–"), _seed_ms(nm, name, seeds, bleu),
                     _seed_ms(nm, name, seeds, lambda r: (r or {}).get("chrf")),
                     f2(s and s["one_minus_S"], 5), f2(s and s["calibration"]["ece"], 4)])
    L.append(table(["model", "role", "KD", "teacher / LS", "updates (first seed)", "test BLEU (students: mean ± std)",
                    "chrF", "1-S (valid, tokens; first seed)", "token ECE"], rows))
    L.append("")
    ups = {k: r.get("num_updates") for k, r in nm.items() if k.startswith("student") and isinstance(r.get("num_updates"), int)}
    if len(ups) > 1 and max(ups.values()) > 1.2 * min(ups.values()):
        L.append("**Unequal training:** students trained for " + ", ".join(f"{n} {u}" for n, u in sorted(ups.items()))
                 + " updates (a wall-clock cap or early stopping set outside the study's scale): differences between "
                   "such students mix the method with the training length.")
        L.append("")
    L.append(f"Paper numbers: Shen et al. report IWSLT14 De→En only as curves (LS teacher and its student reach "
             f"higher BLEU). Chandrasegaran et al., WMT En→De: teacher {paper_numbers.NMT_WMT_TEACHER_BLEU[0]} (w/o LS) "
             f"vs {paper_numbers.NMT_WMT_TEACHER_BLEU[1]} (w/ LS); student at T=1 {paper_numbers.NMT_WMT_STUDENT_BLEU_T1[0]} "
             f"vs {paper_numbers.NMT_WMT_STUDENT_BLEU_T1[1]}. Kim & Rush: sequence-level KD +{paper_numbers.SEQKD_GAIN[0]} "
             f"BLEU (greedy) / +{paper_numbers.SEQKD_GAIN[1]} (beam) over a no-KD student.")
    sig = next((r.get("bleu_signature") for r in nm.values() if r.get("bleu_signature")), None)
    if sig:
        L.append(f"sacreBLEU signature: `{sig}`.")
    L.append("")


CAPTIONS = {
    "projection": "Fig. 1 (Müller et al.'s visualisation): penultimate activations of {classes} on the plane through "
                  "their classifier templates (the classifier's weight rows; plane origin = first template, "
                  "orthonormal basis by Gram–Schmidt of t2−t1, t3−t1), teacher with LS vs without.",
    "mean_softmax": "Fig. 4: per-class mean softmax vectors of the two teachers (log colour scale).",
    "curves_vision": "Fig. 5 (vision): the first seed's students' training loss and validation accuracy per epoch.",
    "curves_nmt": "Fig. 5 (NMT): the first seed's word-level KD students' training loss and validation metric.",
    "temperature": "CIFAR-10 student test accuracy against the KD temperature, mean ± std over seeds.",
    "temperature_nmt": "Multi30k word-level KD students' test BLEU against the KD temperature, mean ± std over seeds.",
    "reliability_vision": "Reliability diagrams (ECE) of the vision teachers.",
    "reliability_nmt": "Reliability diagrams (token-level ECE, validation split) of the NMT teachers.",
    "seeds": "Every seed's result: each line joins the two students of one seed (the paired differences the "
             "verdicts use); bars are the means.",
    "teachers": "Teachers' validation curves: the kept checkpoint (star) and where training stopped (dashed).",
}


def figures_section(d: Dict, figs: Dict, L: List[str]) -> None:
    L.append("## Figures")
    L.append("")
    for k, p in figs.items():
        cap = CAPTIONS[k].format(classes="/".join(d.get("projection_classes") or ["three classes"]))
        if p is None:
            L.append(f"- {cap} **Not drawn: {d['not_drawn'].get(k, 'no data')}.**")
        else:
            L.append(f"- {cap}  \n  ![{k}]({os.path.basename(p)})")
    L.append("")
    if d.get("projection"):
        L.append("Projection summary (spread = RMS distance to the class centre in the plane; ratio = centre "
                 "distance / mean spread):")
        L.append("")
        L.append("```")
        L.append(json.dumps(d["projection"], indent=1))
        L.append("```")
        L.append("")


def runs_section(study, d: Dict, L: List[str]) -> None:
    L.append("## Runs")
    L.append("")
    rows = []
    for r in study.runs:
        m = load_json(study.marker(r.id))
        st = "done" if m else ("failed" if r.id in study.failed else "not finished")
        if r.kind == "vision_train":
            conv = ls_convention(d["vision"].get(r.id.split("/", 1)[1])) or study.scale.vision.ls_convention
        elif r.kind == "recipe_stage" and ("teacher" in r.id or "student" in r.id):
            conv = "fairseq (ε/(K−1))"
        else:
            conv = "–"
        seed = r.args.get("seed")
        rows.append([r.id, r.title, seed if seed else "–", conv, st, f"{m['seconds']:.0f} s" if m else "–",
                     ran_on(m) if m else "–"])
    L.append(table(["run", "what", "seed", "LS convention", "status", "wall time", "ran on"], rows))
    L.append("")
    L.append("LS conventions: *uniform* spreads ε over all K classes (ε/K each, torch's and torchvision's "
             "`label_smoothing`); *fairseq* spreads it over the K−1 wrong classes (fairseq's "
             "`label_smoothed_cross_entropy`).")
    L.append("")
    tc = next((m.get("config") for k, m in d["vision"].items() if "teacher" in k and m.get("config")), None)
    sc = next((m.get("config") for k, m in d["vision"].items() if "student" in k and m.get("config")), None) or {}
    v = study.scale.vision
    if tc:  # the settings the runs recorded (they win over the current scale definition)
        sizes = (tc.get("dataset") or {}).get("sizes", {})
        L.append(f"Vision settings (from the runs' configs): teacher {tc.get('arch')} ({tc.get('epochs')} epochs, "
                 f"train / val / test images {sizes.get('train')} / {sizes.get('val')} / {sizes.get('test')}), "
                 f"student {sc.get('arch', v.student_arch)} ({sc.get('epochs', v.student_epochs)} epochs), batch "
                 f"{tc.get('batch_size')}, {tc.get('opt')} lr {tc.get('lr')} (Nesterov {tc.get('nesterov')}) "
                 f"{tc.get('sched')} with {tc.get('warmup_epochs')} warm-up epoch(s), weight decay "
                 f"{tc.get('weight_decay')}, LS {v.label_smoothing} ({tc.get('ls_convention')} convention), students: "
                 f"KD alpha {sc.get('kd_alpha', 1)} (soft labels only), from "
                 f"`{os.path.realpath(tc['data']) if tc.get('data') else None}`.")
    elif "vision" in study.tracks:
        L.append(f"Vision settings (scale definition; no run finished yet): teacher {v.teacher_arch} "
                 f"({v.teacher_epochs} epochs), student {v.student_arch} ({v.student_epochs} epochs), batch "
                 f"{v.batch_size}, SGD lr {v.lr} cosine, LS {v.label_smoothing} ({v.ls_convention} convention), "
                 "KD alpha 1 (soft labels only).")
    if "nmt" in study.tracks:
        L.append(f"NMT: `recipes/multi30k/run.sh --scale {study.scale.nmt.recipe_scale} --seed N` (work folder "
                 f"`{study.nmt_work}`: teachers trained once, seed N's students named `<name>_sN` there, seed 1's "
                 "by their plain names; settings in its logs; LS in the fairseq convention).")
    L.append("")


def render(study, d: Dict, rows: List[Row], figs: Dict) -> str:
    L: List[str] = []
    header(study, L)
    claims_section(rows, L)
    time_section(study, L)
    teachers_section(study, d, L)
    table1(study, d, L)
    table2(study, d, L)
    temperature_section(study, d, L)
    long_tail_section(study, d, L)
    nmt_section(study, d, L)
    figures_section(d, figs, L)
    runs_section(study, d, L)
    return "\n".join(L)


def any_model(d: Dict) -> bool:
    return bool(d["vision"] or d["nmt"])

