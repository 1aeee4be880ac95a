"""Müller et al. (2019)'s visualisation of penultimate-layer activations.

Definition used here (Müller, Kornblith & Hinton, "When does label smoothing
help?", NeurIPS 2019, Section 2): the *template* of class k is the row w_k of the
last (classifier) layer's weight matrix, since the logit of class k is
``w_k . x + b_k``. For three classes with templates t1, t2, t3 we take the affine
plane through the three points, with

* origin t1,
* orthonormal basis (e1, e2) from Gram-Schmidt on (t2 - t1, t3 - t1):
  ``e1 = (t2 - t1) / |t2 - t1|``,
  ``e2 = u / |u|`` with ``u = (t3 - t1) - ((t3 - t1) . e1) e1``,

and an activation x is drawn at ``((x - t1) . e1, (x - t1) . e2)``: the
coordinates of its orthogonal projection onto that plane. The templates
themselves land at (0, 0), (|t2 - t1|, 0) and a point with positive second
coordinate.

Everything here is plain numpy; callers collect features and weights.
"""

from typing import Sequence, Tuple

import numpy as np


class DegeneratePlaneError(ValueError):
    """The three templates are (nearly) collinear: they span no plane."""


def plane_basis(templates: np.ndarray, eps: float = 1e-12) -> Tuple[np.ndarray, np.ndarray]:
    """Origin (D,) and orthonormal basis (2, D) of the plane through three templates (3, D)."""
    t = np.asarray(templates, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != 3:
        raise ValueError(f"need exactly three templates of shape (3, D), got {t.shape}")
    origin = t[0]
    a = t[1] - origin
    b = t[2] - origin
    na = np.linalg.norm(a)
    if na <= eps:
        raise DegeneratePlaneError("templates 1 and 2 coincide: no plane")
    e1 = a / na
    u = b - (b @ e1) * e1
    nu = np.linalg.norm(u)
    if nu <= eps * max(1.0, np.linalg.norm(b)):
        raise DegeneratePlaneError("the three templates are collinear: no plane")
    e2 = u / nu
    return origin, np.stack([e1, e2])


def project(features: np.ndarray, origin: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(N, D) activations -> (N, 2) coordinates in the plane (origin, basis)."""
    x = np.asarray(features, dtype=np.float64)
    return (x - origin[None, :]) @ basis.T


def project_classes(
    features: np.ndarray,
    labels: np.ndarray,
    weight: np.ndarray,
    classes: Sequence[int],
    max_per_class: int = 0,
    seed: int = 0,
):
    """Project the activations of three classes onto the plane of their templates.

    ``weight`` is the classifier's (K, D) weight matrix; ``classes`` three class
    indices. Returns a dict with ``points`` (N, 2), ``labels`` (N,) (the original
    class indices), ``templates`` (3, 2) (the projected templates), ``origin``
    and ``basis``.
    """
    classes = [int(c) for c in classes]
    if len(classes) != 3 or len(set(classes)) != 3:
        raise ValueError(f"need three different classes, got {classes}")
    weight = np.asarray(weight, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    origin, basis = plane_basis(weight[classes])
    rng = np.random.default_rng(seed)
    keep = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if max_per_class and idx.size > max_per_class:
            idx = np.sort(rng.choice(idx, size=max_per_class, replace=False))
        keep.append(idx)
    idx = np.concatenate(keep) if keep else np.zeros(0, dtype=int)
    return {
        "points": project(np.asarray(features)[idx], origin, basis),
        "labels": labels[idx],
        "templates": project(weight[classes], origin, basis),
        "classes": classes,
        "origin": origin,
        "basis": basis,
    }


def cluster_summary(points: np.ndarray, labels: np.ndarray, classes: Sequence[int]) -> dict:
    """Per-class spread and centre distances in the projection (numbers for the report).

    ``spread[c]``: root-mean-square distance of class c's points to their centre.
    ``centre_distance[(a, b)]``: distance between the centres of a and b.
    ``ratio[(a, b)]``: centre distance / mean spread of a and b (higher = better separated).
    """
    centres, spread = {}, {}
    for c in classes:
        p = points[labels == c]
        if len(p) == 0:
            continue
        centres[c] = p.mean(0)
        spread[c] = float(np.sqrt(((p - centres[c]) ** 2).sum(1).mean()))
    dist, ratio = {}, {}
    cl = [c for c in classes if c in centres]
    for i in range(len(cl)):
        for j in range(i + 1, len(cl)):
            a, b = cl[i], cl[j]
            d = float(np.linalg.norm(centres[a] - centres[b]))
            dist[f"{a}-{b}"] = d
            s = 0.5 * (spread[a] + spread[b])
            ratio[f"{a}-{b}"] = d / s if s > 0 else float("inf")
    return {"spread": {str(k): v for k, v in spread.items()}, "centre_distance": dist, "separation_ratio": ratio}
