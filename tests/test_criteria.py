"""lskd's two criteria in process, on a tiny stand-in model and task (no training):
what they share with fairseq's label_smoothed_cross_entropy, their one option
check, their loss against the plain reference, and the metrics they log."""

import math

import pytest
import torch
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.data import Dictionary
from fairseq.logging import metrics

from lskd_fairseq.criterions.label_smoothed_kd import LabelSmoothedKDConfig, LabelSmoothedKDCriterion
from lskd_fairseq.criterions.sequence_distillation import SequenceDistillationConfig, SequenceDistillationCriterion
from lskd_fairseq.losses import ls_kd_loss_reference
from lskd_fairseq.teacher import TeacherOutput

VOCAB_WORDS = 12


class _Model(torch.nn.Module):
    """Decoder logits from embeddings of the previous tokens (and the source length)."""

    def __init__(self, vocab, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(torch.randn(vocab, 6, generator=g, dtype=torch.float64))
        self.out = torch.nn.Parameter(torch.randn(6, vocab, generator=g, dtype=torch.float64))

    def forward(self, src_tokens, src_lengths, prev_output_tokens):
        h = self.emb[prev_output_tokens] + 0.1 * src_lengths[:, None, None].double()
        return h @ self.out, {}

    def get_normalized_probs(self, net_output, log_probs):
        return torch.log_softmax(net_output[0], -1) if log_probs else torch.softmax(net_output[0], -1)

    def get_targets(self, sample, net_output):
        return sample["target"]


class _Cfg:
    def __init__(self, distilled_data="", teacher_cache=""):
        self.distilled_data, self.teacher_cache = distilled_data, teacher_cache


class _Task:
    """What the criteria ask of translation_kd: the dictionary, whether there is a
    teacher, and the teacher's outputs for a batch (here another _Model)."""

    def __init__(self, has_teacher=True, distilled_data=""):
        self.target_dictionary = Dictionary()
        for i in range(VOCAB_WORDS):
            self.target_dictionary.add_symbol(f"w{i}")
        self.has_teacher = has_teacher
        self.cfg = _Cfg(distilled_data)
        self.teacher = _Model(len(self.target_dictionary), seed=99)
        self.calls = []

    def teacher_outputs(self, sample, student, topk=0, ignore_prefix_size=0):
        self.calls.append((sample["target"], topk, ignore_prefix_size))
        with torch.no_grad():
            logits = self.teacher(**sample["net_input"])[0][:, ignore_prefix_size:]
        target = sample["target"][:, ignore_prefix_size:]
        lp = logits.log_softmax(-1).gather(-1, target[..., None]).squeeze(-1)
        nll = -lp.masked_fill(target.eq(self.target_dictionary.pad()), 0.0).sum()
        dist = logits
        if topk:
            vals, idx = logits.topk(topk, -1)
            dist = (idx, vals)
        return TeacherOutput(dist=dist, nll_sum=nll, top1=logits.argmax(-1))


def _batch(task, seed=0, bsz=3, tlen=5):
    g = torch.Generator().manual_seed(seed)
    pad, n = task.target_dictionary.pad(), len(task.target_dictionary)
    target = torch.randint(4, n, (bsz, tlen), generator=g)
    target[0, 3:] = pad
    target[2, 4:] = pad
    prev = torch.randint(4, n, (bsz, tlen), generator=g)
    net_input = {"src_tokens": prev.clone(), "src_lengths": torch.tensor([5, 3, 4]), "prev_output_tokens": prev}
    return {"id": torch.arange(bsz), "net_input": net_input, "target": target,
            "ntokens": int(target.ne(pad).sum())}


def _distilled(task, seed=1):
    g = torch.Generator().manual_seed(seed)
    pad, n = task.target_dictionary.pad(), len(task.target_dictionary)
    target = torch.randint(4, n, (3, 6), generator=g)
    target[1, 4:] = pad
    return {"target": target, "prev_output_tokens": torch.randint(4, n, (3, 6), generator=g),
            "ntokens": int(target.ne(pad).sum())}


def _logged(criterion_cls, logging_outputs):
    with metrics.aggregate(new_root=True) as agg:
        criterion_cls.reduce_metrics(logging_outputs)
        return agg.get_smoothed_values()


# ---------------------------------------------------------------- built on fairseq's criterion


def test_both_criteria_derive_from_fairseqs_label_smoothed_cross_entropy():
    for crit, cfg in ((LabelSmoothedKDCriterion, LabelSmoothedKDConfig),
                      (SequenceDistillationCriterion, SequenceDistillationConfig)):
        assert issubclass(crit, LabelSmoothedCrossEntropyCriterion)
        assert issubclass(cfg, LabelSmoothedCrossEntropyCriterionConfig)
    # option names and defaults the recipes and the study rely on
    kd, seq = LabelSmoothedKDConfig(), SequenceDistillationConfig()
    assert (kd.kd_alpha, kd.kd_temperature, kd.kd_topk, kd.ls_convention, kd.label_smoothing) == (0.5, 1.0, 0, "fairseq", 0.0)
    assert (seq.kd_alpha, seq.seq_kd_beta, seq.ls_convention) == (0.0, 1.0, "fairseq")
    assert not kd.report_accuracy and kd.ignore_prefix_size == 0


@pytest.mark.parametrize("prefix", [0, 1])
def test_alpha_zero_is_fairseqs_criterion_bit_for_bit(prefix):
    task = _Task(has_teacher=False)
    model = _Model(len(task.target_dictionary), seed=0)
    sample = _batch(task)
    ours = LabelSmoothedKDCriterion(task, False, 0.1, kd_alpha=0.0, report_accuracy=True, ignore_prefix_size=prefix)
    ref = LabelSmoothedCrossEntropyCriterion(task, False, 0.1, ignore_prefix_size=prefix, report_accuracy=True)
    loss_a, size_a, log_a = ours(model, sample)
    (grad_a,) = torch.autograd.grad(loss_a, model.out)
    loss_b, size_b, log_b = ref(model, sample)
    (grad_b,) = torch.autograd.grad(loss_b, model.out)
    assert torch.equal(loss_a, loss_b) and torch.equal(grad_a, grad_b) and size_a == size_b
    assert log_a.keys() == log_b.keys()
    for key in log_b:
        assert torch.equal(torch.as_tensor(log_a[key]), torch.as_tensor(log_b[key])), key
    assert not task.calls  # the teacher is not consulted
    assert _logged(LabelSmoothedKDCriterion, [log_a]) == _logged(LabelSmoothedCrossEntropyCriterion, [log_b])


# ---------------------------------------------------------------- one option check


@pytest.mark.parametrize("crit", [LabelSmoothedKDCriterion, SequenceDistillationCriterion])
@pytest.mark.parametrize("option, value, named", [
    ("kd_alpha", 1.5, "--kd-alpha must be in [0, 1], got 1.5"),
    ("kd_alpha", -0.1, "--kd-alpha must be in [0, 1], got -0.1"),
    ("kd_temperature", 0.0, "--kd-temperature must be > 0, got 0.0"),
    ("kd_topk", -2, "--kd-topk must be >= 0"),
    ("label_smoothing", 1.0, "--label-smoothing must be in [0, 1), got 1.0"),
])
def test_both_criteria_refuse_the_same_bad_options(crit, option, value, named):
    task = _Task(distilled_data="somewhere")
    kwargs = {"label_smoothing": 0.1, option: value}
    with pytest.raises(ValueError) as info:
        crit(task, False, **kwargs)
    assert named in str(info.value)


def test_sequence_distillation_names_every_bad_value_at_once():
    with pytest.raises(ValueError) as info:
        SequenceDistillationCriterion(_Task(distilled_data="d"), False, seq_kd_beta=2.0, kd_alpha=3.0, kd_temperature=-1)
    msg = str(info.value)
    for part in ("--seq-kd-beta must be in [0, 1], got 2.0", "--kd-alpha must be in [0, 1], got 3.0",
                 "--kd-temperature must be > 0, got -1"):
        assert part in msg, msg


def test_kd_without_a_teacher_is_refused_by_both():
    with pytest.raises(ValueError, match="needs a teacher"):
        LabelSmoothedKDCriterion(_Task(has_teacher=False), False, 0.1, kd_alpha=0.5)
    with pytest.raises(ValueError, match="needs a teacher"):
        SequenceDistillationCriterion(_Task(has_teacher=False, distilled_data="d"), False, kd_alpha=0.5)


# ---------------------------------------------------------------- the loss and its metrics


@pytest.mark.parametrize("topk, prefix", [(0, 0), (4, 1)])
def test_word_kd_loss_and_metrics(topk, prefix):
    task = _Task()
    model = _Model(len(task.target_dictionary), seed=0)
    sample = _batch(task)
    pad = task.target_dictionary.pad()
    crit = LabelSmoothedKDCriterion(task, False, 0.1, kd_alpha=0.7, kd_temperature=2.0, kd_topk=topk,
                                    report_accuracy=True, ignore_prefix_size=prefix)
    loss, sample_size, log = crit(model, sample)
    assert task.calls[-1][1:] == (topk, prefix)
    logits = model(**sample["net_input"])[0][:, prefix:]
    target = sample["target"][:, prefix:]
    teacher = task.teacher(**sample["net_input"])[0][:, prefix:].detach()
    ref, parts = ls_kd_loss_reference(logits, target, teacher, 0.1, 0.7, 2.0, "fairseq", topk, ignore_index=pad)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    assert log["kd_loss"].item() == pytest.approx(parts["kd_loss"].item(), rel=1e-12)
    assert log["nll_loss"].item() == pytest.approx(parts["nll_loss"].item(), rel=1e-12)
    (g_got,) = torch.autograd.grad(loss, model.out)
    (g_ref,) = torch.autograd.grad(ref, model.out)
    assert torch.allclose(g_got, g_ref, atol=1e-12)
    keep = target.ne(pad)
    agree = (logits.argmax(-1).eq(teacher.argmax(-1)) & keep).sum().item()
    correct = (logits.argmax(-1).eq(target) & keep).sum().item()
    assert log["teacher_agree"].item() == agree and log["n_correct"] == correct and log["total"] == keep.sum().item()
    assert sample_size == log["kd_ntokens"] == sample["ntokens"]
    values = _logged(LabelSmoothedKDCriterion, [log, log])
    ln2 = math.log(2)
    assert values["kd_loss"] == pytest.approx(round(log["kd_loss"].item() / sample["ntokens"] / ln2, 3))
    assert values["teacher_agree"] == pytest.approx(round(100.0 * agree / sample["ntokens"], 2))
    assert values["accuracy"] == pytest.approx(round(100.0 * correct / keep.sum().item(), 3))
    for name in ("loss", "nll_loss", "ppl", "teacher_nll_loss", "teacher_ppl"):
        assert math.isfinite(values[name]), name


@pytest.mark.parametrize("beta, alpha", [(1.0, 0.0), (1.0, 0.5), (0.4, 1.0)])
def test_sequence_distillation_loss_and_metrics(beta, alpha):
    task = _Task(distilled_data="d")
    model = _Model(len(task.target_dictionary), seed=0)
    pad = task.target_dictionary.pad()
    sample = _batch(task)
    sample["distilled"] = _distilled(task)
    crit = SequenceDistillationCriterion(task, False, label_smoothing=0.1, seq_kd_beta=beta, kd_alpha=alpha,
                                         kd_topk=3, report_accuracy=True)
    model.train()
    loss, sample_size, log = crit(model, sample)
    d = sample["distilled"]
    seq_input = {**sample["net_input"], "prev_output_tokens": d["prev_output_tokens"]}
    seq_logits = model(**seq_input)[0]
    keep = d["target"].ne(pad)
    lp = seq_logits.log_softmax(-1)
    seq_nll = -(lp.gather(-1, d["target"][..., None]).squeeze(-1) * keep).sum()
    expect = beta * seq_nll
    if alpha > 0:
        teacher = task.teacher(**seq_input)[0].detach()
        _, kd_parts = ls_kd_loss_reference(seq_logits, d["target"], teacher, 0.0, 1.0, 1.0, "fairseq", 3, pad)
        expect = expect + beta * alpha * kd_parts["kd_loss"]
        assert log["kd_loss"].item() == pytest.approx(kd_parts["kd_loss"].item(), rel=1e-12)
        agree = (seq_logits.argmax(-1).eq(teacher.argmax(-1)) & keep).sum().item()
        assert log["teacher_agree"].item() == agree
        assert torch.equal(task.calls[-1][0], d["target"])  # the teacher scores the teacher's sequence
    else:
        assert "kd_loss" not in log and not task.calls
    if beta < 1:
        gold_logits = model(**sample["net_input"])[0]
        ref, _ = ls_kd_loss_reference(gold_logits, sample["target"], gold_logits.detach(), 0.1, 0.0, ignore_index=pad)
        expect = expect + (1 - beta) * d["ntokens"] / sample["ntokens"] * ref
    assert loss.item() == pytest.approx(expect.item(), rel=1e-12)
    assert sample_size == d["ntokens"]
    values = _logged(SequenceDistillationCriterion, [log])
    ln2 = math.log(2)
    nll_tokens = d["ntokens"] if beta == 1 else sample["ntokens"]
    assert values["nll_loss"] == pytest.approx(round(log["nll_loss"].item() / nll_tokens / ln2, 3))
    assert values["seq_nll_loss"] == pytest.approx(round(seq_nll.item() / d["ntokens"] / ln2, 3))
    assert "accuracy" in values and ("kd_loss" in values) == (alpha > 0)
    # validation: gold LS-NLL only, per gold token
    model.eval()
    _, size_v, log_v = crit(model, sample)
    assert size_v == sample["ntokens"] and "kd_loss" not in log_v
