"""The shared loss math: hand-computed cases, gradients, conventions, masking."""

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as functional

from lskd_fairseq import losses
from lskd_fairseq.losses import (
    check_kd_options,
    ensemble_log_probs,
    kd_loss,
    label_smoothed_nll_loss,
    ls_kd_loss,
    ls_kd_loss_reference,
    smoothed_targets,
    teacher_agreement,
)


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
        ref = functional.cross_entropy(logits, target, label_smoothing=0.1, reduction="sum")
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
    q = functional.softmax(t / T, -1)
    return (T * T * (q * (q.log() - functional.log_softmax(s / T, -1))).sum(-1))


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
    kl = functional.kl_div(functional.log_softmax(s / T, -1), functional.log_softmax(t / T, -1), log_target=True,
                           reduction="sum")
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
    expected = T * (functional.softmax(s.detach() / T, -1) - functional.softmax(t / T, -1))
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
    q = functional.softmax(vals / T, -1)
    logp = functional.log_softmax(s / T, -1).gather(-1, idx)
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


def test_reference_is_the_written_out_formula():
    """The reference itself, on a hand-sized case: LS at eps with the dense target,
    KD = T^2 sum q (log q - log p) at T, mixed by alpha."""
    torch.manual_seed(16)
    logits, teacher = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    target = torch.tensor([0, 3, 1, 2])
    eps, alpha, T = 0.2, 0.3, 2.0
    lp = logits.log_softmax(-1)
    ls = -(smoothed_targets(target, 5, eps, "uniform") * lp).sum()
    q = (teacher / T).softmax(-1)
    kd = T * T * (q * (q.log() - (logits / T).log_softmax(-1))).sum()
    loss, parts = ls_kd_loss_reference(logits, target, teacher, eps, alpha, T, "uniform")
    assert loss.item() == pytest.approx(((1 - alpha) * ls + alpha * kd).item(), rel=1e-12)
    assert parts["nll_loss"].item() == pytest.approx(-lp.gather(-1, target[:, None]).sum().item(), rel=1e-12)
    # ignore_index leaves the position out entirely
    masked, _ = ls_kd_loss_reference(logits, target, teacher, eps, alpha, T, "uniform", ignore_index=3)
    kept, _ = ls_kd_loss_reference(logits[[0, 2, 3]], target[[0, 2, 3]], teacher[[0, 2, 3]], eps, alpha, T, "uniform")
    assert masked.item() == pytest.approx(kept.item(), rel=1e-12)


@pytest.mark.parametrize("convention", ["fairseq", "uniform"])
@pytest.mark.parametrize("topk", [0, 3])
@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_fused_ls_kd_matches_the_reference(convention, topk, T, alpha):
    """Values (loss and logged parts) and gradients of the fused ls_kd_loss equal the
    plain reference, padded positions masked (and given no gradient)."""
    torch.manual_seed(13)
    logits = torch.randn(2, 6, 8, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 6, 8, dtype=torch.float64)
    target = torch.randint(1, 8, (2, 6))
    target[0, 4:] = 0  # padding
    target[1, 5] = 0
    ref, ref_parts = ls_kd_loss_reference(logits, target, teacher, 0.1, alpha, T, convention, topk, ignore_index=0)
    (g_ref,) = torch.autograd.grad(ref, logits)
    got, parts = ls_kd_loss(logits.log_softmax(-1), target, 0.1, logits, teacher, alpha=alpha, temperature=T,
                            topk=topk, ignore_index=0, convention=convention)
    (g_got,) = torch.autograd.grad(got, logits)
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)
    for key in ("ls_loss", "nll_loss") + (("kd_loss",) if alpha > 0 else ()):
        assert parts[key].item() == pytest.approx(ref_parts[key].item(), rel=1e-12), key
    assert torch.allclose(g_got, g_ref, atol=1e-12)
    assert torch.all(g_got[target.eq(0)] == 0)


def test_fused_ls_kd_matches_the_reference_in_float32_over_chunks(monkeypatch):
    torch.manual_seed(17)
    logits = torch.randn(37, 50, requires_grad=True)
    teacher = torch.randn(37, 50)
    target = torch.randint(1, 50, (37,))
    target[::5] = 0
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 150)  # three rows a chunk
    for T, topk in ((1.0, 0), (2.0, 0), (1.0, 6), (4.0, 6)):
        ref, _ = ls_kd_loss_reference(logits, target, teacher, 0.1, 0.5, T, "fairseq", topk, ignore_index=0)
        got, _ = ls_kd_loss(None, target, 0.1, logits, teacher, alpha=0.5, temperature=T, topk=topk, ignore_index=0)
        (g_ref,) = torch.autograd.grad(ref, logits)
        (g_got,) = torch.autograd.grad(got, logits)
        assert got.item() == pytest.approx(ref.item(), rel=1e-5)
        assert torch.allclose(g_got, g_ref, atol=1e-6)


def test_fused_gradient_scales_with_the_incoming_gradient_and_survives_retain_graph():
    """The gradient is made in the forward pass; backward scales it per row (here by a
    loss scale and by a mean) and must serve a retained graph more than once."""
    torch.manual_seed(18)
    logits = torch.randn(9, 7, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(9, 7, dtype=torch.float64)
    target = torch.randint(0, 7, (9,))
    got, _ = ls_kd_loss(None, target, 0.1, logits, teacher, alpha=0.4, temperature=2.0)
    ref, _ = ls_kd_loss_reference(logits, target, teacher, 0.1, 0.4, 2.0)
    (g1,) = torch.autograd.grad(got, logits, retain_graph=True)
    (g8,) = torch.autograd.grad(8.0 * got, logits, retain_graph=True)
    (g1_again,) = torch.autograd.grad(got, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    assert torch.allclose(g1, g_ref, atol=1e-12) and torch.equal(g1, g1_again)
    assert torch.allclose(g8, 8.0 * g_ref, atol=1e-12)
    with torch.no_grad():  # no gradient is made, the values are the same
        assert ls_kd_loss(None, target, 0.1, logits, teacher, alpha=0.4, temperature=2.0)[0].item() == got.item()


def test_fused_kd_with_a_teacher_that_rules_classes_out():
    """-inf teacher logits give q = 0 there: 0 log 0 = 0, no NaN in value or gradient."""
    s = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 6, dtype=torch.float64)
    t[:, :2] = float("-inf")
    got = kd_loss(s, t, temperature=2.0)
    (g,) = torch.autograd.grad(got, s)
    q = functional.softmax(t[:, 2:] / 2.0, -1)
    expected = 4.0 * (q * (q.log() - functional.log_softmax(s.detach() / 2.0, -1)[:, 2:])).sum()
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.isfinite(g).all()


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
    student_half = logits.half().requires_grad_()
    half, _ = ls_kd_loss(None, target, 0.1, student_half, (idx, vals.half()), alpha=0.5, temperature=2.0,
                         ignore_index=0)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(ref.item(), rel=5e-3)
    # the gradient is computed in float32 and returned in the logits' dtype
    (g_half,) = torch.autograd.grad(half, student_half)
    (g_ref,) = torch.autograd.grad(ls_kd_loss(None, target, 0.1, logits.requires_grad_(), (idx, vals), alpha=0.5,
                                              temperature=2.0, ignore_index=0)[0], logits)
    assert g_half.dtype == torch.float16
    assert torch.allclose(g_half.float(), g_ref, atol=2e-3)


def test_ensemble_log_probs_is_the_log_of_the_mean_probability():
    torch.manual_seed(19)
    members = [torch.randn(4, 3, 10) * 3 for _ in range(3)]
    got = ensemble_log_probs(members)
    mean_p = sum(torch.softmax(z, -1) for z in members) / 3
    assert torch.allclose(torch.softmax(got, -1), mean_p, atol=1e-6)
    assert torch.allclose(got.exp().sum(-1), torch.ones(4, 3), atol=1e-5)  # already normalised
    one = members[0]
    assert ensemble_log_probs([one]) is one  # one member: its logits unchanged
    half = ensemble_log_probs([z.half() for z in members])
    assert half.dtype == torch.float32  # averaged in float32 at least


@pytest.mark.parametrize("kwargs, named", [
    ({"label_smoothing": 1.0}, "--label-smoothing must be in [0, 1), got 1.0"),
    ({"label_smoothing": -0.1}, "--label-smoothing must be in [0, 1), got -0.1"),
    ({"kd_alpha": 1.5}, "--kd-alpha must be in [0, 1], got 1.5"),
    ({"kd_alpha": float("nan")}, "--kd-alpha must be in [0, 1], got nan"),
    ({"kd_temperature": 0.0}, "--kd-temperature must be > 0, got 0.0"),
    ({"kd_topk": -2}, "--kd-topk must be >= 0"),
    ({"kd_topk": 2.5}, "--kd-topk must be >= 0 and a whole number (0 = all classes), got 2.5"),
])
def test_check_kd_options_names_each_bad_value(kwargs, named):
    with pytest.raises(ValueError) as info:
        check_kd_options(**kwargs)
    assert named in str(info.value)


def test_check_kd_options_lists_every_problem_with_the_callers_prefix():
    check_kd_options(0.1, 0.5, 2.0, 8)  # valid: no error
    check_kd_options(0.0, 0.0, 1.0, 0)
    with pytest.raises(ValueError) as info:
        check_kd_options(1.2, -1.0, -3.0, -1, prefix="--student-")
    msg = str(info.value)
    for part in ("--student-label-smoothing", "--student-kd-alpha", "--student-kd-temperature", "--student-kd-topk"):
        assert part in msg, msg


def test_teacher_agreement_from_logits_topk_pair_or_top1_ids():
    student = torch.tensor([[[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]], [[0.0, 0.0, 5.0], [1.0, 2.0, 0.0]]])
    teacher = torch.tensor([[[0.0, 9.0, 1.0], [0.0, 9.0, 1.0]], [[0.0, 0.0, 9.0], [0.0, 9.0, 1.0]]])
    assert teacher_agreement(student, teacher).item() == 3  # positions (0,0), (1,0), (1,1)
    vals, idx = teacher.topk(2, -1)
    perm = torch.tensor([1, 0])
    assert teacher_agreement(student, (idx[..., perm], vals[..., perm])).item() == 3
    assert teacher_agreement(student, teacher.argmax(-1)).item() == 3
    mask = torch.tensor([[False, False], [True, False]])
    assert teacher_agreement(student, teacher, ignore_mask=mask).item() == 2
    # flattened student rows against a (B, T) teacher: the same count
    assert teacher_agreement(student.reshape(4, 3), teacher.argmax(-1), mask.reshape(-1)).item() == 2
