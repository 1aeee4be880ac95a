"""The study's analysis and report: stability of every model, figures, report.md.

Reads what the runs left (lskd-vision-train's metrics.json/metrics.csv, the
recipe's results/*.json and training logs), measures 1-S and ECE with
``lskd_study.stability``, draws the figures with
``lskd_study.plots`` and writes ``report.md`` with every table next
to the paper's numbers (``paper_numbers``) and a verdict per claim.

Verdict rules (one seed per setting, so noise estimates are rough):

* accuracy differences are compared with two binomial standard errors of the
  difference, ``2 * sqrt(p1(1-p1)/n + p2(1-p2)/n)`` on the test set;
* BLEU differences are tested with a paired bootstrap over test sentences
  (``bootstrap.py``; 95% interval must exclude 0), which covers test-set noise but
  not seed-to-seed noise; without hypothesis files, differences under 0.5 BLEU
  are treated as noise;
* 1-S and ECE comparisons also count how many classes (1-S) agree;
* at smoke scale every verdict is "inconclusive at this scale".
"""

import json
import math
import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from lskd_fairseq.atomic import atomic_write_text

from . import figures as F
from . import paper_numbers as PN
from . import plots as P
from . import study_plan as SP

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive at this scale"
NOT_TESTED = "not tested by this study"


# ------------------------------------------------------------------ analysis runs
def _vision_models(study) -> List[str]:
    names = []
    for r in study.runs:
        if r.kind == "vision_train":
            names.append(r.id.split("/", 1)[1])
    return names


def vision_stability_all(study) -> Dict:
    """1-S/ECE/class means of every finished vision model on the test split; teachers keep
    penultimate features of the projection classes."""
    from .stability import vision_stability

    out_dir = os.path.join(study.out, "analysis")
    complete = True
    for name in _vision_models(study):
        ck = os.path.join(study.vision_dir(name), "checkpoint_best.pt")
        js = os.path.join(out_dir, f"vision_{name}.json")
        if not os.path.isfile(os.path.join(study.vision_dir(name), "metrics.json")):
            complete = False
            continue
        if os.path.isfile(js):
            continue
        keep = None
        if name.startswith("teacher"):
            from lskd_vision.engine import load_checkpoint

            classes = load_checkpoint(ck)["config"]["classes"]
            keep = F.class_indices(F.default_projection_classes(classes), classes)
        res = vision_stability(ck, split="test", batch_size=200, keep_features_of=keep, max_features_per_class=500)
        if keep is not None:
            np.savez(os.path.join(out_dir, f"vision_{name}_features.npz"), features=res.pop("features"),
                     labels=res.pop("feature_labels"), weight=res.pop("classifier_weight"),
                     classes=np.asarray(keep))
        study.log(f"  1-S of vision/{name}: {res['one_minus_S']:.4f} (test top-1 {res['accuracy']:.2f}%, ECE {res['calibration']['ece']:.4f})")
        F.write_json(js, res)
    return {"complete": complete}


NMT_NAMES = ["teacher_ls", "teacher_nols", "student_nokd", "student_wordkd_ls", "student_wordkd_nols",
             "student_seqkd_ls", "student_seqkd_nols"]


def _nmt_dir(study) -> str:
    return os.path.join(study.nmt_work, "en-de")


def nmt_stability_all(study) -> Dict:
    """Token-level 1-S and ECE of both NMT teachers (and the word-KD students) on the valid split."""
    from .stability import fairseq_stability

    out_dir = os.path.join(study.out, "analysis")
    complete = True
    for name in ("teacher_ls", "teacher_nols", "student_wordkd_ls", "student_wordkd_nols"):
        ck = os.path.join(_nmt_dir(study), "models", name, "checkpoint_best.pt")
        js = os.path.join(out_dir, f"nmt_{name}.json")
        if not os.path.isfile(ck):
            complete = False
            continue
        if os.path.isfile(js):
            continue
        res = fairseq_stability(ck, data_bin=os.path.join(_nmt_dir(study), "bin"), split="valid",
                                top_tokens=study.scale.nmt.top_tokens)
        study.log(f"  1-S of nmt/{name}: {res['one_minus_S']:.5f} over {res['num_classes_used']} token classes "
                  f"(valid token acc {res['token_accuracy']:.2f}%, ECE {res['calibration']['ece']:.4f})")
        F.write_json(js, res)
    return {"complete": complete}


# ------------------------------------------------------------------ collecting
def _load(path: str) -> Optional[Dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def collect(study) -> Dict:
    d: Dict = {"vision": {}, "vstab": {}, "nmt": {}, "nstab": {}}
    for name in _vision_models(study):
        m = _load(os.path.join(study.vision_dir(name), "metrics.json"))
        if m:
            d["vision"][name] = m
        s = _load(os.path.join(study.out, "analysis", f"vision_{name}.json"))
        if s:
            d["vstab"][name] = s
    for name in NMT_NAMES + SP.nmt_sweep_names(study.scale):
        r = _load(os.path.join(_nmt_dir(study), "results", f"{name}.json"))
        if r:
            d["nmt"][name] = r
        s = _load(os.path.join(study.out, "analysis", f"nmt_{name}.json"))
        if s:
            d["nstab"][name] = s
    return d


def _acc(m: Optional[Dict], key="top1") -> Optional[float]:
    if not m or "test" not in m:
        return None
    return m["test"].get(key)


def _n_test(m: Optional[Dict]) -> int:
    return int(m["test"].get("num_images", 0)) if m and "test" in m else 0


def _se_diff(p1: float, p2: float, n1: int, n2: int) -> float:
    """Binomial standard error of a difference of two accuracies (in %)."""
    a, b = p1 / 100.0, p2 / 100.0
    if n1 <= 0 or n2 <= 0:
        return float("nan")
    return 100.0 * math.sqrt(a * (1 - a) / n1 + b * (1 - b) / n2)


def f2(x, nd=2, pct=False) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "–"
    return f"{x:.{nd}f}" + ("%" if pct else "")


# ------------------------------------------------------------------ figures
def make_figures(study, d: Dict) -> Dict[str, str]:
    out = study.out
    figs = {}
    v = study.scale.vision
    d["not_drawn"] = {}

    class _P:  # P with placeholders recorded for the report
        def __getattr__(self, name):
            return getattr(P, name)

        @staticmethod
        def placeholder(path, message):
            d["not_drawn"][os.path.basename(path)] = message
            return P.placeholder(path, message)

    P_ = _P()

    def fig(name: str) -> str:
        return os.path.join(out, name)

    # Fig. 1: projection
    path = fig("fig1_projection.png")
    panels, why = [], None
    for name, title in (("teacher_ls", "teacher trained with LS"), ("teacher_nols", "teacher trained without LS")):
        npz = os.path.join(out, "analysis", f"vision_{name}_features.npz")
        if not os.path.isfile(npz):
            why = f"no penultimate features of vision/{name} (run missing or failed)"
            break
        z = np.load(npz)
        res = {"features": z["features"], "feature_labels": z["labels"], "classifier_weight": z["weight"]}
        panels.append(F.projection_panel(res, [int(c) for c in z["classes"]], title))
    classes = (d["vstab"].get("teacher_ls") or d["vstab"].get("teacher_nols") or {}).get("classes")
    if why is None and panels:
        P.plot_projection(panels, path, class_names=classes)
        d["projection"] = {p["title"]: p["summary"] for p in panels}
        d["projection_classes"] = [classes[c] for c in panels[0]["classes"]]
    else:
        P_.placeholder(path, f"Fig. 1 not drawn: {why}")
    figs["projection"] = path

    # Fig. 4: mean softmax
    path = fig("fig4_mean_softmax.png")
    if all(k in d["vstab"] for k in ("teacher_ls", "teacher_nols")):
        P.plot_mean_softmax([
            {"title": f"teacher with LS {v.label_smoothing:g} (1-S = {d['vstab']['teacher_ls']['one_minus_S']:.4f})",
             "class_means": d["vstab"]["teacher_ls"]["class_means"]},
            {"title": f"teacher without LS (1-S = {d['vstab']['teacher_nols']['one_minus_S']:.4f})",
             "class_means": d["vstab"]["teacher_nols"]["class_means"]},
        ], path, class_names=d["vstab"]["teacher_ls"]["classes"])
    else:
        P_.placeholder(path, "Fig. 4 not drawn: a vision teacher's stability result is missing")
    figs["mean_softmax"] = path

    # Fig. 5, vision: students at T=1
    path = fig("fig5_curves_vision.png")
    series = []
    for name, label in (("student_ls_T1", "student of LS teacher (T=1)"),
                        ("student_nols_T1", "student of no-LS teacher (T=1)"),
                        ("student_nokd", "student without KD")):
        if os.path.isfile(os.path.join(study.vision_dir(name), "metrics.csv")):
            series.append(F.vision_curve(study.vision_dir(name), label))
    if series:
        P.plot_curves(series, path, metric_name="validation top-1 (%)",
                      title="CIFAR-10 students: training loss (KD term T²·KL at T=1) and validation accuracy per epoch")
    else:
        P_.placeholder(path, "Fig. 5 (vision) not drawn: no student run finished")
    figs["curves_vision"] = path

    # Fig. 5, NMT: word-KD students
    path = fig("fig5_curves_nmt.png")
    series = []
    metric = "validation loss"
    for name, label in (("student_wordkd_ls", "word-KD student of LS teacher"),
                        ("student_wordkd_nols", "word-KD student of no-LS teacher"),
                        ("student_nokd", "student without KD")):
        log = os.path.join(study.nmt_work, "logs", f"en-de.{name}.log")
        if os.path.isfile(log):
            c = F.fairseq_curve(log, label)
            if c["epoch"]:
                series.append(c)
                metric = {"bleu": "validation BLEU", "nll_loss": "validation NLL (bits/token)",
                          "loss": "validation loss"}.get(c.get("metric"), metric)
    if series:
        P.plot_curves(series, path, metric_name=metric,
                      title="Multi30k students: training loss and validation metric per epoch")
    else:
        P_.placeholder(path, "Fig. 5 (NMT) not drawn: no student training log")
    figs["curves_nmt"] = path

    # temperature
    path = fig("fig_temperature.png")
    series = []
    for t_name, label in (("ls", "teacher with LS"), ("nols", "teacher without LS")):
        Ts, vals = [], []
        for t in v.temperatures:
            a = _acc(d["vision"].get(f"student_{t_name}_{SP.t_tag(t)}"))
            if a is not None:
                Ts.append(t)
                vals.append(a)
        if Ts:
            series.append({"label": label, "T": Ts, "value": vals})
    if series:
        P.plot_temperature(series, path, metric_name="student test top-1 (%)",
                           title="CIFAR-10 students against KD temperature (alpha = 1)")
    else:
        P_.placeholder(path, "temperature figure not drawn: no KD student finished")
    figs["temperature"] = path

    pairs = nmt_temperature_pairs(study)
    if len(pairs) > 1:
        path = fig("fig_temperature_nmt.png")
        series = []
        for idx, label in ((1, "teacher with LS"), (2, "teacher without LS")):
            pts = [(p[0], d["nmt"][p[idx]]["bleu"]) for p in pairs if p[idx] in d["nmt"]]
            if pts:
                series.append({"label": label, "T": [t for t, _ in pts], "value": [b for _, b in pts]})
        if series:
            P.plot_temperature(series, path, metric_name="student test BLEU",
                               title="Multi30k word-level KD students against KD temperature")
        else:
            P_.placeholder(path, "NMT temperature figure not drawn: no swept student finished")
        figs["temperature_nmt"] = path

    # reliability
    path = fig("fig_reliability_vision.png")
    panels = [{"title": f"vision {n}", "calibration": d["vstab"][n]["calibration"]}
              for n in ("teacher_nols", "teacher_ls") if n in d["vstab"]]
    if panels:
        P.plot_reliability(panels, path)
    else:
        P_.placeholder(path, "vision reliability diagrams not drawn: no teacher stability result")
    figs["reliability_vision"] = path
    path = fig("fig_reliability_nmt.png")
    panels = [{"title": f"NMT {n} (token level, valid)", "calibration": d["nstab"][n]["calibration"]}
              for n in ("teacher_nols", "teacher_ls") if n in d["nstab"]]
    if panels:
        P.plot_reliability(panels, path)
    else:
        P_.placeholder(path, "NMT reliability diagrams not drawn: no teacher stability result")
    figs["reliability_nmt"] = path
    return figs


# ------------------------------------------------------------------ verdicts
def _verdict(study, v: str) -> str:
    return INCONCLUSIVE if study.scale_name == "smoke" else v


# The test must resolve differences of the size the paper reports (0.4-2.5 points):
# "as good" / "no fall-behind" verdicts need 2 SE of the difference at most this large.
MAX_2SE = 1.5
# Teachers must have learned something for any comparison to mean anything.
MIN_VISION_TOP1_OVER_CHANCE = 3.0
MIN_NMT_TEACHER_BLEU = 5.0
# a BLEU difference counts only if the better model did not also get more than 10% more updates
MAX_UPDATE_RATIO = 1.1


def _vision_trained(vm: Dict) -> Tuple[bool, str]:
    accs = [(n, _acc(vm.get(n))) for n in ("teacher_ls", "teacher_nols")]
    k = None
    for n in ("teacher_ls", "teacher_nols"):
        cfg = (vm.get(n) or {}).get("config") or {}
        k = k or cfg.get("num_classes")
    chance = 100.0 / (k or 10)
    weak = [f"{n} {a:.1f}%" for n, a in accs if a is not None and a < MIN_VISION_TOP1_OVER_CHANCE * chance]
    if weak:
        return False, f"teachers barely trained ({', '.join(weak)}; chance {chance:.0f}%)"
    return True, ""


def bleu_cmp(nm: Dict, x: str, y: str) -> Tuple[float, str, int]:
    """BLEU of model x minus model y: (difference, 95% CI text, sign); sign is +1/-1 when the
    paired-bootstrap interval excludes 0; without hypothesis files, when |difference| >= 0.5 BLEU."""
    from .bootstrap import compare_results

    diff = nm[x]["bleu"] - nm[y]["bleu"]
    bs = compare_results(nm[x], nm[y])
    if bs is not None:
        sign = 1 if bs["ci_low"] > 0 else -1 if bs["ci_high"] < 0 else 0
        text = f"95% paired-bootstrap CI [{bs['ci_low']:+.2f}, {bs['ci_high']:+.2f}]"
    else:
        sign = 1 if diff >= 0.5 else -1 if diff <= -0.5 else 0
        text = "no bootstrap (hypotheses missing): differences under 0.5 BLEU treated as noise"
    # a model that also trained longer is not evidence for the method (wall-clock caps)
    ux, uy = nm[x].get("num_updates"), nm[y].get("num_updates")
    if sign and isinstance(ux, int) and isinstance(uy, int) and min(ux, uy) > 0:
        better, worse = (ux, uy) if sign > 0 else (uy, ux)
        if better > MAX_UPDATE_RATIO * worse:
            text += (f"; not counted: the better model also had {100 * (better / worse - 1):.0f}% more updates "
                     f"({better} vs {worse})")
            sign = 0
    return diff, text, sign


def nmt_temperature_pairs(study) -> List[Tuple[float, str, str]]:
    """(T, student of the LS teacher, student of the no-LS teacher) for every NMT temperature:
    T=1 is student_wordkd_*, the sweep adds student_wordkd_*_T<t>."""
    return [(1.0, "student_wordkd_ls", "student_wordkd_nols")] + SP.nmt_sweep_pairs(study.scale)


def _nmt_temperature_verdict(study, nm: Dict) -> Tuple[Optional[str], str]:
    """The temperature claim on NMT word-level KD students (None when fewer than two T have both)."""
    have = [(t, a, b) for t, a, b in nmt_temperature_pairs(study) if a in nm and b in nm]
    if len(have) < 2:
        return None, ""
    cmp = {t: bleu_cmp(nm, a, b) for t, a, b in have}
    t0, t1 = min(cmp), max(cmp)
    (g0, _, s0), (g1, _, s1) = cmp[t0], cmp[t1]
    if s0 >= 0 and s1 < 0 and g1 < g0:
        v = REPRODUCED
    elif s1 > 0:
        v = NOT_REPRODUCED  # the LS teacher's student is ahead at the largest T
    else:
        v = INCONCLUSIVE
    weak = min(nm.get(k, {}).get("bleu", 0.0) for k in ("teacher_ls", "teacher_nols")) < MIN_NMT_TEACHER_BLEU
    if weak:
        v = INCONCLUSIVE
    ev = "NMT word-KD students (BLEU, LS-teacher student minus no-LS-teacher student): " + "; ".join(
        f"T={t:g}: {g:+.2f} ({ci})" for t, (g, ci, _) in sorted(cmp.items()))
    if weak:
        ev += f"; teachers below {MIN_NMT_TEACHER_BLEU} BLEU: too weak to compare"
    return v, ev


def claims(study, d: Dict) -> List[Tuple[str, str, str, str]]:
    """(key, claim text, verdict, evidence) for each claim."""
    out = []
    vs, vm, ns, nm = d["vstab"], d["vision"], d["nstab"], d["nmt"]
    smoke = study.scale_name == "smoke"

    # erasure: 1-S lower with LS
    ev, verdicts = [], []
    for label, st in (("CIFAR-10 teachers", vs), ("Multi30k teachers (token level)", ns)):
        a, b = st.get("teacher_ls"), st.get("teacher_nols")
        if not (a and b):
            ev.append(f"{label}: missing")
            continue
        pa = np.asarray(a["per_class"], dtype=float)
        pb = np.asarray(b["per_class"], dtype=float)
        ok = ~(np.isnan(pa) | np.isnan(pb))
        lower = int((pa[ok] < pb[ok]).sum())
        ev.append(f"{label}: 1-S {a['one_minus_S']:.4f} with LS vs {b['one_minus_S']:.4f} without "
                  f"(lower with LS in {lower} of {int(ok.sum())} classes)")
        if label.startswith("CIFAR") and not _vision_trained(vm)[0]:
            verdicts.append(INCONCLUSIVE)
        elif label.startswith("Multi30k") and min(nm.get(k, {}).get("bleu", 0.0) for k in ("teacher_ls", "teacher_nols")) < MIN_NMT_TEACHER_BLEU:
            verdicts.append(INCONCLUSIVE)
        elif a["one_minus_S"] < b["one_minus_S"] and lower > ok.sum() / 2:
            verdicts.append(REPRODUCED)
        elif a["one_minus_S"] > b["one_minus_S"] and lower < ok.sum() / 2:
            verdicts.append(NOT_REPRODUCED)
        else:
            verdicts.append(INCONCLUSIVE)
    v = (verdicts[0] if verdicts and all(x == verdicts[0] for x in verdicts) else
         (INCONCLUSIVE if verdicts else INCONCLUSIVE))
    if verdicts and len(set(verdicts)) > 1:
        ev.append("the two domains disagree")
    out.append(("erasure", PN.CLAIMS["erasure"], _verdict(study, v), "; ".join(ev)))

    # Müller / Shen: clusters
    pr = d.get("projection")
    if pr:
        names = d.get("projection_classes", ["a", "b", "c"])
        keys = list(pr.keys())
        s_ls, s_no = pr[keys[0]], pr[keys[1]]
        pair = next(iter(s_ls["separation_ratio"]))  # first pair = the two similar classes
        r_ls, r_no = s_ls["separation_ratio"][pair], s_no["separation_ratio"][pair]
        spread_ls = float(np.mean(list(s_ls["spread"].values())))
        spread_no = float(np.mean(list(s_no["spread"].values())))
        ev = (f"projection of {'/'.join(names)}: centre distance / spread of {names[0]}-{names[1]} "
              f"{r_ls:.2f} with LS vs {r_no:.2f} without; mean spread {spread_ls:.3f} vs {spread_no:.3f} "
              f"(different networks have different scales; ratios are comparable, spreads only roughly)")
        v = REPRODUCED if r_ls > 1.1 * r_no else NOT_REPRODUCED if r_ls < r_no / 1.1 else INCONCLUSIVE
        ev += "; a ratio change under 10% is called inconclusive"
        if not _vision_trained(vm)[0]:
            v = INCONCLUSIVE
        out.append(("clusters", "LS makes clusters tighter and, for semantically similar classes, "
                    "separates their centres further relative to their spread (Müller et al.; Shen et al. Sec. 3)",
                    _verdict(study, v), ev))
    else:
        out.append(("clusters", "LS tightens clusters / separates similar classes (Fig. 1)", INCONCLUSIVE,
                    "no projection data"))

    # KD at T=1
    a, b = vm.get("student_ls_T1"), vm.get("student_nols_T1")
    if a and b:
        pa, pb = _acc(a), _acc(b)
        se = _se_diff(pa, pb, _n_test(a), _n_test(b))
        diff = pa - pb
        if diff > 2 * se:
            v, how = REPRODUCED, "better by more than 2 SE"
        elif diff < -2 * se:
            v, how = NOT_REPRODUCED, "worse by more than 2 SE"
        elif 2 * se <= MAX_2SE:
            v, how = REPRODUCED, "as good (difference within ±2 SE)"
        else:
            v, how = INCONCLUSIVE, f"within ±2 SE, but 2 SE is over {MAX_2SE} points: the test cannot resolve the paper's effect"
        ok, why = _vision_trained(vm)
        if not ok:
            v, how = INCONCLUSIVE, how + "; " + why
        ev = (f"CIFAR-10 student top-1 {pa:.2f}% (LS teacher) vs {pb:.2f}% (no-LS teacher): "
              f"difference {diff:+.2f} points, 2 SE = {2 * se:.2f}: {how}; one seed")
        nokd = _acc(vm.get("student_nokd"))
        if nokd is not None:
            ev += f"; student without KD {nokd:.2f}%"
        out.append(("kd_t1", PN.CLAIMS["kd_t1"], _verdict(study, v), ev))
    else:
        out.append(("kd_t1", PN.CLAIMS["kd_t1"], INCONCLUSIVE, "students at T=1 missing"))

    # Fig. 5: training loss higher with LS teacher. lskd-vision-train's KD loss is T^2 KL(teacher || student),
    # the paper's soft-label loss is the cross-entropy KL + H(teacher): add the teacher's mean entropy
    # (measured on the test split, an approximation of its entropy on the training images).
    if a and b and a.get("train_last_epoch") and b.get("train_last_epoch"):
        la, lb = a["train_last_epoch"].get("train_loss"), b["train_last_epoch"].get("train_loss")
        ha = (vs.get("teacher_ls") or {}).get("mean_entropy")
        hb = (vs.get("teacher_nols") or {}).get("mean_entropy")
        ev = f"last-epoch KD term (KL) {f2(la, 4)} (LS teacher) vs {f2(lb, 4)} (no-LS teacher)"
        if None not in (la, lb, ha, hb):
            ca, cb = la + ha, lb + hb
            ev += (f"; teacher mean entropy {ha:.4f} vs {hb:.4f} nats, so the paper's soft-label cross-entropy "
                   f"(KL + entropy) is about {ca:.4f} vs {cb:.4f}")
            v = REPRODUCED if ca > cb else NOT_REPRODUCED
        else:
            v = INCONCLUSIVE
            ev += "; teacher entropies missing, so the paper's loss cannot be formed"
        if v == REPRODUCED and _acc(a) is not None and _acc(b) is not None:
            if _acc(a) < _acc(b) - 2 * _se_diff(_acc(a), _acc(b), _n_test(a), _n_test(b)):
                v = NOT_REPRODUCED
                ev += "; but the LS teacher's student is worse on the test set by more than 2 SE"
        if not _vision_trained(vm)[0]:
            v = INCONCLUSIVE
        out.append(("fig5", "The LS teacher's student has a much higher training loss while its test accuracy is "
                    "equal or better (Fig. 5)", _verdict(study, v), ev))

    # temperature
    Ts = [t for t in study.scale.vision.temperatures
          if vm.get(f"student_ls_{SP.t_tag(t)}") and vm.get(f"student_nols_{SP.t_tag(t)}")]
    if len(Ts) >= 2:
        gaps = {}
        for t in Ts:
            x, y = vm[f"student_ls_{SP.t_tag(t)}"], vm[f"student_nols_{SP.t_tag(t)}"]
            gaps[t] = (_acc(x) - _acc(y), _se_diff(_acc(x), _acc(y), _n_test(x), _n_test(y)))
        t0, t1 = min(Ts), max(Ts)
        g0, s0 = gaps[t0]
        g1, s1 = gaps[t1]
        if g0 >= -2 * s0 and g1 < -2 * s1 and g1 < g0:
            v = REPRODUCED
        elif g1 >= -2 * s1 and 2 * s1 <= MAX_2SE:
            v = NOT_REPRODUCED  # no significant fall-behind at the largest T, with enough resolution
        else:
            v = INCONCLUSIVE
        if not _vision_trained(vm)[0]:
            v = INCONCLUSIVE
        ev = "CIFAR-10 students (top-1): " + "; ".join(
            f"T={t:g}: LS-teacher student minus no-LS-teacher student {g:+.2f} points (2 SE {2 * s:.2f})"
            for t, (g, s) in sorted(gaps.items()))
    else:
        v, ev = None, "CIFAR-10 students at two or more T missing"
    v_nmt, ev_nmt = _nmt_temperature_verdict(study, nm)
    if ev_nmt:
        ev += "; " + ev_nmt
    found = [x for x in (v, v_nmt) if x is not None]
    decided = {x for x in found if x != INCONCLUSIVE}
    if len(decided) == 1:
        v_all = decided.pop()
        if INCONCLUSIVE in found:
            ev += " (one of the two tracks is inconclusive; the verdict is the other's)"
    elif len(decided) > 1:
        v_all = INCONCLUSIVE
        ev += " (vision and NMT disagree)"
    else:
        v_all = INCONCLUSIVE
    out.append(("temperature", PN.CLAIMS["temperature"], _verdict(study, v_all), ev))

    # calibration
    ev, verdicts = [], []
    for label, st in (("CIFAR-10 teachers", vs), ("Multi30k teachers (token level)", ns)):
        x, y = st.get("teacher_ls"), st.get("teacher_nols")
        if x and y:
            ea, eb = x["calibration"]["ece"], y["calibration"]["ece"]
            ev.append(f"{label}: ECE {ea:.4f} with LS vs {eb:.4f} without")
            verdicts.append(REPRODUCED if ea < eb - 0.005 else NOT_REPRODUCED if ea > eb + 0.005 else INCONCLUSIVE)
    v = verdicts[0] if verdicts and len(set(verdicts)) == 1 else INCONCLUSIVE
    if len(set(verdicts)) > 1:
        ev.append("the two tracks disagree (a difference under 0.005 counts as none)")
    out.append(("calibration", PN.CLAIMS["calibration"], _verdict(study, v), "; ".join(ev) or "missing"))

    # NMT word-level KD
    weak_nmt = all(k in nm for k in ("teacher_ls", "teacher_nols")) and \
        min(nm["teacher_ls"]["bleu"], nm["teacher_nols"]["bleu"]) < MIN_NMT_TEACHER_BLEU
    weak_note = f"; teachers below {MIN_NMT_TEACHER_BLEU} BLEU: too weak to compare" if weak_nmt else ""

    def _sign_verdict(sign: int) -> str:
        if weak_nmt:
            return INCONCLUSIVE
        return REPRODUCED if sign > 0 else NOT_REPRODUCED if sign < 0 else INCONCLUSIVE

    if all(k in nm for k in ("teacher_ls", "teacher_nols")):
        dt, ct, st_ = bleu_cmp(nm, "teacher_ls", "teacher_nols")
        a, b = nm["teacher_ls"], nm["teacher_nols"]
        ev = (f"teacher BLEU {a['bleu']:.2f} (LS) vs {b['bleu']:.2f} (no LS), {dt:+.2f} ({ct}); chrF "
              f"{f2(a.get('chrf'))} vs {f2(b.get('chrf'))}; one seed, so the interval covers test-set noise only"
              + weak_note)
        out.append(("nmt_teacher", PN.CLAIMS["nmt_teacher"], _verdict(study, _sign_verdict(st_)), ev))
    else:
        out.append(("nmt_teacher", PN.CLAIMS["nmt_teacher"], INCONCLUSIVE, "NMT teachers missing"))

    if all(k in nm for k in ("student_wordkd_ls", "student_wordkd_nols")):
        ds, cs, ss = bleu_cmp(nm, "student_wordkd_ls", "student_wordkd_nols")
        ev = (f"word-KD student {nm['student_wordkd_ls']['bleu']:.2f} (LS teacher) vs "
              f"{nm['student_wordkd_nols']['bleu']:.2f} (no-LS teacher), {ds:+.2f} ({cs}); one seed" + weak_note)
        out.append(("nmt_word_kd", PN.CLAIMS["nmt_word_kd"], _verdict(study, _sign_verdict(ss)), ev))
    else:
        out.append(("nmt_word_kd", PN.CLAIMS["nmt_word_kd"], INCONCLUSIVE, "NMT results missing"))

    # NMT sequence-level KD: supported by a counted improvement of either teacher's student, refuted by
    # a counted decline with no counted improvement
    if all(k in nm for k in ("student_nokd", "student_seqkd_ls", "student_seqkd_nols")):
        base = nm["student_nokd"]["bleu"]
        gl, cl, sl_ = bleu_cmp(nm, "student_seqkd_ls", "student_nokd")
        gn, cn, sn_ = bleu_cmp(nm, "student_seqkd_nols", "student_nokd")
        signs = (sl_, sn_)
        v = REPRODUCED if 1 in signs and -1 not in signs else NOT_REPRODUCED if -1 in signs and 1 not in signs \
            else INCONCLUSIVE
        if weak_nmt:
            v = INCONCLUSIVE
        ev = (f"no-KD student {base:.2f} BLEU; sequence-KD students {nm['student_seqkd_ls']['bleu']:.2f} "
              f"(LS teacher, {gl:+.2f}, {cl}) and {nm['student_seqkd_nols']['bleu']:.2f} (no-LS teacher, {gn:+.2f}, "
              f"{cn})" + weak_note)
        out.append(("nmt_seq_kd", PN.CLAIMS["nmt_seq_kd"], _verdict(study, v), ev))
    else:
        out.append(("nmt_seq_kd", PN.CLAIMS["nmt_seq_kd"], INCONCLUSIVE, "NMT results missing"))

    out.append(_long_tail_claim(study, d))
    if smoke:
        out = [(k, c, v, e + " [smoke scale: plumbing check only]") for k, c, v, e in out]
    return out


def _unequal_updates(nm: Dict) -> str:
    """A sentence naming the students whose update counts differ by more than 20%, or ''."""
    ups = {n: nm[n].get("num_updates") for n in NMT_NAMES if n.startswith("student") and n in nm}
    ups = {n: u for n, u in ups.items() if isinstance(u, int) and u > 0}
    if len(ups) < 2 or max(ups.values()) <= 1.2 * min(ups.values()):
        return ""
    return "students trained for " + ", ".join(f"{n} {u}" for n, u in ups.items()) + " updates"


LT_PAIRS = (("teacher", "teacher_ls", "teacher_nols"), ("student (T=1)", "student_ls_T1", "student_nols_T1"))


def _head_tail(m: Optional[Dict]) -> Tuple[Optional[float], Optional[float]]:
    """Mean test top-1 of the half of the classes with the most / the fewest training images
    (ties broken by class index, so a balanced set splits into the first and second half)."""
    if not m or "test" not in m:
        return None, None
    acc = m["test"].get("per_class_top1") or []
    counts = (m.get("dataset") or {}).get("train_counts") or []
    if not acc or len(counts) != len(acc) or any(a is None for a in acc):
        return None, None
    order = sorted(range(len(acc)), key=lambda c: (-counts[c], c))
    h = len(order) // 2
    return (float(np.mean([acc[c] for c in order[:h]])), float(np.mean([acc[c] for c in order[h:]])))


def long_tail_gains(vm: Dict) -> Dict[str, Dict[str, Tuple[float, float]]]:
    """LS gain (w/ LS minus w/o LS, top-1 points) and its binomial SE, per role and training set."""
    out: Dict[str, Dict[str, Tuple[float, float]]] = {}
    for role, ls_name, nols_name in LT_PAIRS:
        for pre, setname in (("", "balanced"), ("lt_", "long-tailed")):
            x, y = vm.get(pre + ls_name), vm.get(pre + nols_name)
            if _acc(x) is None or _acc(y) is None:
                continue
            out.setdefault(role, {})[setname] = (_acc(x) - _acc(y), _se_diff(_acc(x), _acc(y), _n_test(x), _n_test(y)))
    return out


def _long_tail_claim(study, d: Dict) -> Tuple[str, str, str, str]:
    """LS's gain (for the teacher itself and for its T=1 student) on long-tailed vs balanced training data."""
    f = study.scale.vision.long_tail_imbalance
    if not f or f <= 1:
        return ("long_tail", PN.CLAIMS["long_tail"], NOT_TESTED, "this scale has no long-tailed arm")
    vm = d["vision"]
    gains = long_tail_gains(vm)
    if any(len(gains.get(role, {})) < 2 for role, _, _ in LT_PAIRS):
        return ("long_tail", PN.CLAIMS["long_tail"], INCONCLUSIVE, "long-tailed or balanced runs missing")
    ev, signs = [], []
    for role, _, _ in LT_PAIRS:
        (gb, sb), (gl, sl) = gains[role]["balanced"], gains[role]["long-tailed"]
        dd, se = gl - gb, math.sqrt(sb ** 2 + sl ** 2)
        signs.append(-1 if dd < -2 * se else 1 if dd > 2 * se else 0)
        ev.append(f"{role}: LS gain {gb:+.2f} points on balanced data, {gl:+.2f} on long-tailed "
                  f"(imbalance {f:g}); change {dd:+.2f} (2 SE {2 * se:.2f})")
    dds = [gains[r]["long-tailed"][0] - gains[r]["balanced"][0] for r, _, _ in LT_PAIRS]
    if -1 in signs and all(x <= 0 for x in dds):
        v = REPRODUCED
    elif 1 in signs and all(x >= 0 for x in dds):
        v = NOT_REPRODUCED
    else:
        v = INCONCLUSIVE
    ok, why = _vision_trained(vm)
    k = ((vm.get("lt_teacher_ls") or {}).get("config") or {}).get("num_classes") or 10
    lt_weak = [f"{n} {_acc(vm[n]):.1f}%" for n in ("lt_teacher_ls", "lt_teacher_nols")
               if _acc(vm.get(n)) is not None and _acc(vm.get(n)) < MIN_VISION_TOP1_OVER_CHANCE * 100.0 / k]
    if not ok or lt_weak:
        v = INCONCLUSIVE
        ev.append(why or f"long-tailed teachers barely trained ({', '.join(lt_weak)})")
    ev.append("SEs treat the runs as independent (they share the test set); one seed; the "
              "number-of-classes half of the claim is not tested (CIFAR-10 only)")
    return ("long_tail", PN.CLAIMS["long_tail"], _verdict(study, v), "; ".join(ev))


# ------------------------------------------------------------------ report
def _table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(study) -> str:
    d = collect(study)
    figs = make_figures(study, d)
    v = study.scale.vision
    vm, vs, nm, ns = d["vision"], d["vstab"], d["nmt"], d["nstab"]
    L: List[str] = []
    L.append(f"# lskd study report: does a label-smoothed teacher distill worse? (scale `{study.scale_name}`)")
    L.append("")
    L.append(f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `lskd-study --scale {study.scale_name}` "
             f"into `{study.out}`. Paper: {PN.PAPER}; published numbers transcribed in "
             f"`study/paper_numbers.py`.")
    L.append("")
    if study.scale_name == "smoke":
        L.append("> **Smoke scale: nothing can be concluded from these numbers.** The models see a few hundred "
                 "images or sentences for one epoch or a dozen updates; this run only checks that every step, "
                 "table and figure is produced end to end on real data. Every claim below is therefore marked "
                 "*inconclusive at this scale*.")
    else:
        L.append("> " + study.scale.note)
    L.append("")
    missing = [r.id for r in study.runs if not study.is_done(r.id)]
    if missing or study.failed:
        L.append(f"**Incomplete:** {len(missing)} of {len(study.runs)} runs have not finished: {', '.join(missing)}"
                 + (f" (failed or not started after a failure in this invocation: {', '.join(study.failed)}; "
                    f"see `logs/`)" if study.failed else "")
                 + ". Tables show what exists; rerun the same command to resume.")
        L.append("")

    # -------- claims
    L.append("## Claims")
    L.append("")
    rows = [[c, f"**{vd}**", e] for _, c, vd, e in claims(study, d)]
    L.append(_table(["claim (paper)", "verdict", "measured here"], rows))
    L.append("")

    # -------- Table 1
    L.append("## Teachers with and without LS: accuracy and 1-S (compare: paper Table 1)")
    L.append("")
    L.append("1-S = (1/K) Σ_c (1/n_c) Σ_{i∈c} ‖p_i − p̄_c‖² on the test split (vision) or over the gold target tokens "
             f"of the validation split under teacher forcing, classes = the {study.scale.nmt.top_tokens} most frequent "
             "target tokens (NMT). Lower = more information erased.")
    L.append("")
    rows = []
    a, b = vm.get("teacher_nols"), vm.get("teacher_ls")
    sa, sb = vs.get("teacher_nols"), vs.get("teacher_ls")
    rows.append([f"**this study**: CIFAR-10 {v.teacher_arch}",
                 f"{f2(_acc(a))} / {f2(_acc(a, 'top5'))}", f2(sa and sa['one_minus_S'], 4), f2(sa and sa['calibration']['ece'], 4),
                 f"{f2(_acc(b))} / {f2(_acc(b, 'top5'))}", f2(sb and sb['one_minus_S'], 4), f2(sb and sb['calibration']['ece'], 4)])
    ta, tb = ns.get("teacher_nols"), ns.get("teacher_ls")
    ra, rb = nm.get("teacher_nols"), nm.get("teacher_ls")
    rows.append(["**this study**: Multi30k en-de transformer (BLEU / valid token acc.)",
                 f"{f2(ra and ra['bleu'])} / {f2(ta and ta['token_accuracy'])}", f2(ta and ta['one_minus_S'], 5),
                 f2(ta and ta['calibration']['ece'], 4),
                 f"{f2(rb and rb['bleu'])} / {f2(tb and tb['token_accuracy'])}", f2(tb and tb['one_minus_S'], 5),
                 f2(tb and tb['calibration']['ece'], 4)])
    for r in PN.TABLE1:
        rows.append([f"paper: ImageNet {r[0]}", f"{f2(r[1], 3)} / {f2(r[2], 3)}", f2(r[3], 4), "–",
                     f"{f2(r[4], 3)} / {f2(r[5], 3)}" if r[4] is not None else "–", f2(r[6], 4), "–"])
    L.append(_table(["model", "top-1 / top-5 w/o LS", "1-S w/o LS", "ECE w/o LS", "top-1 / top-5 w/ LS",
                     "1-S w/ LS", "ECE w/ LS"], rows))
    L.append("")
    if sa and sb and sa.get("classes"):
        L.append("Per-class 1-S of the CIFAR-10 teachers (test split). Shen et al. argue that LS erases the "
                 "within-class variation mostly for classes that are easy to separate anyway:")
        L.append("")
        rows = []
        for c, name in enumerate(sa["classes"]):
            x, y = sa["per_class"][c], sb["per_class"][c]
            acc_n = (a or {}).get("test", {}).get("per_class_top1") or []
            acc_l = (b or {}).get("test", {}).get("per_class_top1") or []
            rows.append([name, f2(acc_n[c] if c < len(acc_n) else None, 1), f2(x, 4),
                         f2(acc_l[c] if c < len(acc_l) else None, 1), f2(y, 4),
                         f"{(y - x) / x * 100:+.0f}%" if x else "–"])
        L.append(_table(["class", "top-1 w/o LS", "1-S w/o LS", "top-1 w/ LS", "1-S w/ LS", "change"], rows))
        L.append("")
    L.append("Müller et al.'s ECE for comparison: " + "; ".join(f"{k}: {x:.3f} → {y:.3f}" for k, (x, y) in PN.ECE.items()) + ".")
    L.append("")

    # -------- Table 2
    L.append("## Distillation at T = 1, soft labels only (compare: paper Table 2)")
    L.append("")
    rows = []
    for t_name, label in (("nols", "w/o LS"), ("ls", "w/ LS")):
        t = vm.get(f"teacher_{t_name}")
        s = vm.get(f"student_{t_name}_T1")
        se = None
        if s:
            p = _acc(s) / 100.0
            se = 100 * math.sqrt(p * (1 - p) / max(1, _n_test(s)))
        rows.append([f"**this study**: CIFAR-10 ({_n_test(s) or '–'} test images)", label,
                     f"{f2(_acc(t))} / {f2(_acc(t, 'top5'))}", v.student_arch,
                     f"{f2(_acc(s))} ± {f2(se)} (1 SE, one seed) / {f2(_acc(s, 'top5'))}"])
    nk = vm.get("student_nokd")
    rows.append(["**this study**: CIFAR-10", "(no teacher)", "–", f"{v.student_arch}, no KD",
                 f"{f2(_acc(nk))} / {f2(_acc(nk, 'top5'))}"])
    for r in PN.TABLE2:
        rows.append([f"paper: {r[0]}", "w/ LS" if r[1] else "w/o LS", f"{f2(r[2], 3)} / {f2(r[3], 3)}",
                     r[4], f"{f2(r[5], 3)} ± {f2(r[6], 3)} (std, 3 runs) / {f2(r[7], 3)}"])
    L.append(_table(["data", "teacher", "teacher top-1 / top-5", "student", "student top-1 / top-5"], rows))
    L.append("")
    sl, sn = vm.get("student_ls_T1"), vm.get("student_nols_T1")
    if sl and sn and sl.get("train_last_epoch") and sn.get("train_last_epoch"):
        L.append(f"Last-epoch training loss of the students (the paper's Fig. 5 point; here the KD term "
                 f"T²·KL(teacher‖student), which leaves out the teacher's entropy that the paper's soft-label "
                 f"cross-entropy includes): {f2(sl['train_last_epoch'].get('train_loss'), 4)} (LS teacher) vs "
                 f"{f2(sn['train_last_epoch'].get('train_loss'), 4)} (no-LS teacher); teachers' mean output entropy "
                 f"on the test split {f2((vs.get('teacher_ls') or {}).get('mean_entropy'), 4)} vs "
                 f"{f2((vs.get('teacher_nols') or {}).get('mean_entropy'), 4)} nats.")
        L.append("")

    # -------- temperature
    L.append("## Student accuracy against temperature (compare: Chandrasegaran et al.)")
    L.append("")
    rows = []
    all_T = sorted(set(v.temperatures) | set(PN.TEMPERATURE))
    for t in all_T:
        x = vm.get(f"student_ls_{SP.t_tag(t)}") if t in v.temperatures else None
        y = vm.get(f"student_nols_{SP.t_tag(t)}") if t in v.temperatures else None
        ax, ay = _acc(x), _acc(y)
        diff = f"{ax - ay:+.2f} (2 SE {2 * _se_diff(ax, ay, _n_test(x), _n_test(y)):.2f})" if ax is not None and ay is not None else "–"
        pp = PN.TEMPERATURE.get(t)
        rows.append([f"{t:g}", f2(ay), f2(ax), diff, f2(pp and pp[0], 3), f2(pp and pp[1], 3),
                     f"{pp[1] - pp[0]:+.2f}" if pp else "–"])
    L.append(_table(["T", f"this study: student of teacher w/o LS (CIFAR-10 {v.student_arch})", "student of teacher w/ LS",
                     "w/ − w/o", "paper: w/o LS (ImageNet R50→R18)", "paper: w/ LS", "paper: w/ − w/o"], rows))
    L.append("")

    pairs = nmt_temperature_pairs(study)
    if len(pairs) > 1:
        L.append(f"Multi30k word-level KD students (test BLEU; the recipe's KD settings otherwise, "
                 f"{study.scale.nmt.recipe_scale} scale):")
        L.append("")
        rows = []
        for t, a, b in pairs:
            ra, rb = nm.get(a), nm.get(b)
            diff = "–"
            if ra and rb:
                g, ci, _ = bleu_cmp(nm, a, b)
                diff = f"{g:+.2f} ({ci})"
            rows.append([f"{t:g}", f2(rb and rb.get("bleu")), f2(ra and ra.get("bleu")), diff,
                         f"{(rb or {}).get('num_updates', '–')} / {(ra or {}).get('num_updates', '–')}"])
        L.append(_table(["T", "student of teacher w/o LS", "student of teacher w/ LS", "w/ − w/o",
                         "updates (w/o / w/)"], rows))
        L.append("")

    # -------- long tail
    f = v.long_tail_imbalance
    if f and f > 1:
        L.append(f"## Long-tailed CIFAR-10, imbalance {f:g} (compare: paper appendix, whose numbers are not available here)")
        L.append("")
        L.append(f"The long-tailed training set keeps n_max·{f:g}^(−c/9) images of class c (the test set stays "
                 "balanced). Head / tail = mean test top-1 of the five classes with the most / fewest training "
                 "images (on the balanced set: classes 0–4 / 5–9).")
        L.append("")
        rows = []
        for pre, setname in (("", "balanced"), ("lt_", f"long-tailed ({f:g})")):
            for role, ls_name, nols_name in LT_PAIRS:
                for name, lab in ((nols_name, "w/o LS"), (ls_name, "w/ LS")):
                    m = vm.get(pre + name)
                    h, t = _head_tail(m)
                    st_ = vs.get(pre + name) or {}
                    arch = v.teacher_arch if role == "teacher" else v.student_arch
                    n_train = sum((m or {}).get("dataset", {}).get("train_counts") or []) or "–"
                    rows.append([setname, f"{role} {arch}", lab, n_train, f2(_acc(m)), f2(h), f2(t),
                                 f2((m or {}).get("test", {}).get("ece"), 4), f2(st_.get("one_minus_S"), 4)])
        L.append(_table(["training set", "model", "teacher trained", "train images", "test top-1", "head top-1",
                         "tail top-1", "ECE", "1-S"], rows))
        L.append("")
        gains = long_tail_gains(vm)
        parts = []
        for role, _, _ in LT_PAIRS:
            g = gains.get(role, {})
            if len(g) == 2:
                parts.append(f"{role}: {g['balanced'][0]:+.2f} (2 SE {2 * g['balanced'][1]:.2f}) balanced, "
                             f"{g['long-tailed'][0]:+.2f} (2 SE {2 * g['long-tailed'][1]:.2f}) long-tailed")
        if parts:
            L.append("LS gain in test top-1 (w/ LS − w/o LS; for students: student of the LS teacher − student of "
                     "the no-LS teacher): " + "; ".join(parts) + ".")
            L.append("")

    # -------- NMT
    L.append("## Multi30k en-de NMT (compare: Shen et al. IWSLT14 curves; Chandrasegaran et al. WMT En-De)")
    L.append("")
    rows = []
    labels = {
        "teacher_ls": ("teacher", "–", "LS 0.1"), "teacher_nols": ("teacher", "–", "no LS"),
        "student_nokd": ("student", "none", ""), "student_wordkd_ls": ("student", "word-level, T=1", "LS teacher"),
        "student_wordkd_nols": ("student", "word-level, T=1", "no-LS teacher"),
        "student_seqkd_ls": ("student", "sequence-level", "LS teacher"),
        "student_seqkd_nols": ("student", "sequence-level", "no-LS teacher"),
    }
    for name in NMT_NAMES:
        r = nm.get(name)
        s = ns.get(name)
        role, kd, what = labels[name]
        kd = (r or {}).get("kd") if (r or {}).get("kd") not in (None, "–") and role == "student" else kd
        rows.append([name, role, kd, what, (r or {}).get("num_updates", "–"), f2(r and r.get("bleu")),
                     f2(r and r.get("chrf")), f2(s and s["one_minus_S"], 5), f2(s and s["calibration"]["ece"], 4)])
    L.append(_table(["model", "role", "KD", "teacher / LS", "updates", "test BLEU", "chrF", "1-S (valid, tokens)",
                     "token ECE"], rows))
    L.append("")
    uneq = _unequal_updates(nm)
    if uneq:
        L.append(f"**Unequal training:** {uneq}. The recipe caps each model's training by wall-clock time at this "
                 "scale (`MAX_TRAIN_HOURS_*`), so models that cost more per update (word-level KD runs the teacher "
                 "too) got fewer updates; differences between such models mix the method with the training length.")
        L.append("")
    L.append(f"Paper numbers: Shen et al. report IWSLT14 De→En only as curves (LS teacher and its student reach "
             f"higher BLEU). Chandrasegaran et al., WMT En→De: teacher {PN.NMT_WMT_TEACHER_BLEU[0]} (w/o LS) vs "
             f"{PN.NMT_WMT_TEACHER_BLEU[1]} (w/ LS); student at T=1 {PN.NMT_WMT_STUDENT_BLEU_T1[0]} vs "
             f"{PN.NMT_WMT_STUDENT_BLEU_T1[1]}. Kim & Rush: sequence-level KD +{PN.SEQKD_GAIN[0]} BLEU (greedy) / "
             f"+{PN.SEQKD_GAIN[1]} (beam) over a no-KD student.")
    sig = next((r.get("bleu_signature") for r in nm.values() if r.get("bleu_signature")), None)
    if sig:
        L.append(f"sacreBLEU signature: `{sig}`.")
    L.append("")

    # -------- figures
    L.append("## Figures")
    L.append("")
    cap = {
        "projection": "Fig. 1 (Müller et al.'s visualisation): penultimate activations of "
                      + "/".join(d.get("projection_classes", ["three classes"]))
                      + " on the plane through their classifier templates (the classifier's weight rows; plane "
                        "origin = first template, orthonormal basis by Gram–Schmidt of t2−t1, t3−t1), teacher with "
                        "LS vs without.",
        "mean_softmax": "Fig. 4: per-class mean softmax vectors of the two teachers (log colour scale).",
        "curves_vision": "Fig. 5 (vision): students' training loss and validation accuracy per epoch.",
        "curves_nmt": "Fig. 5 (NMT): word-level KD students' training loss and validation metric per epoch.",
        "temperature": "CIFAR-10 student test accuracy against the KD temperature, for both teachers.",
        "temperature_nmt": "Multi30k word-level KD students' test BLEU against the KD temperature, for both teachers.",
        "reliability_vision": "Reliability diagrams (ECE) of the vision teachers.",
        "reliability_nmt": "Reliability diagrams (token-level ECE, validation split) of the NMT teachers.",
    }
    for k, p in figs.items():
        nd = d["not_drawn"].get(os.path.basename(p))
        L.append(f"- {cap[k]}" + (f" **{nd}**" if nd else "") + f"  \n  ![{k}]({os.path.basename(p)})")
    L.append("")
    if d.get("projection"):
        L.append("Projection summary (spread = RMS distance to the class centre in the plane; ratio = centre "
                 "distance / mean spread):")
        L.append("")
        L.append("```")
        L.append(json.dumps(d["projection"], indent=1))
        L.append("```")
        L.append("")

    # -------- runs
    L.append("## Runs")
    L.append("")
    rows = []
    for r in study.runs:
        m = _load(study.marker(r.id))
        st = "done" if m else ("failed" if r.id in study.failed else "not finished")
        rows.append([r.id, r.title, st, f"{m['seconds']:.0f} s" if m else "–"])
    L.append(_table(["run", "what", "status", "wall time"], rows))
    L.append("")
    tc = (vm.get("teacher_ls") or {}).get("config") or {}
    sc = (vm.get("student_ls_T1") or {}).get("config") or {}
    ds = tc.get("dataset") or {}
    if tc:  # the settings the runs recorded (they win over the current scale definition)
        sizes = ds.get("sizes", {})
        L.append(f"Vision settings (from the runs' configs): teacher {tc.get('arch')} ({tc.get('epochs')} epochs), "
                 f"student {sc.get('arch', v.student_arch)} ({sc.get('epochs', v.student_epochs)} epochs), batch "
                 f"{tc.get('batch_size')}, {tc.get('opt')} lr {tc.get('lr')} {tc.get('sched')}, weight decay "
                 f"{tc.get('weight_decay')}, LS {tc.get('label_smoothing')} ({tc.get('ls_convention')} convention), "
                 f"students: KD alpha {sc.get('kd_alpha', 1)} (soft labels only); images train / val / test = "
                 f"{sizes.get('train')} / {sizes.get('val')} / {sizes.get('test')} from "
                 f"`{os.path.realpath(tc['data']) if tc.get('data') else None}`.")
    else:
        L.append(f"Vision settings (scale definition; no run finished yet): teacher {v.teacher_arch} "
                 f"({v.teacher_epochs} epochs), student {v.student_arch} ({v.student_epochs} epochs), batch "
                 f"{v.batch_size}, SGD lr {v.lr} cosine, LS {v.label_smoothing} ({v.ls_convention} convention), "
                 f"KD alpha 1 (soft labels only).")
    L.append(f"NMT: `recipes/multi30k/run.sh --scale {study.scale.nmt.recipe_scale}` (work folder "
             f"`{study.nmt_work}`; settings in its logs).")
    L.append("")
    path = os.path.join(study.out, "report.md")
    atomic_write_text(path, "\n".join(L))
    return path
