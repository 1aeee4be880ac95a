"""The shared loss math: hand-computed cases, gradients, conventions, masking."""

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from lskd_fairseq import losses
from lskd_fairseq.losses import kd_loss, label_smoothed_nll_loss, ls_kd_loss, smoothed_targets


def _fairseq_reference(lprobs, target, epsilon, ignore_index=None, reduce=True):
    """fairseq 0.12's label_smoothed_nll_loss, restated here as the reference."""
    if target.dim() == lprobs.dim() - 1:
        target = target.unsqueeze(-1)
    nll_loss = -lprobs.gather(dim=-1, index=target)
    smooth_loss = -lprobs.sum(dim=-1, keepdim=True)
    if ignore_index is not None:
        pad_mask = target.eq(ignore_index)
        nll_loss.masked_fill_(pad_mask, 0.0)
        smooth_loss.masked_fill_(pad_mask, 0.0)
    else:
        nll_loss = nll_loss.squeeze(-1)
        smooth_loss = smooth_loss.squeeze(-1)
    if reduce:
        nll_loss = nll_loss.sum()
        smooth_loss = smooth_loss.sum()
    eps_i = epsilon / (lprobs.size(-1) - 1)
    loss = (1.0 - epsilon - eps_i) * nll_loss + eps_i * smooth_loss
    return loss, nll_loss


def test_import_does_not_import_fairseq():
    code = "import lskd_fairseq.losses, lskd_fairseq.metrics, sys; assert 'fairseq' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ls_hand_computed_fairseq_convention():
    # K = 3, gold = 0, eps = 0.3 -> target (0.7, 0.15, 0.15)
    p = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    loss, nll = label_smoothed_nll_loss(p.log(), torch.tensor([0]), 0.3)
    expected = -(0.7 * math.log(0.5) + 0.15 * math.log(0.3) + 0.15 * math.log(0.2))
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert nll.item() == pytest.approx(-math.log(0.5), rel=1e-12)


def test_ls_hand_computed_uniform_convention():
    # K = 3, gold = 0, eps = 0.3 -> target (0.8, 0.1, 0.1)
    p = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    loss, _ = label_smoothed_nll_loss(p.log(), torch.tensor([0]), 0.3, convention="uniform")
    expected = -(0.8 * math.log(0.5) + 0.1 * math.log(0.3) + 0.1 * math.log(0.2))
    assert loss.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("convention", ["fairseq", "uniform"])
def test_ls_equals_cross_entropy_with_smoothed_targets(convention):
    torch.manual_seed(0)
    logits = torch.randn(7, 11, dtype=torch.float64)
    target = torch.randint(0, 11, (7,))
    lprobs = logits.log_softmax(-1)
    loss, _ = label_smoothed_nll_loss(lprobs, target, 0.1, convention=convention)
    dense = smoothed_targets(target, 11, 0.1, convention)
    assert dense.sum(-1).allclose(torch.ones(7, dtype=torch.float64))
    assert loss.item() == pytest.approx(-(dense * lprobs).sum().item(), rel=1e-12)
    if convention == "uniform":  # torch's own label smoothing uses this convention
        ref = F.cross_entropy(logits, target, label_smoothing=0.1, reduction="sum")
        assert loss.item() == pytest.approx(ref.item(), rel=1e-12)


def test_ls_bitwise_identical_to_fairseq_reference():
    torch.manual_seed(1)
    lprobs = torch.randn(5, 9, 13).log_softmax(-1)
    target = torch.randint(0, 13, (5, 9))
    target[0, :3] = 1  # padding
    for ignore in (None, 1):
        for reduce in (True, False):
            a = label_smoothed_nll_loss(lprobs, target, 0.1, ignore_index=ignore, reduce=reduce)
            b = _fairseq_reference(lprobs, target, 0.1, ignore_index=ignore, reduce=reduce)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_ls_matches_fairseq_when_installed():
    fairseq_ls = pytest.importorskip("fairseq.criterions.label_smoothed_cross_entropy")
    torch.manual_seed(2)
    lprobs = torch.randn(40, 17).log_softmax(-1)
    target = torch.randint(0, 17, (40,))
    a = label_smoothed_nll_loss(lprobs, target, 0.2, ignore_index=3)
    b = fairseq_ls.label_smoothed_nll_loss(lprobs, target, 0.2, ignore_index=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_ls_rejects_unknown_convention():
    with pytest.raises(ValueError, match="convention"):
        label_smoothed_nll_loss(torch.zeros(1, 3), torch.tensor([0]), 0.1, convention="szegedy")


def _kd_direct(s, t, T):
    q = F.softmax(t / T, -1)
    return (T * T * (q * (q.log() - F.log_softmax(s / T, -1))).sum(-1))


def test_kd_hand_computed():
    s = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)  # q = (0.75, 0.25)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_loss(s, t).item() == pytest.approx(expected, rel=1e-12)
    # T = 2: q = softmax(t/2) = (sqrt3, 1)/(sqrt3+1); factor T^2 = 4
    q0 = math.sqrt(3) / (math.sqrt(3) + 1)
    expected_t2 = 4 * (q0 * math.log(q0 / 0.5) + (1 - q0) * math.log((1 - q0) / 0.5))
    assert kd_loss(s, t, temperature=2.0).item() == pytest.approx(expected_t2, rel=1e-12)


def test_kd_zero_when_student_equals_teacher():
    z = torch.randn(4, 6, 10)
    assert kd_loss(z, z.clone(), temperature=3.0).abs().item() < 1e-5


@pytest.mark.parametrize("T", [0.5, 1.0, 4.0])
def test_kd_matches_direct_formula_and_t_squared(T):
    torch.manual_seed(3)
    s, t = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, 9, dtype=torch.float64)
    got = kd_loss(s, t, temperature=T, reduce=False)
    assert torch.allclose(got, _kd_direct(s, t, T), rtol=1e-10, atol=1e-12)
    # the T^2 factor: the loss divided by T^2 is the plain KL at temperature T
    kl = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True, reduction="sum")
    assert (got.sum() / T**2).item() == pytest.approx(kl.item(), rel=1e-10)


@pytest.mark.parametrize("T", [1.0, 2.5])
def test_kd_gradcheck_full_and_topk(T):
    torch.manual_seed(4)
    s = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: kd_loss(x, t, temperature=T, reduce=False), (s,))
    assert torch.autograd.gradcheck(lambda x: kd_loss(x, t, temperature=T, topk=3, reduce=False), (s,))
    mask = torch.tensor([False, True, False, False, True])
    assert torch.autograd.gradcheck(lambda x: kd_loss(x, t, temperature=T, ignore_mask=mask), (s,))


def test_kd_gradient_is_t_times_probability_gap():
    torch.manual_seed(5)
    T = 2.0
    s = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 8, dtype=torch.float64)
    kd_loss(s, t, temperature=T).backward()
    expected = T * (F.softmax(s.detach() / T, -1) - F.softmax(t / T, -1))
    assert torch.allclose(s.grad, expected, atol=1e-12)


def test_topk_equal_to_vocab_equals_full():
    torch.manual_seed(6)
    s, t = torch.randn(4, 5, 12), torch.randn(4, 5, 12)
    full = kd_loss(s, t, temperature=2.0)
    assert kd_loss(s, t, temperature=2.0, topk=12).item() == pytest.approx(full.item(), rel=1e-6)
    vals, idx = t.topk(12, -1)
    assert kd_loss(s, (idx, vals), temperature=2.0).item() == pytest.approx(full.item(), rel=1e-6)


def test_topk_renormalises_teacher_over_its_k_classes():
    torch.manual_seed(7)
    s, t = torch.randn(3, 10, dtype=torch.float64), torch.randn(3, 10, dtype=torch.float64)
    T, k = 1.5, 4
    vals, idx = t.topk(k, -1)
    q = F.softmax(vals / T, -1)
    logp = F.log_softmax(s / T, -1).gather(-1, idx)
    expected = T * T * (q * (q.log() - logp)).sum(-1)
    assert torch.allclose(kd_loss(s, t, temperature=T, topk=k, reduce=False), expected, rtol=1e-10)
    # a cached pair with more classes than asked for is cut to the k largest
    vals8, idx8 = t.topk(8, -1)
    perm = torch.randperm(8)
    pair = (idx8[:, perm], vals8[:, perm])
    assert torch.allclose(kd_loss(s, pair, temperature=T, topk=k, reduce=False), expected, rtol=1e-10)


def test_topk_larger_than_cache_is_refused():
    vals, idx = torch.randn(2, 10).topk(4, -1)
    with pytest.raises(ValueError, match="more classes than the teacher provides"):
        kd_loss(torch.randn(2, 10), (idx, vals), topk=8)


def test_masking_removes_positions_and_their_gradient():
    torch.manual_seed(8)
    s = torch.randn(2, 3, 6, requires_grad=True)
    t = torch.randn(2, 3, 6)
    mask = torch.tensor([[False, True, False], [True, True, False]])
    per = kd_loss(s, t, ignore_mask=mask, reduce=False)
    assert per.shape == (2, 3)
    assert torch.all(per[mask] == 0)
    unmasked = kd_loss(s, t, reduce=False)
    assert torch.allclose(per[~mask], unmasked[~mask])
    per.sum().backward()
    assert torch.all(s.grad[mask] == 0)
    assert torch.all(s.grad[~mask].abs().sum(-1) > 0)


def test_kd_runs_in_float32_for_half_inputs():
    torch.manual_seed(9)
    s, t = torch.randn(4, 50), torch.randn(4, 50)
    ref = kd_loss(s, t, temperature=2.0)
    half = kd_loss(s.half(), t.half(), temperature=2.0)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(ref.item(), rel=2e-2)


def test_kd_chunking_gives_the_same_result(monkeypatch):
    torch.manual_seed(10)
    s = torch.randn(37, 23, requires_grad=True)
    t = torch.randn(37, 23)
    whole = kd_loss(s, t, temperature=2.0)
    (g_whole,) = torch.autograd.grad(whole, s)
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 50)  # two rows a chunk
    chunked = kd_loss(s, t, temperature=2.0)
    (g_chunked,) = torch.autograd.grad(chunked, s)
    assert chunked.item() == pytest.approx(whole.item(), rel=1e-6)
    assert torch.allclose(g_chunked, g_whole, atol=1e-7)


def test_kd_rejects_bad_arguments():
    s = torch.randn(2, 5)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, s, temperature=0.0)
    with pytest.raises(ValueError, match="topk"):
        kd_loss(s, s, topk=-1)
    with pytest.raises(ValueError, match="does not match"):
        kd_loss(s, torch.randn(2, 6))


def test_combined_alpha_zero_is_ls_exactly():
    torch.manual_seed(11)
    logits = torch.randn(6, 15)
    target = torch.randint(0, 15, (6,))
    lprobs = logits.log_softmax(-1)
    loss, parts = ls_kd_loss(lprobs, target, 0.1, logits, torch.randn(6, 15), alpha=0.0, ignore_index=2)
    ref, nll = label_smoothed_nll_loss(lprobs, target, 0.1, ignore_index=2)
    assert torch.equal(loss, ref) and torch.equal(parts["nll_loss"], nll)
    assert parts["kd_loss"].item() == 0.0


def test_combined_mixes_with_alpha_and_masks_padding():
    torch.manual_seed(12)
    logits = torch.randn(3, 4, 9, dtype=torch.float64)
    teacher = torch.randn(3, 4, 9, dtype=torch.float64)
    target = torch.randint(1, 9, (3, 4))
    target[2, 2:] = 0  # padding index 0
    lprobs = logits.log_softmax(-1)
    alpha, T = 0.7, 2.0
    loss, parts = ls_kd_loss(lprobs, target, 0.1, logits, teacher, alpha=alpha, temperature=T, ignore_index=0)
    ls, _ = label_smoothed_nll_loss(lprobs, target, 0.1, ignore_index=0)
    kd = _kd_direct(logits, teacher, T)[target.ne(0)].sum()
    assert loss.item() == pytest.approx(((1 - alpha) * ls + alpha * kd).item(), rel=1e-12)
    assert parts["kd_loss"].item() == pytest.approx(kd.item(), rel=1e-12)
    only_kd, _ = ls_kd_loss(lprobs, target, 0.1, logits, teacher, alpha=1.0, temperature=T, ignore_index=0)
    assert only_kd.item() == pytest.approx(kd.item(), rel=1e-12)
    with pytest.raises(ValueError, match="alpha"):
        ls_kd_loss(lprobs, target, 0.1, logits, teacher, alpha=1.5)


def _unfused(logits, target, teacher, eps, alpha, T, topk, pad, convention):
    """(1 - alpha) LS + alpha KD written with plain autograd, as the reference."""
    lprobs = F.log_softmax(logits, -1)
    ls, nll = label_smoothed_nll_loss(lprobs, target, eps, ignore_index=pad, convention=convention)
    if isinstance(teacher, tuple):
        idx, vals = teacher
    elif topk:
        vals, idx = teacher.topk(topk, -1)
    else:
        idx, vals = None, teacher
    q = F.softmax(vals / T, -1)
    logp = F.log_softmax(logits / T, -1)
    if idx is not None:
        logp = logp.gather(-1, idx)
    kd_rows = T * T * (q * (q.log() - logp)).sum(-1)
    kd = kd_rows[target.ne(pad)].sum()
    return (1 - alpha) * ls + alpha * kd, ls, nll, kd


@pytest.mark.parametrize("convention", ["fairseq", "uniform"])
@pytest.mark.parametrize("topk", [0, 3])
@pytest.mark.parametrize("alpha,T", [(0.3, 1.0), (0.9, 2.0), (1.0, 0.6), (1.0, 1.0)])
def test_fused_ls_kd_matches_plain_autograd(convention, topk, alpha, T):
    torch.manual_seed(13)
    logits = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(11, 8, dtype=torch.float64)
    target = torch.randint(1, 8, (11,))
    target[[2, 7]] = 0  # padding
    ref, ls, nll, kd = _unfused(logits, target, teacher, 0.1, alpha, T, topk, 0, convention)
    (g_ref,) = torch.autograd.grad(ref, logits)
    got, parts = ls_kd_loss(None, target, 0.1, logits, teacher, alpha=alpha, temperature=T, topk=topk,
                            ignore_index=0, convention=convention)
    (g_got,) = torch.autograd.grad(got, logits)
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)
    assert parts["ls_loss"].item() == pytest.approx(ls.item(), rel=1e-12)
    assert parts["nll_loss"].item() == pytest.approx(nll.item(), rel=1e-12)
    assert parts["kd_loss"].item() == pytest.approx(kd.item(), rel=1e-12)
    assert torch.allclose(g_got, g_ref, atol=1e-12)
    assert torch.all(g_got[[2, 7]] == 0)


def test_fused_ls_kd_gradcheck():
    torch.manual_seed(14)
    logits = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(6, 7, dtype=torch.float64)
    target = torch.tensor([1, 2, 0, 4, 5, 6])
    for topk in (0, 4):
        fn = lambda x: ls_kd_loss(None, target, 0.2, x, teacher, alpha=0.6, temperature=1.7, topk=topk, ignore_index=0)[0]
        assert torch.autograd.gradcheck(fn, (logits,))


def test_fused_ls_kd_with_a_cached_topk_pair_in_half_precision():
    torch.manual_seed(15)
    logits = torch.randn(20, 50)
    teacher = torch.randn(20, 50)
    target = torch.randint(1, 50, (20,))
    vals, idx = teacher.topk(6, -1)
    ref, _ = ls_kd_loss(None, target, 0.1, logits, (idx, vals), alpha=0.5, temperature=2.0, ignore_index=0)
    half, _ = ls_kd_loss(None, target, 0.1, logits.half(), (idx, vals.half()), alpha=0.5, temperature=2.0, ignore_index=0)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(ref.item(), rel=5e-3)
