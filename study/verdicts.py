"""The study's verdicts: one small function per claim of the paper, driven by ``CLAIMS``.

Each function reads the collected measurements (``collect.collect``) and returns a
:class:`Row`: the verdict, the numbers, the interval, n and the test used, and for
an inconclusive claim what would change it. The statistics are in ``stats.py``:
students are compared by their per-seed paired differences (LS-teacher student
minus no-LS-teacher student) with a Student-t interval over seeds; "as good or
better" is a non-inferiority test against a declared margin, "higher" a
superiority test with equivalence (TOST) as its other decided outcome.
Teachers are trained once per setting, so claims about teachers can only use
test-set noise (a paired bootstrap for BLEU, a sign test over classes for 1-S)
or are descriptive; each row says which.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import paper_numbers
from . import study_plan
from .collect import acc, bleu, mean_std_text, paired
from .stats import (CONTRADICTED, INCONCLUSIVE, NOT_TESTED, REPRODUCED, Interval, flip, is_equivalent,
                    noninferiority, paired_diffs, seeds_needed, sign_test, superiority, t_interval)

# Declared margins: the smallest difference that counts. The paper's student effects are
# 0.4-1.3 points of top-1 (Table 2: ImageNet 71.43 -> 71.82, CUB 77.12 -> 78.38); a margin of
# 0.5 points is about the smallest of them, so "as good within 0.5" still rules out a loss of
# the size the paper reports as gains. For BLEU, 0.5 is the usual size of run-to-run noise on a
# test set of about 1,000 sentences, so a smaller margin could not be met with a few seeds.
VISION_MARGIN = 0.5
NMT_MARGIN = 0.5
MARGINS_WHY = (
    f"Margins: {VISION_MARGIN:g} points of top-1 (vision) and {NMT_MARGIN:g} BLEU (NMT). The paper's student "
    "effects are 0.4–1.3 points (Table 2: ImageNet 71.43 → 71.82, CUB 77.12 → 78.38), so a margin of 0.5 is "
    "about the smallest of them: a student that is 'as good within 0.5' cannot have lost as much as the paper "
    "reports as gains. For BLEU, 0.5 is about the run-to-run noise of a model on a test set of 1,000 "
    "sentences, so a smaller margin could not be cleared with a handful of seeds."
)
ALPHA = 0.05
# Teachers must have learned something for any comparison to mean anything.
MIN_VISION_TOP1_OVER_CHANCE = 3.0
MIN_NMT_TEACHER_BLEU = 5.0
# descriptive claims on single teachers
ECE_MIN_DIFF = 0.005
CLUSTER_RATIO = 1.1

NI_TEST = "non-inferiority, paired by seed: one-sided 95% t lower bound above −{m:g}"
SUP_TEST = ("superiority, paired by seed: 95% t-interval excludes 0; else equivalence (TOST: 90% interval "
            "inside ±{m:g})")


@dataclass
class Row:
    key: str
    claim: str
    verdict: str
    measured: str
    interval: str = "–"
    n: str = "–"
    test: str = "–"
    change: str = ""


@dataclass
class Context:
    scale_name: str
    scale: study_plan.Scale
    d: Dict
    seeds: List[int]

    @property
    def vm(self) -> Dict:
        return self.d["vision"]

    @property
    def nm(self) -> Dict:
        return self.d["nmt"]


# ------------------------------------------------------------------ helpers
def interval_text(iv: Interval, kind: str, unit: str = "") -> str:
    if not iv.has_interval:
        return f"{iv.mean:+.2f}{unit} (one seed: no interval)"
    if kind == "noninferiority":
        return f"{iv.mean:+.2f}{unit}; one-sided 95% lower bound {iv.lo_one:+.2f} (95% CI [{iv.lo95:+.2f}, {iv.hi95:+.2f}])"
    return f"{iv.mean:+.2f}{unit}; 95% CI [{iv.lo95:+.2f}, {iv.hi95:+.2f}]; 90% CI [{iv.lo_one:+.2f}, {iv.hi_one:+.2f}]"


def change_text(iv: Optional[Interval], kind: str, margin: float) -> str:
    """What would change an inconclusive verdict, estimated from the measured mean and sd."""
    if iv is None or not iv.has_interval:
        return "needs at least 2 seeds (--seeds) for an interval over seeds"
    if iv.sd == 0:
        return "the seeds agree exactly (sd 0): more seeds would show their spread"
    if kind == "noninferiority":
        need = f"a margin of {-iv.lo_one:.2f} at these {iv.n} seeds"
        if iv.mean <= -margin:
            return f"the mean difference {iv.mean:+.2f} is below −{margin:g}: more seeds would contradict the claim " \
                   f"rather than reproduce it; it would need {need}"
        n = seeds_needed(iv, -margin, one_sided=True)
        seeds = f"about {n} seeds" if n else "more than 500 seeds"
        return f"{seeds} at the measured sd {iv.sd:.2f} for the lower bound to clear −{margin:g}, or {need}"
    n = seeds_needed(iv, 0.0, one_sided=False)
    seeds = f"about {n} seeds" if n else "more than 500 seeds (the mean is about 0)"
    tost = max(abs(iv.lo_one), abs(iv.hi_one))
    return (f"{seeds} at the measured mean {iv.mean:+.2f} and sd {iv.sd:.2f} for the 95% interval to exclude 0; "
            f"equivalence would need a margin of {tost:.2f}")


def combine(verdicts: Sequence[str]) -> Tuple[str, str]:
    """One verdict from several tracks: the decided one when only one kind was decided."""
    decided = {v for v in verdicts if v != INCONCLUSIVE}
    if len(decided) == 1:
        v = decided.pop()
        return v, (" (one track is inconclusive; the verdict is the other's)" if INCONCLUSIVE in verdicts else "")
    if len(decided) > 1:
        return INCONCLUSIVE, " (the tracks disagree)"
    return INCONCLUSIVE, ""


def vision_trained(vm: Dict, names=("teacher_ls", "teacher_nols")) -> Tuple[bool, str]:
    k = next((((vm.get(n) or {}).get("config") or {}).get("num_classes") for n in names
              if ((vm.get(n) or {}).get("config") or {}).get("num_classes")), None) or 10
    chance = 100.0 / k
    weak = [f"{n} {acc(vm.get(n)):.1f}%" for n in names
            if acc(vm.get(n)) is not None and acc(vm.get(n)) < MIN_VISION_TOP1_OVER_CHANCE * chance]
    if weak:
        return False, f"teachers barely trained ({', '.join(weak)}; chance {chance:.0f}%)"
    return True, ""


def nmt_trained(nm: Dict) -> Tuple[bool, str]:
    b = [nm[k]["bleu"] for k in ("teacher_ls", "teacher_nols") if k in nm]
    if b and min(b) < MIN_NMT_TEACHER_BLEU:
        return False, f"teachers below {MIN_NMT_TEACHER_BLEU:g} BLEU: too weak to compare"
    return True, ""


def bootstrap(ctx: Context, a: str, b: str) -> Optional[Dict]:
    """sacreBLEU's paired bootstrap of two NMT results (memoised in the collected data)."""
    from .bootstrap import compare_results

    memo = ctx.d.setdefault("bootstrap", {})
    if (a, b) not in memo:
        memo[(a, b)] = compare_results(ctx.nm[a], ctx.nm[b]) if a in ctx.nm and b in ctx.nm else None
    return memo[(a, b)]


def bootstrap_verdict(bs: Optional[Dict]) -> str:
    if bs is None:
        return INCONCLUSIVE
    if bs["p_value"] < ALPHA and bs["diff"] > 0:
        return REPRODUCED
    if bs["p_value"] < ALPHA and bs["diff"] < 0:
        return CONTRADICTED
    return INCONCLUSIVE


def bootstrap_text(bs: Optional[Dict]) -> str:
    if bs is None:
        return "no bootstrap (hypothesis files missing)"
    return f"{bs['diff']:+.2f} BLEU, paired bootstrap p = {bs['p_value']:.3f} over {bs['n_sentences']} sentences"


BOOTSTRAP_TEST = ("paired bootstrap over test sentences (sacreBLEU significance API, 1000 resamples, two-sided "
                  "5%): measures test-set noise only")


def _seed_bootstraps(ctx: Context, a: str, b: str, seeds: Sequence[int]) -> str:
    parts = []
    for s in seeds:
        bs = bootstrap(ctx, study_plan.seed_name(a, s), study_plan.seed_name(b, s))
        if bs is not None:
            parts.append(f"seed {s}: p = {bs['p_value']:.3f}")
    return ("; test-set paired bootstrap per seed (test-set noise only): " + ", ".join(parts)) if parts else ""


# ------------------------------------------------------------------ claims
def claim_erasure(ctx: Context) -> Row:
    parts, verdicts, ns = [], [], []
    for label, st, (ok, why) in (("CIFAR-10 teachers", ctx.d["vstab"], vision_trained(ctx.vm)),
                                 ("Multi30k teachers (token level)", ctx.d["nstab"], nmt_trained(ctx.nm))):
        a, b = st.get("teacher_ls"), st.get("teacher_nols")
        if not (a and b):
            continue
        pa, pb = np.asarray(a["per_class"], dtype=float), np.asarray(b["per_class"], dtype=float)
        ok_c = ~(np.isnan(pa) | np.isnan(pb))
        lower, higher = int((pa[ok_c] < pb[ok_c]).sum()), int((pa[ok_c] > pb[ok_c]).sum())
        k = lower + higher
        p_lower, p_higher = sign_test(lower, k), sign_test(higher, k)
        if not ok:
            v = INCONCLUSIVE
        elif p_lower < ALPHA and a["one_minus_S"] < b["one_minus_S"]:
            v = REPRODUCED
        elif p_higher < ALPHA and a["one_minus_S"] > b["one_minus_S"]:
            v = CONTRADICTED
        else:
            v = INCONCLUSIVE
        verdicts.append(v)
        ns.append(f"{k} classes")
        parts.append(f"{label}: 1-S {a['one_minus_S']:.4f} with LS vs {b['one_minus_S']:.4f} without, lower with "
                     f"LS in {lower} of {k} classes (p = {min(p_lower, p_higher):.3g})" + (f"; {why}" if why else ""))
    if not verdicts:
        return Row("erasure", paper_numbers.CLAIMS["erasure"], INCONCLUSIVE, "teachers' stability results missing")
    v, note = combine(verdicts)
    return Row("erasure", paper_numbers.CLAIMS["erasure"], v, "; ".join(parts) + note, "–",
               "1 teacher per setting; " + ", ".join(ns), "one-sided sign test over classes (5%)",
               "" if v != INCONCLUSIVE else "more classes or teachers trained with more seeds")


def claim_clusters(ctx: Context) -> Row:
    text = ("LS makes clusters tighter and, for semantically similar classes, separates their centres further "
            "relative to their spread (Müller et al.; Shen et al. Sec. 3)")
    pr = ctx.d.get("projection")
    if not pr:
        return Row("clusters", text, INCONCLUSIVE, "no projection data")
    names = ctx.d.get("projection_classes", ["a", "b", "c"])
    keys = list(pr.keys())
    s_ls, s_no = pr[keys[0]], pr[keys[1]]
    pair = next(iter(s_ls["separation_ratio"]))  # first pair = the two similar classes
    r_ls, r_no = s_ls["separation_ratio"][pair], s_no["separation_ratio"][pair]
    v = REPRODUCED if r_ls > CLUSTER_RATIO * r_no else CONTRADICTED if r_ls < r_no / CLUSTER_RATIO else INCONCLUSIVE
    ok, why = vision_trained(ctx.vm)
    if not ok:
        v = INCONCLUSIVE
    ev = (f"projection of {'/'.join(names)}: centre distance / spread of {names[0]}-{names[1]} {r_ls:.2f} with LS "
          f"vs {r_no:.2f} without" + (f"; {why}" if why else ""))
    return Row("clusters", text, v, ev, "–", "1 teacher per setting",
               f"descriptive: a ratio change under {100 * (CLUSTER_RATIO - 1):.0f}% is called inconclusive",
               "" if v != INCONCLUSIVE else "teachers trained with more seeds")


def claim_kd_t1(ctx: Context) -> Row:
    m = VISION_MARGIN
    seeds, a, b = paired(ctx.vm, "student_ls_T1", "student_nols_T1", ctx.seeds)
    test = NI_TEST.format(m=m)
    if not seeds:
        return Row("kd_t1", paper_numbers.CLAIMS["kd_t1"], INCONCLUSIVE, "students at T=1 missing", test=test)
    iv = t_interval(paired_diffs(a, b))
    v = noninferiority(iv, m)
    ok, why = vision_trained(ctx.vm)
    v = v if ok else INCONCLUSIVE
    nokd = [x for x in (acc(ctx.vm.get(study_plan.seed_name("student_nokd", s))) for s in ctx.seeds) if x is not None]
    ev = (f"CIFAR-10 student top-1 {mean_std_text(a)} (LS teacher) vs {mean_std_text(b)} (no-LS teacher)"
          + (f"; student without KD {mean_std_text(nokd)}" if nokd else "") + (f"; {why}" if why else ""))
    return Row("kd_t1", paper_numbers.CLAIMS["kd_t1"], v, ev, interval_text(iv, "noninferiority", " points"),
               f"{iv.n} seeds", test, change_text(iv, "noninferiority", m) if v == INCONCLUSIVE else "")


def claim_fig5(ctx: Context, kd_t1: Row) -> Row:
    """The paper's soft-label loss is KL + H(teacher); lskd-vision-train logs the KL term (times T²=1),
    so the teacher's mean entropy (on the test split) is added."""
    text = "The LS teacher's student has a much higher training loss while its test accuracy is equal or better (Fig. 5)"
    ha = (ctx.d["vstab"].get("teacher_ls") or {}).get("mean_entropy")
    hb = (ctx.d["vstab"].get("teacher_nols") or {}).get("mean_entropy")

    def loss(m):
        return ((m or {}).get("train_last_epoch") or {}).get("train_loss")

    seeds, la, lb = paired(ctx.vm, "student_ls_T1", "student_nols_T1", ctx.seeds, value=loss)
    test = "superiority of the loss, paired by seed (95% t-interval), and the T=1 non-inferiority row"
    if not seeds or ha is None or hb is None:
        return Row("fig5", text, INCONCLUSIVE, "students' losses or teachers' entropies missing", test=test)
    iv = t_interval([x + ha - (y + hb) for x, y in zip(la, lb)])
    v_loss = superiority(iv, 0.0)
    if v_loss == REPRODUCED and kd_t1.verdict == REPRODUCED:
        v = REPRODUCED
    elif v_loss == CONTRADICTED or kd_t1.verdict == CONTRADICTED:
        v = CONTRADICTED
    else:
        v = INCONCLUSIVE
    if not vision_trained(ctx.vm)[0]:
        v = INCONCLUSIVE
    ev = (f"last-epoch soft-label cross-entropy (KL + teacher entropy {ha:.3f} / {hb:.3f} nats) "
          f"{mean_std_text([x + ha for x in la], 3)} (LS teacher) vs {mean_std_text([y + hb for y in lb], 3)}; "
          f"accuracy: {kd_t1.verdict} (row above)")
    return Row("fig5", text, v, ev, interval_text(iv, "superiority", " nats"), f"{iv.n} seeds", test,
               change_text(iv, "superiority", 0.0) if v == INCONCLUSIVE else "")


def _temperature_track(ctx, pairs, table, value, margin, unit):
    ivs = {}
    for t, a, b in pairs:
        seeds, xa, xb = paired(table, a, b, ctx.seeds, value=value)
        if seeds:
            ivs[t] = t_interval(paired_diffs(xa, xb))
    if len(ivs) < 2:
        return None, "", None
    t0, t1 = min(ivs), max(ivs)
    v_low, v_high = noninferiority(ivs[t0], margin), flip(superiority(ivs[t1], margin))
    if v_low == REPRODUCED and v_high == REPRODUCED:
        v = REPRODUCED
    elif v_high == CONTRADICTED or is_equivalent(v_high):
        v = v_high  # the LS teacher's student does not fall behind at the largest T
    elif v_low == CONTRADICTED:
        v = CONTRADICTED
    else:
        v = INCONCLUSIVE
    ev = "; ".join(f"T={t:g}: {interval_text(iv, 'superiority', unit)}" for t, iv in sorted(ivs.items()))
    return v, ev, ivs[t1]


def claim_temperature(ctx: Context) -> Row:
    v_scale = ctx.scale.vision
    vision_pairs = [(float(t), f"student_ls_{study_plan.t_tag(t)}", f"student_nols_{study_plan.t_tag(t)}")
                    for t in v_scale.temperatures]
    nmt_pairs = [(1.0, "student_wordkd_ls", "student_wordkd_nols")] + study_plan.nmt_sweep_pairs(ctx.scale)
    vv, ev_v, iv_v = _temperature_track(ctx, vision_pairs, ctx.vm, acc, VISION_MARGIN, " points")
    vn, ev_n, iv_n = _temperature_track(ctx, nmt_pairs, ctx.nm, bleu, NMT_MARGIN, " BLEU")
    if vv is not None and not vision_trained(ctx.vm)[0]:
        vv = INCONCLUSIVE
    if vn is not None and not nmt_trained(ctx.nm)[0]:
        vn = INCONCLUSIVE
    found = [x for x in (vv, vn) if x is not None]
    v, note = combine(found) if found else (INCONCLUSIVE, "")
    ev = "; ".join(x for x in (f"CIFAR-10 (LS-teacher student − no-LS-teacher student) {ev_v}" if ev_v else "",
                               f"Multi30k word-KD {ev_n}" if ev_n else "") if x) or "students at two or more T missing"
    iv = iv_v or iv_n
    ns = ", ".join(f"{name} {x.n} seeds" for name, x in (("vision", iv_v), ("NMT", iv_n)) if x is not None)
    test = (f"largest T: LS-teacher student lower (95% t-interval below 0; equivalence by TOST ±{VISION_MARGIN:g} "
            f"points / ±{NMT_MARGIN:g} BLEU); T=1: non-inferiority")
    return Row("temperature", paper_numbers.CLAIMS["temperature"], v, ev + note, "largest T: " + (
        interval_text(iv, "superiority") if iv else "–"), ns or "–", test,
        change_text(iv, "superiority", VISION_MARGIN) if v == INCONCLUSIVE else "")


def claim_calibration(ctx: Context) -> Row:
    parts, verdicts = [], []
    for label, st in (("CIFAR-10 teachers", ctx.d["vstab"]), ("Multi30k teachers (token level)", ctx.d["nstab"])):
        x, y = st.get("teacher_ls"), st.get("teacher_nols")
        if x and y:
            ea, eb = x["calibration"]["ece"], y["calibration"]["ece"]
            parts.append(f"{label}: ECE {ea:.4f} with LS vs {eb:.4f} without")
            verdicts.append(REPRODUCED if ea < eb - ECE_MIN_DIFF else CONTRADICTED if ea > eb + ECE_MIN_DIFF
                            else INCONCLUSIVE)
    v, note = combine(verdicts) if verdicts else (INCONCLUSIVE, "")
    return Row("calibration", paper_numbers.CLAIMS["calibration"], v, ("; ".join(parts) or "missing") + note, "–",
               "1 teacher per setting",
               f"descriptive: a difference under {ECE_MIN_DIFF:g} ECE is called inconclusive",
               "" if v != INCONCLUSIVE else "teachers trained with more seeds")


def claim_nmt_teacher(ctx: Context) -> Row:
    nm = ctx.nm
    if not all(k in nm for k in ("teacher_ls", "teacher_nols")):
        return Row("nmt_teacher", paper_numbers.CLAIMS["nmt_teacher"], INCONCLUSIVE, "NMT teachers missing")
    bs = bootstrap(ctx, "teacher_ls", "teacher_nols")
    ok, why = nmt_trained(nm)
    v = bootstrap_verdict(bs) if ok else INCONCLUSIVE
    a, b = nm["teacher_ls"], nm["teacher_nols"]
    ev = (f"teacher BLEU {a['bleu']:.2f} (LS) vs {b['bleu']:.2f} (no LS); chrF {a.get('chrf', float('nan')):.2f} vs "
          f"{b.get('chrf', float('nan')):.2f}" + (f"; {why}" if why else ""))
    return Row("nmt_teacher", paper_numbers.CLAIMS["nmt_teacher"], v, ev, bootstrap_text(bs),
               f"1 teacher per setting; {bs['n_sentences'] if bs else '–'} test sentences", BOOTSTRAP_TEST,
               "" if v != INCONCLUSIVE else "one teacher per setting: only teachers trained with several seeds "
               "would measure the seed noise this test leaves out")


def _nmt_student_pair(ctx: Context, a: str, b: str) -> Tuple[str, str, str, str, Optional[Interval]]:
    """(verdict, interval text, n, test) of a paired-by-seed BLEU comparison; one seed: bootstrap."""
    seeds, xa, xb = paired(ctx.nm, a, b, ctx.seeds, value=bleu)
    if not seeds:
        return INCONCLUSIVE, "–", "0 seeds", "–", None
    iv = t_interval(paired_diffs(xa, xb))
    if iv.has_interval:
        return superiority(iv, NMT_MARGIN), interval_text(iv, "superiority", " BLEU"), f"{iv.n} seeds", \
            SUP_TEST.format(m=NMT_MARGIN) + " (seed noise)", iv
    bs = bootstrap(ctx, study_plan.seed_name(a, seeds[0]), study_plan.seed_name(b, seeds[0]))
    return bootstrap_verdict(bs), bootstrap_text(bs), "1 seed", BOOTSTRAP_TEST + " (one seed: no seed noise)", iv


def claim_nmt_word_kd(ctx: Context) -> Row:
    a, b = "student_wordkd_ls", "student_wordkd_nols"
    v, ivt, n, test, iv = _nmt_student_pair(ctx, a, b)
    if iv is None:
        return Row("nmt_word_kd", paper_numbers.CLAIMS["nmt_word_kd"], INCONCLUSIVE, "NMT students missing")
    ok, why = nmt_trained(ctx.nm)
    v = v if ok else INCONCLUSIVE
    _, xa, xb = paired(ctx.nm, a, b, ctx.seeds, value=bleu)
    ev = (f"word-KD student BLEU {mean_std_text(xa)} (LS teacher) vs {mean_std_text(xb)} (no-LS teacher)"
          + _seed_bootstraps(ctx, a, b, ctx.seeds) + (f"; {why}" if why else ""))
    return Row("nmt_word_kd", paper_numbers.CLAIMS["nmt_word_kd"], v, ev, ivt, n, test,
               change_text(iv, "superiority", NMT_MARGIN) if v == INCONCLUSIVE else "")


def claim_nmt_seq_kd(ctx: Context) -> Row:
    verdicts, parts, ivts, last = [], [], [], None
    for tn, label in (("ls", "LS teacher"), ("nols", "no-LS teacher")):
        v, ivt, n, test, iv = _nmt_student_pair(ctx, f"student_seqkd_{tn}", "student_nokd")
        if iv is None:
            continue
        verdicts.append(v)
        ivts.append(f"{label}: {ivt}")
        _, xa, xb = paired(ctx.nm, f"student_seqkd_{tn}", "student_nokd", ctx.seeds, value=bleu)
        parts.append(f"sequence-KD student of the {label} {mean_std_text(xa)} vs no-KD student {mean_std_text(xb)}")
        last = (n, test, iv)
    if not verdicts:
        return Row("nmt_seq_kd", paper_numbers.CLAIMS["nmt_seq_kd"], INCONCLUSIVE, "NMT students missing")
    # supported by an improvement of either teacher's student with no decline of the other
    if REPRODUCED in verdicts and CONTRADICTED not in verdicts:
        v = REPRODUCED
    elif CONTRADICTED in verdicts and REPRODUCED not in verdicts:
        v = CONTRADICTED
    elif all(is_equivalent(x) for x in verdicts):
        v = verdicts[0]
    else:
        v = INCONCLUSIVE
    ok, why = nmt_trained(ctx.nm)
    v = v if ok else INCONCLUSIVE
    return Row("nmt_seq_kd", paper_numbers.CLAIMS["nmt_seq_kd"], v, "; ".join(parts) + (f"; {why}" if why else ""),
               "; ".join(ivts), last[0], last[1], change_text(last[2], "superiority", NMT_MARGIN)
               if v == INCONCLUSIVE else "")


def claim_long_tail(ctx: Context) -> Row:
    f = ctx.scale.vision.long_tail_imbalance
    text = paper_numbers.CLAIMS["long_tail"]
    if not f or f <= 1:
        return Row("long_tail", text, NOT_TESTED, "this scale has no long-tailed arm")
    s_bal, a_bal, b_bal = paired(ctx.vm, "student_ls_T1", "student_nols_T1", ctx.seeds)
    s_lt, a_lt, b_lt = paired(ctx.vm, "lt_student_ls_T1", "lt_student_nols_T1", ctx.seeds)
    gain_bal = dict(zip(s_bal, paired_diffs(a_bal, b_bal)))
    gain_lt = dict(zip(s_lt, paired_diffs(a_lt, b_lt)))
    common = [s for s in ctx.seeds if s in gain_bal and s in gain_lt]
    test = (f"paired by seed: (LS-teacher student − no-LS-teacher student) on long-tailed minus on balanced data; "
            f"lower: 95% t-interval below 0; TOST ±{VISION_MARGIN:g}")
    if not common:
        return Row("long_tail", text, INCONCLUSIVE, "long-tailed or balanced students missing", test=test)
    iv = t_interval([gain_lt[s] - gain_bal[s] for s in common])
    v = flip(superiority(iv, VISION_MARGIN))
    vm = ctx.vm
    ev = [f"students' LS gain {mean_std_text([gain_bal[s] for s in common])} points on balanced data, "
          f"{mean_std_text([gain_lt[s] for s in common])} on long-tailed (imbalance {f:g})"]
    t = [acc(vm.get(n)) for n in ("teacher_ls", "teacher_nols", "lt_teacher_ls", "lt_teacher_nols")]
    if None not in t:
        ev.append(f"teachers' own LS gain {t[0] - t[1]:+.2f} balanced, {t[2] - t[3]:+.2f} long-tailed "
                  "(one teacher per setting: descriptive)")
    ok, why = vision_trained(vm)
    ok_lt, why_lt = vision_trained(vm, ("lt_teacher_ls", "lt_teacher_nols"))
    if not (ok and ok_lt):
        v = INCONCLUSIVE
        ev.append(why or f"long-tailed {why_lt}")
    ev.append("the number-of-classes half of the claim is not tested (CIFAR-10 only)")
    return Row("long_tail", text, v, "; ".join(ev), interval_text(iv, "superiority", " points"), f"{iv.n} seeds",
               test, change_text(iv, "superiority", VISION_MARGIN) if v == INCONCLUSIVE else "")


# the claims table: key -> the function that decides it, in the report's order
CLAIMS: List[Tuple[str, Callable]] = [
    ("erasure", claim_erasure),
    ("clusters", claim_clusters),
    ("kd_t1", claim_kd_t1),
    ("fig5", None),  # needs the kd_t1 row
    ("temperature", claim_temperature),
    ("calibration", claim_calibration),
    ("nmt_teacher", claim_nmt_teacher),
    ("nmt_word_kd", claim_nmt_word_kd),
    ("nmt_seq_kd", claim_nmt_seq_kd),
    ("long_tail", claim_long_tail),
]


def claims(study, d: Dict) -> List[Row]:
    """Every claim's row. At smoke scale every verdict is inconclusive (plumbing check only)."""
    ctx = Context(study.scale_name, study.scale, d, list(d.get("seeds") or getattr(study, "seeds", [1])))
    rows: Dict[str, Row] = {}
    for key, fn in CLAIMS:
        rows[key] = claim_fig5(ctx, rows["kd_t1"]) if key == "fig5" else fn(ctx)
    out = [rows[k] for k, _ in CLAIMS]
    if study.scale_name == "smoke":
        for r in out:
            if r.verdict != NOT_TESTED:
                r.verdict, r.change = INCONCLUSIVE, ""
            r.measured += " [smoke scale: plumbing check only]"
    return out
