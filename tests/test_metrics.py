"""StabilityMeter and CalibrationMeter against their formulas on held arrays."""

import numpy as np
import pytest
import torch

from lskd_fairseq.metrics import CalibrationMeter, StabilityMeter


def _stability_direct(p: np.ndarray, y: np.ndarray):
    """Eq. 2 of Shen et al. written out on a held array."""
    per_class = []
    for c in np.unique(y):
        pc = p[y == c]
        per_class.append(((pc - pc.mean(0)) ** 2).sum(1).mean())
    one_minus_s = float(np.mean(per_class))
    return 1.0 - one_minus_s, one_minus_s


def _random_probs(n, k, seed, sharp=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(sharp * torch.randn(n, k, generator=g, dtype=torch.float64), -1)


def test_hand_computed_two_classes():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5]])
    y = torch.tensor([0, 0, 1, 1])
    m = StabilityMeter(2)
    m.update(p, y)
    r = m.compute()
    # class 0: mean (0.5, 0.5), each sample at squared distance 0.5; class 1: 0
    assert r["per_class"] == pytest.approx([0.5, 0.0])
    assert r["one_minus_S"] == pytest.approx(0.25)
    assert r["S"] == pytest.approx(0.75)


@pytest.mark.parametrize("batch", [1, 7, 64, 1000])
def test_streaming_equals_formula_for_any_batching(batch):
    k = 10
    p = _random_probs(1000, k, seed=0, sharp=3.0)
    y = torch.randint(0, k, (1000,), generator=torch.Generator().manual_seed(1))
    m = StabilityMeter(k)
    for i in range(0, 1000, batch):
        m.update(p[i : i + batch].float(), y[i : i + batch])
    r = m.compute()
    s, oms = _stability_direct(p.float().double().numpy(), y.numpy())
    assert r["S"] == pytest.approx(s, rel=1e-9)
    assert r["one_minus_S"] == pytest.approx(oms, rel=1e-9)
    assert sum(r["counts"]) == 1000


def test_memory_does_not_grow_with_samples():
    m = StabilityMeter(5)
    sizes = (m.count.numel(), m.mean.numel(), m.m2.numel())
    for seed in range(20):
        m.update(_random_probs(200, 5, seed), torch.randint(0, 5, (200,)))
    assert (m.count.numel(), m.mean.numel(), m.m2.numel()) == sizes


def test_empty_classes_are_left_out_and_reported():
    p = _random_probs(50, 6, seed=2)
    y = torch.randint(0, 3, (50,), generator=torch.Generator().manual_seed(3))  # classes 3..5 unseen
    m = StabilityMeter(6)
    m.update(p, y)
    r = m.compute()
    assert r["empty_classes"] == [3, 4, 5]
    assert r["num_classes_used"] == 3
    _, oms = _stability_direct(p.numpy(), y.numpy())
    assert r["one_minus_S"] == pytest.approx(oms, rel=1e-9)


def test_restricted_classes_with_wider_distributions_and_ignored_labels():
    # NMT use: classes are a subset of tokens, distributions span the whole vocabulary
    p = _random_probs(300, 40, seed=4)
    y = torch.randint(-1, 8, (300,), generator=torch.Generator().manual_seed(5))  # -1 = not a tracked class
    m = StabilityMeter(8, dim=40)
    m.update(p, y)
    keep = (y >= 0).numpy()
    _, oms = _stability_direct(p.numpy()[keep], y.numpy()[keep])
    assert m.compute()["one_minus_S"] == pytest.approx(oms, rel=1e-9)


def test_stability_errors():
    m = StabilityMeter(3)
    with pytest.raises(ValueError, match="before any"):
        m.compute()
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        m.update(torch.rand(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        m.update(torch.rand(2, 3), torch.tensor([0, 3]))


def test_ece_hand_computed():
    # two samples at confidence 0.9 (one right), two at 0.6 (both right)
    p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    y = torch.tensor([0, 1, 1, 1])
    m = CalibrationMeter(num_bins=10)
    m.update(p[:3], y[:3])
    m.update(p[3:], y[3:])
    r = m.compute()
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert r["ece"] == pytest.approx(expected)
    assert r["accuracy"] == pytest.approx(0.75)
    assert sum(r["bin_count"]) == 4


def test_ece_matches_direct_computation():
    p = _random_probs(2000, 10, seed=6, sharp=4.0)
    y = torch.randint(0, 10, (2000,), generator=torch.Generator().manual_seed(7))
    m = CalibrationMeter(15)
    for i in range(0, 2000, 333):
        m.update(p[i : i + 333], y[i : i + 333])
    conf, pred = p.max(-1)
    edges = np.linspace(0, 1, 16)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = ((conf > lo) & (conf <= hi)).numpy()
        if sel.any():
            ece += sel.mean() * abs((pred.numpy()[sel] == y.numpy()[sel]).mean() - conf.numpy()[sel].mean())
    assert m.compute()["ece"] == pytest.approx(ece, rel=1e-9)
