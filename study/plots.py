"""The study's figures, each a function from plain data to a PNG (matplotlib, Agg).

* ``plot_projection``      - Müller-style projection, teacher with vs without LS (paper Fig. 1)
* ``plot_mean_softmax``    - per-class mean softmax vectors, with vs without LS (Fig. 4)
* ``plot_curves``          - students' training loss and validation accuracy/BLEU per epoch (Fig. 5)
* ``plot_temperature``     - student accuracy/BLEU against KD temperature, per teacher
* ``plot_reliability``     - reliability diagrams with ECE
* ``plot_seeds``           - every seed's pair of students (the paired design)
* ``plot_teacher_curves``  - teachers' validation curves, the kept epoch and where training stopped

A figure without data is not drawn at all (the report says why): an empty
picture must never look like a result.
"""

from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lskd_fairseq.atomic import atomic_path  # noqa: E402

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]


def _save(fig, path: str) -> str:
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_projection(panels: Sequence[Dict], path: str, class_names: Optional[Sequence[str]] = None,
                    title: str = "Penultimate activations projected on the plane of three class templates") -> str:
    """``panels``: dicts with ``title``, ``points`` (N, 2), ``labels`` (N,), ``classes`` (3 ids),
    ``templates`` (3, 2) as returned by ``projection.project_classes``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.8), squeeze=False)
    for ax, p in zip(axes[0], panels):
        for j, c in enumerate(p["classes"]):
            m = np.asarray(p["labels"]) == c
            name = class_names[c] if class_names is not None else str(c)
            pts = np.asarray(p["points"])[m]
            ax.scatter(pts[:, 0], pts[:, 1], s=5, alpha=0.45, color=COLORS[j], label=f"{name} (n={m.sum()})")
            t = np.asarray(p["templates"])[j]
            ax.scatter([t[0]], [t[1]], marker="*", s=220, color=COLORS[j], edgecolor="black", zorder=5)
        ax.set_title(p.get("title", ""))
        ax.set_xlabel("e1 (template 1 -> 2)")
        ax.set_ylabel("e2")
        ax.legend(fontsize=8, markerscale=3)
        ax.grid(alpha=0.3)
    fig.suptitle(title + "  (stars: templates)", fontsize=10)
    return _save(fig, path)


def plot_mean_softmax(panels: Sequence[Dict], path: str, class_names: Optional[Sequence[str]] = None) -> str:
    """``panels``: dicts with ``title`` and ``class_means`` (K, K): row c = mean softmax over class c.

    Drawn as heat maps on a log colour scale so that the small off-diagonal mass
    (what LS flattens) is visible.
    """
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 4.8), squeeze=False)
    im = None
    for j, (ax, p) in enumerate(zip(axes[0], panels)):
        m = np.clip(np.asarray(p["class_means"], dtype=np.float64), 1e-5, 1.0)
        im = ax.imshow(m, norm=LogNorm(vmin=1e-5, vmax=1.0), cmap="viridis")
        k = m.shape[0]
        names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(names, rotation=90, fontsize=7)
        ax.set_yticklabels(names, fontsize=7)
        ax.set_xlabel("output class")
        if j == 0:
            ax.set_ylabel("true class")
        ax.set_title(p.get("title", ""), fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="mean softmax probability")
    fig.suptitle("Per-class mean softmax vectors", fontsize=10)
    return _save(fig, path)


def plot_curves(series: Sequence[Dict], path: str, metric_name: str = "validation accuracy (%)",
                title: str = "Students: training loss and validation metric per epoch") -> str:
    """``series``: dicts with ``label``, ``epoch`` list, ``train_loss`` list, ``valid`` list (metric)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, s in enumerate(series):
        c = COLORS[i % len(COLORS)]
        ls = "-" if i % 2 == 0 else "--"
        if s.get("train_loss"):
            a1.plot(s["epoch"][: len(s["train_loss"])], s["train_loss"], ls, marker="o", ms=3, color=c, label=s["label"])
        if s.get("valid"):
            a2.plot(s["epoch"][: len(s["valid"])], s["valid"], ls, marker="o", ms=3, color=c, label=s["label"])
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss")
    a2.set_xlabel("epoch")
    a2.set_ylabel(metric_name)
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_temperature(series: Sequence[Dict], path: str, metric_name: str = "student test accuracy (%)",
                     title: str = "Student against KD temperature") -> str:
    """``series``: dicts with ``label``, ``T`` list, ``value`` list (optionally ``std`` list)."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for i, s in enumerate(series):
        T = np.asarray(s["T"], dtype=float)
        v = np.asarray(s["value"], dtype=float)
        o = np.argsort(T)
        if s.get("std") is not None:
            ax.errorbar(T[o], v[o], yerr=np.asarray(s["std"], dtype=float)[o], marker="o", capsize=3,
                        color=COLORS[i % len(COLORS)], label=s["label"])
        else:
            ax.plot(T[o], v[o], marker="o", color=COLORS[i % len(COLORS)], label=s["label"])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("temperature T")
    ax.set_ylabel(metric_name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_reliability(panels: Sequence[Dict], path: str) -> str:
    """``panels``: dicts with ``title`` and a ``calibration`` dict from ``CalibrationMeter.compute()``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 4.4), squeeze=False)
    for ax, p in zip(axes[0], panels):
        c = p["calibration"]
        edges = np.asarray(c["bin_edges"], dtype=float)
        acc = np.asarray([np.nan if a is None else a for a in c["bin_accuracy"]], dtype=float)
        conf = np.asarray([np.nan if a is None else a for a in c["bin_confidence"]], dtype=float)
        width = edges[1:] - edges[:-1]
        ok = ~np.isnan(acc)
        ax.bar(edges[:-1][ok], acc[ok], width=width[ok], align="edge", edgecolor="black",
               color="tab:blue", alpha=0.8, label="accuracy")
        centres = edges[:-1] + width / 2
        ax.plot(centres[ok], conf[ok], "_", color="tab:red", markersize=14, mew=2, label="mean confidence")
        ax.vlines(centres[ok], np.minimum(acc, conf)[ok], np.maximum(acc, conf)[ok], color="tab:red", lw=1)
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{p.get('title', '')}\nECE = {c['ece']:.4f}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Reliability diagrams", fontsize=10)
    return _save(fig, path)


def plot_seeds(panels: Sequence[Dict], path: str, title: str = "Every seed's student, paired by seed") -> str:
    """``panels``: dicts with ``title``, ``unit`` and ``pairs``: (seed, value of the LS teacher's student,
    value of the no-LS teacher's student). Each seed is a line between its two students, so the
    paired differences the verdicts use can be read off; the bar is the mean."""
    cols = min(4, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, p in zip(axes.flat, panels):
        pairs = p["pairs"]
        for i, (seed, a, b) in enumerate(pairs):
            c = COLORS[i % len(COLORS)]
            ax.plot([0, 1], [b, a], "-o", color=c, ms=5, label=f"seed {seed}")
        for x, vals in ((0, [b for _, _, b in pairs]), (1, [a for _, a, _ in pairs])):
            if vals:
                ax.hlines(np.mean(vals), x - 0.15, x + 0.15, color="black", lw=2)
        ax.set_xticks([0, 1])
        ax.set_xticklabels(p.get("labels", ("no-LS teacher", "LS teacher")), fontsize=8)
        ax.set_xlim(-0.4, 1.4)
        ax.set_ylabel(p.get("unit", ""))
        ax.set_title(p.get("title", ""), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title + "  (bars: means)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_teacher_curves(series: Sequence[Dict], path: str,
                        title: str = "Teachers: validation metric per epoch and where training stopped") -> str:
    """``series``: dicts with ``label``, ``epoch``, ``valid`` (metric per epoch), ``metric`` (axis name),
    ``best_epoch`` (the kept checkpoint, marked with a star) and ``last_epoch`` (dashed line)."""
    fig, axes = plt.subplots(1, len(series), figsize=(4.6 * len(series), 3.8), squeeze=False)
    for ax, s in zip(axes[0], series):
        ep = [e for e, v in zip(s["epoch"], s["valid"]) if v is not None]
        val = [v for v in s["valid"] if v is not None]
        ax.plot(ep, val, "-o", ms=3, color="tab:blue")
        if s.get("best_epoch") in ep:
            ax.plot([s["best_epoch"]], [val[ep.index(s["best_epoch"])]], "*", ms=14, color="tab:red",
                    label=f"kept: epoch {s['best_epoch']}")
        if s.get("last_epoch"):
            ax.axvline(s["last_epoch"], ls="--", color="gray", label=f"stopped after epoch {s['last_epoch']}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(s.get("metric", "validation metric"))
        ax.set_title(s.get("label", ""), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


__all__: List[str] = [
    "plot_projection", "plot_mean_softmax", "plot_curves", "plot_temperature", "plot_reliability", "plot_seeds",
    "plot_teacher_curves",
]
