"""``label_smoothed_kd``: label-smoothed cross-entropy plus word-level KD.

    loss = (1 - kd_alpha) * LS-NLL(gold) + kd_alpha * T^2 * KL(q_T || p_S)

summed over target tokens (the math is ``lskd_fairseq.losses.ls_kd_loss``). The
teacher's distribution comes from the task (``--task translation_kd
--teacher-path ...``), over the full vocabulary or its top-k tokens
(``--kd-topk``, Tan et al. 2019). With ``--kd-alpha 0`` the teacher is not run
and training is identical to fairseq's ``label_smoothed_cross_entropy``.

With ``--teacher-cache DIR`` (made by ``lskd-teacher-cache`` over the gold
training data) the teacher's top-k comes from the cache instead: batches carry
it and ``get_teacher_outputs`` returns it through the task (``--kd-topk`` must
be between 1 and the cache's k; the cache is checked when the criterion is built).
"""

import math
from dataclasses import dataclass, field

import torch
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from lskd_fairseq.losses import LS_CONVENTIONS, ls_kd_loss

LS_CONVENTION_CHOICES = ChoiceEnum(list(LS_CONVENTIONS))


@dataclass
class LabelSmoothedKDConfig(FairseqDataclass):
    label_smoothing: float = field(
        default=0.0, metadata={"help": "epsilon for label smoothing of the hard-label term, 0 means none"}
    )
    ls_convention: LS_CONVENTION_CHOICES = field(
        default="fairseq",
        metadata={
            "help": "fairseq: 1-eps on the gold token, eps/(V-1) on the others; "
            "uniform: eps/V on every token, gold included"
        },
    )
    kd_alpha: float = field(
        default=0.5,
        metadata={"help": "weight of the KD term in [0, 1]; the hard-label term gets 1 - kd_alpha"},
    )
    kd_temperature: float = field(default=1.0, metadata={"help": "distillation temperature T > 0"})
    kd_topk: int = field(
        default=0,
        metadata={"help": "distil only the teacher's k most likely tokens, renormalised (0 = full vocabulary)"},
    )
    report_accuracy: bool = field(default=False, metadata={"help": "report the student's token accuracy"})
    ignore_prefix_size: int = field(default=0, metadata={"help": "ignore the first N tokens of the target"})
    sentence_avg: bool = II("optimization.sentence_avg")


def validate_kd_options(label_smoothing: float, kd_alpha: float, kd_temperature: float, kd_topk: int) -> None:
    """Refuse invalid option values before training starts."""
    problems = []
    if not 0.0 <= label_smoothing < 1.0:
        problems.append(f"--label-smoothing must be in [0, 1), got {label_smoothing}")
    if not 0.0 <= kd_alpha <= 1.0:
        problems.append(f"--kd-alpha must be in [0, 1], got {kd_alpha}")
    if not kd_temperature > 0.0:
        problems.append(f"--kd-temperature must be > 0, got {kd_temperature}")
    if kd_topk < 0:
        problems.append(f"--kd-topk must be >= 0 (0 = full vocabulary), got {kd_topk}")
    if problems:
        raise ValueError("; ".join(problems))


def strip_prefix(scores, target, prefix: int):
    """``scores`` (B, L, V) and ``target`` (B, L) without the first ``prefix`` positions
    (``--ignore-prefix-size``), flattened to (N, V) and (N,)."""
    if prefix > 0:
        scores, target = scores[:, prefix:, :], target[:, prefix:]
    return scores.reshape(-1, scores.size(-1)), target.reshape(-1)


def log_kd_and_accuracy_metrics(logging_outputs) -> None:
    """Log the KD terms (kd_loss, teacher agreement, teacher NLL) and token accuracy;
    shared by lskd's criteria. Keys absent from the logging outputs are skipped."""

    def total(key):
        return sum(log.get(key, 0) for log in logging_outputs)

    ln2 = math.log(2)
    kd_ntokens = total("kd_ntokens")
    if kd_ntokens > 0:
        metrics.log_scalar("kd_loss", total("kd_loss") / kd_ntokens / ln2, kd_ntokens, round=3)
        agree = utils.item(total("teacher_agree"))
        metrics.log_scalar("teacher_agree", 100.0 * agree / kd_ntokens, kd_ntokens, round=2)
        if any("teacher_nll_loss" in log for log in logging_outputs):
            metrics.log_scalar(
                "teacher_nll_loss", total("teacher_nll_loss") / kd_ntokens / ln2, kd_ntokens, round=3
            )
            metrics.log_derived(
                "teacher_ppl", lambda meters: utils.get_perplexity(meters["teacher_nll_loss"].avg)
            )

    n_total = utils.item(total("total"))
    if n_total > 0:
        metrics.log_scalar("total", n_total)
        metrics.log_scalar("n_correct", utils.item(total("n_correct")))
        metrics.log_derived(
            "accuracy",
            lambda meters: round(meters["n_correct"].sum * 100.0 / meters["total"].sum, 3)
            if meters["total"].sum > 0
            else float("nan"),
        )


@register_criterion("label_smoothed_kd", dataclass=LabelSmoothedKDConfig)
class LabelSmoothedKDCriterion(FairseqCriterion):
    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing,
        ls_convention="fairseq",
        kd_alpha=0.5,
        kd_temperature=1.0,
        kd_topk=0,
        report_accuracy=False,
        ignore_prefix_size=0,
    ):
        super().__init__(task)
        validate_kd_options(label_smoothing, kd_alpha, kd_temperature, kd_topk)
        if kd_alpha > 0 and not getattr(task, "has_teacher", False):
            raise ValueError(
                "--criterion label_smoothed_kd with --kd-alpha > 0 needs a teacher: "
                "use --task translation_kd --teacher-path CKPT (or --kd-alpha 0)"
            )
        if kd_alpha > 0 and getattr(getattr(task, "cfg", None), "teacher_cache", ""):
            task.require_teacher_cache(kd_topk, side="gold")
        self.sentence_avg = sentence_avg
        self.eps = label_smoothing
        self.ls_convention = str(ls_convention)
        self.kd_alpha = kd_alpha
        self.kd_temperature = kd_temperature
        self.kd_topk = kd_topk
        self.report_accuracy = report_accuracy
        self.ignore_prefix_size = ignore_prefix_size

    def forward(self, model, sample, reduce=True):
        net_output = model(**sample["net_input"])
        loss, parts, teacher_out = self.compute_loss(model, net_output, sample)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": parts["nll_loss"].data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        if teacher_out is not None:
            logging_output["kd_loss"] = parts["kd_loss"].data
            logging_output["kd_ntokens"] = sample["ntokens"]
            if teacher_out.nll_sum is not None:
                logging_output["teacher_nll_loss"] = teacher_out.nll_sum.data
            logging_output["teacher_agree"] = parts["teacher_agree"].data
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, net_output, sample)
            logging_output["n_correct"] = utils.item(n_correct.data)
            logging_output["total"] = utils.item(total.data)
        return loss, sample_size, logging_output

    def get_lprobs_and_target(self, model, net_output, sample):
        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        return strip_prefix(lprobs, model.get_targets(sample, net_output), self.ignore_prefix_size)

    def get_teacher_outputs(self, model, sample):
        """The teacher's distribution for ``sample`` (overridden by cache-backed variants)."""
        return self.task.teacher_outputs(
            sample, model, topk=self.kd_topk, ignore_prefix_size=self.ignore_prefix_size
        )

    def get_logits_and_target(self, model, net_output, sample):
        """The student's raw logits (N, V) and targets (N,), prefix removed."""
        if getattr(getattr(model, "decoder", None), "adaptive_softmax", None) is not None:
            raise ValueError("label_smoothed_kd needs full-vocabulary logits; adaptive softmax is not supported")
        return strip_prefix(net_output[0], model.get_targets(sample, net_output), self.ignore_prefix_size)

    def compute_loss(self, model, net_output, sample):
        if self.kd_alpha == 0:
            # exactly fairseq's label_smoothed_cross_entropy; the teacher is not run
            lprobs, target = self.get_lprobs_and_target(model, net_output, sample)
            loss, parts = ls_kd_loss(
                lprobs, target, self.eps, ignore_index=self.padding_idx, convention=self.ls_convention
            )
            return loss, parts, None
        logits, target = self.get_logits_and_target(model, net_output, sample)
        teacher_out = self.get_teacher_outputs(model, sample)
        dist = teacher_out.dist
        if isinstance(dist, tuple):
            dist = tuple(d.reshape(-1, d.size(-1)) for d in dist)
        else:
            dist = dist.reshape(-1, dist.size(-1))
        # one fused pass over the logits for both terms (no log-probability buffer)
        loss, parts = ls_kd_loss(
            None,
            target,
            self.eps,
            student_logits=logits,
            teacher=dist,
            alpha=self.kd_alpha,
            temperature=self.kd_temperature,
            topk=self.kd_topk,
            ignore_index=self.padding_idx,
            convention=self.ls_convention,
        )
        with torch.no_grad():
            mask = target.ne(self.padding_idx)
            parts["teacher_agree"] = (
                logits.argmax(-1).eq(teacher_out.top1.reshape(-1)).masked_fill(~mask, False).sum()
            )
        return loss, parts, teacher_out

    def compute_accuracy(self, model, net_output, sample):
        if self.kd_alpha == 0:  # as fairseq computes it
            scores, target = self.get_lprobs_and_target(model, net_output, sample)
        else:  # the argmax of the logits is the argmax of the log-probabilities
            scores, target = self.get_logits_and_target(model, net_output, sample)
        mask = target.ne(self.padding_idx)
        n_correct = torch.sum(scores.argmax(1).masked_select(mask).eq(target.masked_select(mask)))
        return n_correct, torch.sum(mask)

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        loss_sum, nll_sum = total("loss"), total("nll_loss")
        ntokens, sample_size = total("ntokens"), total("sample_size")
        ln2 = math.log(2)
        metrics.log_scalar("loss", loss_sum / sample_size / ln2, sample_size, round=3)
        metrics.log_scalar("nll_loss", nll_sum / ntokens / ln2, ntokens, round=3)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))

        log_kd_and_accuracy_metrics(logging_outputs)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
