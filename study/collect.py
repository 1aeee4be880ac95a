"""Collecting the study's measurements: what the runs left, the stability analysis of every
model, and the study's own accounts of time.

Reads lskd-vision-train's ``metrics.json``/``metrics.csv``, the recipe's
``results/*.json`` (seed N's students as ``<name>_s<N>``) and training logs, and the
done-markers; measures 1-S and ECE with ``lskd_study.stability``. Everything here
returns plain dicts; the verdicts (``verdicts.py``) and the report
(``render.py``) read them.
"""

import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from lskd_fairseq.atomic import atomic_path

from . import figures as figure_data
from . import study_plan
from .study_plan import fmt_dur

NMT_TEACHERS = ["teacher_ls", "teacher_nols"]
NMT_STUDENTS = ["student_nokd", "student_wordkd_ls", "student_wordkd_nols", "student_seqkd_ls", "student_seqkd_nols"]
NMT_NAMES = NMT_TEACHERS + NMT_STUDENTS


def load_json(path: str) -> Optional[Dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def vision_models(study) -> List[str]:
    return [r.id.split("/", 1)[1] for r in study.runs if r.kind == "vision_train"]


def nmt_dir(study) -> str:
    return os.path.join(study.nmt_work, "en-de")


# ------------------------------------------------------------------ analysis runs
def vision_stability_all(study) -> Dict:
    """1-S/ECE/class means of every finished vision model on the test split; teachers keep
    penultimate features of the projection classes."""
    from .stability import vision_stability

    out_dir = os.path.join(study.out, "analysis")
    complete = True
    for name in vision_models(study):
        ck = os.path.join(study.vision_dir(name), "checkpoint_best.pt")
        js = os.path.join(out_dir, f"vision_{name}.json")
        if not os.path.isfile(os.path.join(study.vision_dir(name), "metrics.json")):
            complete = False
            continue
        if os.path.isfile(js) and os.path.getmtime(js) >= os.path.getmtime(ck):
            continue  # measured since the model was last written
        keep = None
        if "teacher" in name:
            from lskd_vision.engine import load_checkpoint

            classes = load_checkpoint(ck)["config"]["classes"]
            keep = figure_data.class_indices(figure_data.default_projection_classes(classes), classes)
        res = vision_stability(ck, split="test", batch_size=200, keep_features_of=keep, max_features_per_class=500)
        if keep is not None:
            with atomic_path(os.path.join(out_dir, f"vision_{name}_features.npz")) as tmp:
                with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a temporary name
                    np.savez(f, features=res.pop("features"), labels=res.pop("feature_labels"),
                             weight=res.pop("classifier_weight"), classes=np.asarray(keep))
        study.log(f"  1-S of vision/{name}: {res['one_minus_S']:.4f} (test top-1 {res['accuracy']:.2f}%, "
                  f"ECE {res['calibration']['ece']:.4f})")
        figure_data.write_json(js, res)
    return {"complete": complete}


def nmt_stability_models(study) -> List[Tuple[str, str]]:
    """(name in the analysis, checkpoint) of the NMT models whose 1-S is measured: both teachers
    and the first seed's word-KD students."""
    s = study.seeds[0]
    out = [(n, os.path.join(nmt_dir(study), "models", n, "checkpoint_best.pt")) for n in NMT_TEACHERS]
    out += [(study_plan.seed_name(n, s),
             os.path.join(nmt_dir(study), "models", study_plan.recipe_name(n, s), "checkpoint_best.pt"))
            for n in ("student_wordkd_ls", "student_wordkd_nols")]
    return out


def nmt_stability_all(study) -> Dict:
    """Token-level 1-S and ECE of both NMT teachers (and the word-KD students) on the valid split."""
    from .stability import fairseq_stability

    out_dir = os.path.join(study.out, "analysis")
    complete = True
    for name, ck in nmt_stability_models(study):
        js = os.path.join(out_dir, f"nmt_{name}.json")
        if not os.path.isfile(ck):
            complete = False
            continue
        if os.path.isfile(js) and os.path.getmtime(js) >= os.path.getmtime(ck):
            continue  # measured since the model was last written
        res = fairseq_stability(ck, data_bin=os.path.join(nmt_dir(study), "bin"), split="valid",
                                top_tokens=study.scale.nmt.top_tokens)
        study.log(f"  1-S of nmt/{name}: {res['one_minus_S']:.5f} over {res['num_classes_used']} token classes "
                  f"(valid token acc {res['token_accuracy']:.2f}%, ECE {res['calibration']['ece']:.4f})")
        figure_data.write_json(js, res)
    return {"complete": complete}


# ------------------------------------------------------------------ collecting
def collect(study) -> Dict:
    """Every measurement the report uses. Students are keyed by their seeded names
    (``student_ls_T1_seed2``); teachers by their plain names."""
    d: Dict = {"vision": {}, "vstab": {}, "nmt": {}, "nstab": {}, "seeds": list(study.seeds)}
    for name in vision_models(study):
        m = load_json(os.path.join(study.vision_dir(name), "metrics.json"))
        if m:
            d["vision"][name] = m
        s = load_json(os.path.join(study.out, "analysis", f"vision_{name}.json"))
        if s:
            d["vstab"][name] = s
    if "nmt" in study.tracks:
        for name in NMT_TEACHERS:
            r = load_json(os.path.join(nmt_dir(study), "results", f"{name}.json"))
            if r:
                d["nmt"][name] = r
        for seed in study.seeds:
            for name in NMT_STUDENTS + study_plan.nmt_sweep_names(study.scale):
                r = load_json(os.path.join(nmt_dir(study), "results", f"{study_plan.recipe_name(name, seed)}.json"))
                if r:
                    d["nmt"][study_plan.seed_name(name, seed)] = r
        for name, _ in nmt_stability_models(study):
            s = load_json(os.path.join(study.out, "analysis", f"nmt_{name}.json"))
            if s:
                d["nstab"][name] = s
    return d


def acc(m: Optional[Dict], key: str = "top1") -> Optional[float]:
    if not m or "test" not in m:
        return None
    return m["test"].get(key)


def bleu(r: Optional[Dict]) -> Optional[float]:
    return r.get("bleu") if r else None


def seed_values(table: Dict, base: str, seeds: Sequence[int], value=acc) -> Dict[int, float]:
    """{seed: value} of the seeded runs of ``base`` that finished."""
    out = {}
    for s in seeds:
        v = value(table.get(study_plan.seed_name(base, s)))
        if v is not None:
            out[s] = float(v)
    return out


def paired(table: Dict, a: str, b: str, seeds: Sequence[int], value=acc) -> Tuple[List[int], List[float], List[float]]:
    """Seeds where both ``a`` and ``b`` finished, and their values, in seed order."""
    va, vb = seed_values(table, a, seeds, value), seed_values(table, b, seeds, value)
    both = [s for s in seeds if s in va and s in vb]
    return both, [va[s] for s in both], [vb[s] for s in both]


def mean_std_text(values: Sequence[float], nd: int = 2) -> str:
    """``mean ± std (n = k)`` as in the paper's Table 2 (sample std); ``–`` when empty."""
    if not values:
        return "–"
    m = float(np.mean(values))
    if len(values) == 1:
        return f"{m:.{nd}f} (n = 1)"
    return f"{m:.{nd}f} ± {float(np.std(values, ddof=1)):.{nd}f} (n = {len(values)})"


def ls_convention(m: Optional[Dict]) -> Optional[str]:
    return ((m or {}).get("config") or {}).get("ls_convention")


# ------------------------------------------------------------------ accounts
def ran_on(marker: Dict) -> str:
    """Where a finished run ran, from its done-marker: a Slurm job (id, node, device), a GPU of
    this machine (``--gpus``), or this machine's default device."""
    if marker.get("reused"):
        return "reused"
    if marker.get("slurm_job"):
        return f"Slurm job {marker['slurm_job']} ({marker.get('host', '?')}, {marker.get('device', '?')})"
    dev = marker.get("device") or "local"
    return "this machine" if dev == "local" else f"this machine, {dev}"


def accounts(study) -> Dict:
    """The study's time: every finished run's wall time (from its done-marker), their sum, the
    makespan on the job slots (per invocation: last end minus first start, summed over the
    invocations that ran something), and, when one invocation ran every run, its real wall time."""
    runs = []
    for r in study.runs:
        m = load_json(study.marker(r.id))
        if m:
            runs.append(m)
    total = sum(float(m.get("seconds", 0.0)) for m in runs)
    by_inv: Dict[float, List[Dict]] = {}
    for m in runs:
        if m.get("start") is not None and m.get("end") is not None and not m.get("reused"):
            by_inv.setdefault(m.get("invocation"), []).append(m)
    makespan = sum(max(m["end"] for m in ms) - min(m["start"] for m in ms) for ms in by_inv.values())
    invocations = load_json(os.path.join(study.out, "invocations.json")) or []
    one_go = None
    done_all = len(runs) == len(study.runs)
    if done_all and len(by_inv) == 1 and len(runs) == len(by_inv[next(iter(by_inv))]):
        inv_start = next(iter(by_inv))
        match = [i for i in invocations if i.get("start") == inv_start]
        if match:
            one_go = match[-1]["end"] - match[-1]["start"]
    where: Dict[str, int] = {}
    for m in runs:
        key = ran_on(m)
        key = re.sub(r"^Slurm job \d+ ", "Slurm jobs ", key)  # counted by node and device, ids in the Runs table
        where[key] = where.get(key, 0) + 1
    return {"runs": len(runs), "planned": len(study.runs), "sum_s": total, "makespan_s": makespan,
            "ran_on": sorted(where.items()),
            "invocations": len(by_inv), "one_go_s": one_go, "jobs": study.jobs,
            "per_run": {m["run"]: float(m.get("seconds", 0.0)) for m in runs}}


def _fairseq_tokens(log_path: str) -> Optional[float]:
    """Target tokens a fairseq-train run saw in training batches: the ``wpb`` of its last training
    log line (an interval's or an epoch's) times its ``num_updates`` (None when there is none)."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ("| train |" in ln or "train_inner" in ln) and "num_updates" in ln]
    except OSError:
        return None
    for ln in reversed(lines):
        wpb, upd = re.search(r"wpb[ =]([\d.]+)", ln), re.search(r"num_updates[ =](\d+)", ln)
        if wpb and upd:
            return float(wpb.group(1)) * float(upd.group(1))
    return None


CACHE_SAVINGS_HOW = (
    "How this is estimated: a vision student sees exactly its cache's views, so it would have run the "
    "teacher for about the cache's build time; an NMT word-KD student would have run the teacher over the "
    "target tokens of its training batches (its log's wpb x updates) at the rate the caches were built "
    "(tokens of both teachers' caches / build time), validation passes left out. Saved = the readers' "
    "teacher time - the build time.")


def cache_savings(study) -> List[Dict]:
    """What the teacher caches saved: one row per finished cache run, with its build time, its
    readers and the teacher time they would have spent running the teacher themselves
    (``CACHE_SAVINGS_HOW``); ``saved_s`` is negative when a cache has too few readers."""
    rows = []
    for r in study.runs:
        if r.kind != "vision_cache" and r.id != study_plan.NMT_CACHE[0]:
            continue
        m = load_json(study.marker(r.id))
        if not m:
            continue
        build = float(m.get("seconds", 0.0))
        readers = [x for x in study.runs if r.id in x.deps and study.is_done(x.id)]
        if r.kind == "vision_cache":
            teacher_s = build * len(readers)
            n_readers = len(readers)
        else:
            tokens = 0.0
            for name in NMT_TEACHERS:
                for split in ("train", "valid"):
                    h = load_json(os.path.join(nmt_dir(study), "teacher_cache", name, f"{split}.topk.json")) or {}
                    tokens += float(h.get("n_tokens") or 0)
            steps = [st for x in readers for st in x.args.get("steps", [])]
            read = [_fairseq_tokens(os.path.join(study.nmt_work, "logs", f"en-de.{st}.log")) for st in steps]
            n_readers = len(steps)
            teacher_s = build * sum(t for t in read if t) / tokens if tokens else 0.0
        rows.append({"run": r.id, "track": r.track, "build_s": build, "readers": n_readers,
                     "teacher_s": teacher_s, "saved_s": teacher_s - build})
    return rows


def cache_savings_line(rows: List[Dict]) -> Optional[str]:
    """One line on what the teacher caches cost and saved (None when no cache has finished)."""
    if not rows:
        return None
    build = sum(x["build_s"] for x in rows)
    teacher = sum(x["teacher_s"] for x in rows)
    parts = []
    for track in ("vision", "nmt"):
        mine = [x for x in rows if x["track"] == track]
        if mine:
            parts.append(f"{track}: {len(mine)} cache run(s) built in {fmt_dur(sum(x['build_s'] for x in mine))}, "
                         f"read by {sum(x['readers'] for x in mine)} student(s) that would have spent "
                         f"~{fmt_dur(sum(x['teacher_s'] for x in mine))} running the teacher")
    return (f"teacher caches saved ~{fmt_dur(teacher - build)} of run time" if teacher >= build else
            f"teacher caches cost ~{fmt_dur(build - teacher)} more than running the teachers online") + \
        " (" + "; ".join(parts) + ")"


# ------------------------------------------------------------------ teachers' training
_STOP_PATTERNS = [
    ("early stop since valid performance hasn't improved", "early stop: validation stopped improving"),
    ("Stopping training due to num_updates", "reached the update limit"),
    ("Stopping training due to cumulative_training_time", "reached the wall-clock limit"),
]


def teacher_curves(study, d: Dict) -> List[Dict]:
    """Every teacher's validation curve, the epoch it kept and where and why it stopped."""
    out = []
    for name in vision_models(study):
        if "teacher" not in name:
            continue
        run = study.vision_dir(name)
        m = d["vision"].get(name)
        if not m or not os.path.isfile(os.path.join(run, "metrics.csv")):
            continue
        c = figure_data.vision_curve(run, f"vision/{name}")
        last = max(c["epoch"]) if c["epoch"] else None
        why = (f"fixed schedule of {m.get('epochs')} epochs; kept the epoch with the best {m['selected_on']}"
               if str(m.get("selected_on", "")).startswith("val") else
               f"fixed schedule of {m.get('epochs')} epochs; kept the last epoch (no validation split)")
        valid = c["valid"] if c["valid"] else []
        out.append({"label": f"vision/{name}", "epoch": c["epoch"], "valid": valid,
                    "metric": "validation top-1 (%)", "best_epoch": m.get("best_epoch"), "last_epoch": last,
                    "why": why, "test": acc(m)})
    if "nmt" in study.tracks:
        for name in NMT_TEACHERS:
            log = os.path.join(study.nmt_work, "logs", f"en-de.{name}.log")
            if not os.path.isfile(log):
                continue
            c = figure_data.fairseq_curve(log, f"nmt/{name}")
            if not c["epoch"]:
                continue
            pts = [(e, v) for e, v in zip(c["epoch"], c["valid"]) if v is not None] if c["valid"] else []
            best = None
            if pts:
                pick = max if c.get("metric") == "bleu" else min
                best = pick(pts, key=lambda p: p[1])[0]
            with open(log, encoding="utf-8", errors="replace") as f:
                text = f.read()
            why = next((w for pat, w in _STOP_PATTERNS if pat in text), "stopped (reason not in the log)")
            metric = {"bleu": "validation BLEU", "nll_loss": "validation NLL (bits/token)"}.get(
                c.get("metric"), "validation loss")
            out.append({"label": f"nmt/{name}", "epoch": c["epoch"], "valid": c["valid"], "metric": metric,
                        "best_epoch": best, "last_epoch": max(c["epoch"]),
                        "why": f"{why}; kept the epoch with the best {metric}", "test": bleu(d["nmt"].get(name))})
    return out
