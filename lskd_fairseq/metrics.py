"""Streaming metrics shared by the NMT and vision code: stability (Shen et al. 2021,
Eq. 2) and calibration (expected calibration error, reliability diagrams).

Both meters keep a fixed amount of state however many samples they see, and both
import only torch.
"""

from typing import Dict, List, Optional

import torch


class StabilityMeter:
    """The paper's stability metric on softmax outputs, computed in one pass.

    ``S = 1 - (1/K) * sum_c (1/n_c) * sum_{i in c} ||p_i - mean_{j in c} p_j||^2``

    where c runs over the K classes that have at least one sample (empty classes
    are left out of the average and listed in ``compute()["empty_classes"]``).
    The paper's tables report ``1 - S``, the mean intra-class variance: lower
    means the model erased more of the within-class information.

    State per class: a count, the running mean of p (length ``dim``) and the
    running sum of squared deviations, merged batch by batch with Chan et al.'s
    parallel update in float64. Memory is ``num_classes * dim`` numbers, whatever
    the number of samples.

    Args:
        num_classes: how many label values there are (labels are 0..num_classes-1;
            negative labels are skipped, so callers can mark positions to ignore).
        dim: length of each probability vector (defaults to ``num_classes``; for
            NMT restricted to frequent tokens it is the vocabulary size).
    """

    def __init__(self, num_classes: int, dim: Optional[int] = None):
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.dim = num_classes if dim is None else dim
        self.count = torch.zeros(num_classes, dtype=torch.float64)
        self.mean = torch.zeros(num_classes, self.dim, dtype=torch.float64)
        self.m2 = torch.zeros(num_classes, dtype=torch.float64)

    @torch.no_grad()
    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: ``probs`` (N, dim) softmax outputs, ``labels`` (N,)."""
        if probs.dim() != 2 or probs.size(1) != self.dim:
            raise ValueError(f"probs must be (N, {self.dim}), got {tuple(probs.shape)}")
        labels = labels.reshape(-1).to(torch.long).cpu()
        if labels.numel() != probs.size(0):
            raise ValueError(f"{probs.size(0)} probability rows but {labels.numel()} labels")
        if labels.numel() and int(labels.max()) >= self.num_classes:
            raise ValueError(f"label {int(labels.max())} out of range for {self.num_classes} classes")
        keep = labels >= 0
        if not bool(keep.any()):
            return
        p = probs.detach().to(device="cpu", dtype=torch.float64)[keep]
        y = labels[keep]
        n_b = torch.zeros(self.num_classes, dtype=torch.float64).index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
        sum_b = torch.zeros(self.num_classes, self.dim, dtype=torch.float64).index_add_(0, y, p)
        present = n_b > 0
        mean_b = torch.zeros_like(sum_b)
        mean_b[present] = sum_b[present] / n_b[present, None]
        # within-batch sum of squared deviations per class, from deviations (no cancellation)
        dev = p - mean_b[y]
        m2_b = torch.zeros(self.num_classes, dtype=torch.float64).index_add_(0, y, (dev * dev).sum(1))
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        w = torch.zeros_like(n)
        w[present] = n_b[present] / n[present]
        self.m2 += m2_b + (delta * delta).sum(1) * n_a * w
        self.mean += delta * w[:, None]
        self.count = n

    def compute(self) -> Dict[str, object]:
        """S, 1-S, per-class intra-class variance, counts and empty classes."""
        present = self.count > 0
        if not bool(present.any()):
            raise ValueError("StabilityMeter.compute() called before any labelled sample was added")
        per_class = torch.full((self.num_classes,), float("nan"), dtype=torch.float64)
        per_class[present] = self.m2[present] / self.count[present]
        one_minus_s = float(per_class[present].mean())
        return {
            "S": 1.0 - one_minus_s,
            "one_minus_S": one_minus_s,
            "per_class": per_class.tolist(),
            "counts": self.count.long().tolist(),
            "num_classes_used": int(present.sum()),
            "empty_classes": (~present).nonzero().squeeze(-1).tolist(),
        }


class CalibrationMeter:
    """Expected calibration error with equal-width confidence bins, streaming.

    ``ECE = sum_b (n_b / N) * |acc_b - conf_b|`` over ``num_bins`` bins of the
    top-1 confidence (Guo et al. 2017; Müller et al. 2019 report it for LS).
    """

    def __init__(self, num_bins: int = 15):
        if num_bins <= 0:
            raise ValueError(f"num_bins must be positive, got {num_bins}")
        self.num_bins = num_bins
        self.count = torch.zeros(num_bins, dtype=torch.float64)
        self.correct = torch.zeros(num_bins, dtype=torch.float64)
        self.confidence = torch.zeros(num_bins, dtype=torch.float64)

    @torch.no_grad()
    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: ``probs`` (N, C) softmax outputs, ``labels`` (N,); negative labels are skipped."""
        labels = labels.reshape(-1).to(torch.long).cpu()
        probs = probs.detach().to(device="cpu", dtype=torch.float64)
        keep = labels >= 0
        conf, pred = probs[keep].max(-1)
        hit = pred.eq(labels[keep]).to(torch.float64)
        # bin b holds confidences in (b/B, (b+1)/B]; a confidence of exactly 0 goes to bin 0
        bins = (torch.ceil(conf * self.num_bins).long() - 1).clamp_(0, self.num_bins - 1)
        self.count.index_add_(0, bins, torch.ones_like(conf))
        self.correct.index_add_(0, bins, hit)
        self.confidence.index_add_(0, bins, conf)

    def compute(self) -> Dict[str, object]:
        total = float(self.count.sum())
        if total == 0:
            raise ValueError("CalibrationMeter.compute() called before any sample was added")
        nonempty = self.count > 0
        acc = torch.full_like(self.count, float("nan"))
        conf = torch.full_like(self.count, float("nan"))
        acc[nonempty] = self.correct[nonempty] / self.count[nonempty]
        conf[nonempty] = self.confidence[nonempty] / self.count[nonempty]
        gaps = (acc[nonempty] - conf[nonempty]).abs() * self.count[nonempty] / total
        edges: List[float] = [b / self.num_bins for b in range(self.num_bins + 1)]
        return {
            "ece": float(gaps.sum()),
            "accuracy": float(self.correct.sum()) / total,
            "mean_confidence": float(self.confidence.sum()) / total,
            "bin_edges": edges,
            "bin_accuracy": acc.tolist(),
            "bin_confidence": conf.tolist(),
            "bin_count": self.count.long().tolist(),
        }
