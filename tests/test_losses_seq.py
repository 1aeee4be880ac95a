"""losses.seq_kd_loss: (1-b) * s * LS(gold) + b * (NLL(seq) + a * KD(seq)), by hand."""

import pytest
import torch

from lskd_fairseq.losses import seq_kd_loss

PAD = 1


def _data(seed=0, n_gold=10, n_seq=12, vocab=9):
    g = torch.Generator().manual_seed(seed)
    gold_logits = torch.randn(n_gold, vocab, generator=g, dtype=torch.float64)
    seq_logits = torch.randn(n_seq, vocab, generator=g, dtype=torch.float64, requires_grad=True)
    gold_t = torch.randint(2, vocab, (n_gold,), generator=g)
    seq_t = torch.randint(2, vocab, (n_seq,), generator=g)
    gold_t[-2:] = PAD
    seq_t[-3:] = PAD
    teacher = torch.randn(n_seq, vocab, generator=g, dtype=torch.float64)
    return gold_logits, gold_t, seq_logits, seq_t, teacher


def _by_hand(beta, alpha, eps, temp, k, scale, gold_logits, gold_t, seq_logits, seq_t, teacher):
    V = gold_logits.size(-1)
    lp = gold_logits.log_softmax(-1)
    mg = gold_t.ne(PAD).double()
    nll_g = -lp.gather(-1, gold_t[:, None]).squeeze(-1)
    ls = (((1 - eps) * nll_g + eps / (V - 1) * (-lp.sum(-1) - nll_g)) * mg).sum()
    ms = seq_t.ne(PAD).double()
    lps = seq_logits.log_softmax(-1)
    nll_s = (-lps.gather(-1, seq_t[:, None]).squeeze(-1) * ms).sum()
    tv, ti = teacher.topk(k, -1) if k else (teacher, None)
    q = (tv / temp).softmax(-1)
    lpt = (seq_logits / temp).log_softmax(-1)
    if ti is not None:
        lpt = lpt.gather(-1, ti)
    kd = (temp**2 * (q * (q.log() - lpt)).sum(-1) * ms).sum()
    return (1 - beta) * scale * ls + beta * (nll_s + alpha * kd), ls, nll_s, kd


@pytest.mark.parametrize("beta,alpha,temp,k", [(1.0, 0.0, 1.0, 0), (0.4, 0.6, 2.0, 3), (0.0, 0.5, 1.0, 0),
                                               (1.0, 1.0, 0.5, 4)])
def test_seq_kd_loss_matches_the_formula(beta, alpha, temp, k):
    gl, gt, sl, st, te = _data()
    scale = 12 / 10
    loss, parts = seq_kd_loss(beta, gl.log_softmax(-1), gt, sl.log_softmax(-1), st, epsilon=0.1,
                              seq_logits=sl, teacher=te, alpha=alpha, temperature=temp, topk=k,
                              ignore_index=PAD, gold_scale=scale)
    expect, ls, nll_s, kd = _by_hand(beta, alpha, 0.1, temp, k, scale, gl, gt, sl, st, te)
    assert torch.allclose(loss, expect, rtol=1e-9)
    if beta < 1:
        assert torch.allclose(parts["ls_loss"], ls)
    if beta > 0:
        assert torch.allclose(parts["seq_nll_loss"], nll_s)
    if beta > 0 and alpha > 0:
        assert torch.allclose(parts["kd_loss"], kd)
        # gradient of the KD part agrees with autograd through the hand-written formula
        g1 = torch.autograd.grad(loss, sl, retain_graph=True)[0]
        g2 = torch.autograd.grad(expect, sl)[0]
        assert torch.allclose(g1, g2, rtol=1e-7, atol=1e-10)


def test_seq_kd_loss_topk_pair_and_validation():
    gl, gt, sl, st, te = _data(1)
    tv, ti = te.topk(4, -1)
    a, _ = seq_kd_loss(1.0, seq_lprobs=sl.log_softmax(-1), seq_target=st, seq_logits=sl, teacher=(ti, tv),
                       alpha=0.5, topk=4, ignore_index=PAD)
    b, _ = seq_kd_loss(1.0, seq_lprobs=sl.log_softmax(-1), seq_target=st, seq_logits=sl, teacher=te,
                       alpha=0.5, topk=4, ignore_index=PAD)
    assert torch.allclose(a, b)
    # beta = 1, alpha = 0: the teacher is not needed and the gold inputs are not either
    c, parts = seq_kd_loss(1.0, seq_lprobs=sl.log_softmax(-1), seq_target=st, ignore_index=PAD)
    assert torch.allclose(c, parts["seq_nll_loss"]) and float(parts["kd_loss"]) == 0.0
    with pytest.raises(ValueError, match="beta"):
        seq_kd_loss(1.5, seq_lprobs=sl, seq_target=st)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        seq_kd_loss(1.0, seq_lprobs=sl, seq_target=st, seq_logits=sl, teacher=te, alpha=1.5)
    with pytest.raises(ValueError, match="gold"):
        seq_kd_loss(0.5, seq_lprobs=sl, seq_target=st)
    with pytest.raises(ValueError, match="teacher"):
        seq_kd_loss(1.0, seq_lprobs=sl, seq_target=st, alpha=0.5)


def test_seq_kd_loss_with_kd_needs_no_log_probabilities():
    """alpha > 0 takes NLL and KD from the logits in one pass: same value and gradient
    as the hand-written formula, with seq_lprobs left out."""
    gl, gt, sl, st, te = _data(seed=3)
    for temp in (1.0, 3.0):
        loss, parts = seq_kd_loss(1.0, seq_target=st, seq_logits=sl, teacher=te, alpha=0.7,
                                  temperature=temp, ignore_index=PAD)
        expect, _, nll_s, kd = _by_hand(1.0, 0.7, 0.1, temp, 0, 1.0, gl, gt, sl, st, te)
        assert torch.allclose(loss, expect, rtol=1e-9)
        assert torch.allclose(parts["seq_nll_loss"], nll_s) and torch.allclose(parts["kd_loss"], kd)
        g1 = torch.autograd.grad(loss, sl)[0]
        g2 = torch.autograd.grad(expect, sl)[0]
        assert torch.allclose(g1, g2, rtol=1e-7, atol=1e-10)
        # padded positions get no gradient
        assert g1[st.eq(PAD)].abs().max() == 0
