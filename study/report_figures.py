"""The report's figures, drawn from the collected measurements (``collect.collect``).

``make_figures(study, d)`` returns {figure key: PNG path, or None when not drawn}
and records why a figure was not drawn in ``d["not_drawn"]``. A figure without
data is never written as a picture (a stale one from an earlier report is
removed), so nothing empty can pass for a result.
"""

import os
from typing import Callable, Dict, List, Optional

import numpy as np

from . import figures as figure_data
from . import plots
from . import study_plan
from .collect import acc, bleu, paired, seed_values, teacher_curves

FIGURES = {
    "projection": "fig1_projection.png",
    "mean_softmax": "fig4_mean_softmax.png",
    "curves_vision": "fig5_curves_vision.png",
    "curves_nmt": "fig5_curves_nmt.png",
    "temperature": "fig_temperature.png",
    "temperature_nmt": "fig_temperature_nmt.png",
    "reliability_vision": "fig_reliability_vision.png",
    "reliability_nmt": "fig_reliability_nmt.png",
    "seeds": "fig_seeds.png",
    "teachers": "fig_teacher_curves.png",
}


def _draw(study, d: Dict, figs: Dict, key: str, draw: Callable[[str], Optional[str]]) -> None:
    """Call ``draw(path)``; it returns None when drawn, or the reason it could not be."""
    path = os.path.join(study.out, FIGURES[key])
    why = draw(path)
    if why:
        d["not_drawn"][key] = why
        if os.path.isfile(path):
            os.remove(path)
        figs[key] = None
    else:
        figs[key] = path


def make_figures(study, d: Dict) -> Dict[str, Optional[str]]:
    figs: Dict[str, Optional[str]] = {}
    d["not_drawn"] = {}
    v = study.scale.vision
    first = study.seeds[0]
    vision = "vision" in study.tracks
    nmt = "nmt" in study.tracks

    def projection(path):
        panels = []
        for name, title in (("teacher_ls", "teacher trained with LS"), ("teacher_nols", "teacher trained without LS")):
            npz = os.path.join(study.out, "analysis", f"vision_{name}_features.npz")
            if not os.path.isfile(npz):
                return f"no penultimate features of vision/{name} (run missing or failed)"
            z = np.load(npz)
            res = {"features": z["features"], "feature_labels": z["labels"], "classifier_weight": z["weight"]}
            panels.append(figure_data.projection_panel(res, [int(c) for c in z["classes"]], title))
        classes = (d["vstab"].get("teacher_ls") or d["vstab"].get("teacher_nols") or {}).get("classes")
        plots.plot_projection(panels, path, class_names=classes)
        d["projection"] = {p["title"]: p["summary"] for p in panels}
        d["projection_classes"] = [classes[c] for c in panels[0]["classes"]] if classes else None
        return None

    def mean_softmax(path):
        ls, no = d["vstab"].get("teacher_ls"), d["vstab"].get("teacher_nols")
        if not (ls and no):
            return "a vision teacher's stability result is missing"
        plots.plot_mean_softmax([
            {"title": f"teacher with LS {v.label_smoothing:g} (1-S = {ls['one_minus_S']:.4f})",
             "class_means": ls["class_means"]},
            {"title": f"teacher without LS (1-S = {no['one_minus_S']:.4f})", "class_means": no["class_means"]},
        ], path, class_names=ls["classes"])
        return None

    def curves_vision(path):
        series = []
        for base, label in (("student_ls_T1", "student of LS teacher (T=1)"),
                            ("student_nols_T1", "student of no-LS teacher (T=1)"), ("student_nokd", "student without KD")):
            run = study.vision_dir(study_plan.seed_name(base, first))
            if os.path.isfile(os.path.join(run, "metrics.csv")):
                series.append(figure_data.vision_curve(run, f"{label}, seed {first}"))
        if not series:
            return "no student run finished"
        plots.plot_curves(series, path, metric_name="validation top-1 (%)",
                          title="CIFAR-10 students: training loss (KD term T²·KL at T=1) and validation accuracy")
        return None

    def curves_nmt(path):
        series, metric = [], "validation loss"
        work = os.path.join(study.nmt_work, "logs")
        for name, label in (("student_wordkd_ls", "word-KD student of LS teacher"),
                            ("student_wordkd_nols", "word-KD student of no-LS teacher"),
                            ("student_nokd", "student without KD")):
            log = os.path.join(work, f"en-de.{study_plan.recipe_name(name, first)}.log")
            if os.path.isfile(log):
                c = figure_data.fairseq_curve(log, f"{label}, seed {first}")
                if c["epoch"]:
                    series.append(c)
                    metric = {"bleu": "validation BLEU", "nll_loss": "validation NLL (bits/token)",
                              "loss": "validation loss"}.get(c.get("metric"), metric)
        if not series:
            return "no student training log"
        plots.plot_curves(series, path, metric_name=metric,
                          title="Multi30k students: training loss and validation metric per epoch")
        return None

    def temperature_series(table, pairs, value):
        series = []
        for idx, label in ((1, "teacher with LS"), (2, "teacher without LS")):
            pts = []
            for p in pairs:
                vals = list(seed_values(table, p[idx], study.seeds, value).values())
                if vals:
                    pts.append((p[0], float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0))
            if pts:
                series.append({"label": label, "T": [t for t, _, _ in pts], "value": [m for _, m, _ in pts],
                               "std": [s for _, _, s in pts]})
        return series

    vision_pairs = [(float(t), f"student_ls_{study_plan.t_tag(t)}", f"student_nols_{study_plan.t_tag(t)}")
                    for t in v.temperatures]
    nmt_pairs = [(1.0, "student_wordkd_ls", "student_wordkd_nols")] + study_plan.nmt_sweep_pairs(study.scale)

    def temperature(path):
        series = temperature_series(d["vision"], vision_pairs, acc)
        if not series:
            return "no KD student finished"
        plots.plot_temperature(series, path, metric_name="student test top-1 (%), mean ± std over seeds",
                               title="CIFAR-10 students against KD temperature (alpha = 1)")
        return None

    def temperature_nmt(path):
        series = temperature_series(d["nmt"], nmt_pairs, bleu)
        if not series:
            return "no swept student finished"
        plots.plot_temperature(series, path, metric_name="student test BLEU, mean ± std over seeds",
                               title="Multi30k word-level KD students against KD temperature")
        return None

    def reliability(stab, prefix, what):
        def draw(path):
            panels = [{"title": f"{prefix} {n}", "calibration": stab[n]["calibration"]}
                      for n in ("teacher_nols", "teacher_ls") if n in stab]
            if not panels:
                return f"{what} reliability diagrams not drawn: no teacher stability result"
            plots.plot_reliability(panels, path)
            return None
        return draw

    def seeds(path):
        panels = []
        comparisons = [(d["vision"], f"CIFAR-10 T={t:g}", a, b, acc, "test top-1 (%)") for t, a, b in vision_pairs]
        if v.long_tail_imbalance and v.long_tail_imbalance > 1:
            comparisons.append((d["vision"], "long-tailed T=1", "lt_student_ls_T1", "lt_student_nols_T1", acc,
                                "test top-1 (%)"))
        comparisons += [(d["nmt"], f"Multi30k word-KD T={t:g}", a, b, bleu, "test BLEU") for t, a, b in nmt_pairs]
        for tn in ("ls", "nols"):
            comparisons.append((d["nmt"], f"Multi30k seq-KD ({tn}) vs no KD", f"student_seqkd_{tn}", "student_nokd",
                                bleu, "test BLEU"))
        for table, title, a, b, value, unit in comparisons:
            ss, xa, xb = paired(table, a, b, study.seeds, value=value)
            if ss:
                labels = ("no KD", "seq-KD") if "seq-KD" in title else ("no-LS teacher", "LS teacher")
                panels.append({"title": title, "unit": unit, "pairs": list(zip(ss, xa, xb)), "labels": labels})
        if not panels:
            return "no pair of students finished"
        plots.plot_seeds(panels, path)
        return None

    def teachers(path):
        d["teacher_curves"] = teacher_curves(study, d)
        series = [s for s in d["teacher_curves"] if s["valid"]]
        if not series:
            return "no teacher's validation curve"
        plots.plot_teacher_curves(series, path)
        return None

    plan: List = []
    if vision:
        plan += [("projection", projection), ("mean_softmax", mean_softmax), ("curves_vision", curves_vision),
                 ("temperature", temperature), ("reliability_vision", reliability(d["vstab"], "vision", "vision"))]
    if nmt:
        plan += [("curves_nmt", curves_nmt), ("reliability_nmt", reliability(d["nstab"], "NMT", "NMT"))]
        if len(nmt_pairs) > 1:
            plan.append(("temperature_nmt", temperature_nmt))
    plan += [("seeds", seeds), ("teachers", teachers)]
    for key, draw in plan:
        _draw(study, d, figs, key, draw)
    return figs
