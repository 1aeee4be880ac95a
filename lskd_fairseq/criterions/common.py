"""What lskd's two criteria share, on top of fairseq's ``label_smoothed_cross_entropy``.

fairseq's ``LabelSmoothedCrossEntropyCriterion`` (and its config) gives
``label_smoothing``, ``report_accuracy``, ``ignore_prefix_size``, ``sentence_avg``,
``get_lprobs_and_target`` and the loss, ``nll_loss``, ``ppl`` and ``accuracy``
metrics. ``KDCriterion`` adds the KD options and their one validation
(``losses.check_kd_options``), the student's logits with the prefix removed, the
teacher's output for a batch, the accuracy count, and the KD metrics (``kd_loss``,
``teacher_agree``, ``teacher_nll_loss`` / ``teacher_ppl``).
"""

import math
from dataclasses import dataclass, field

from fairseq import utils
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics

from lskd_fairseq.losses import LS_CONVENTIONS, check_kd_options, teacher_agreement

LS_CONVENTION_CHOICES = ChoiceEnum(list(LS_CONVENTIONS))


@dataclass
class KDConfig(LabelSmoothedCrossEntropyCriterionConfig):
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


class KDCriterion(LabelSmoothedCrossEntropyCriterion):
    """fairseq's label-smoothed cross-entropy criterion with the KD options."""

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 ls_convention="fairseq", kd_alpha=0.0, kd_temperature=1.0, kd_topk=0, extra_problems=()):
        problems = list(extra_problems)
        try:
            check_kd_options(label_smoothing, kd_alpha, kd_temperature, kd_topk)
        except ValueError as e:
            problems.insert(0, str(e))
        if problems:
            raise ValueError("; ".join(problems))
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size=ignore_prefix_size,
                         report_accuracy=report_accuracy)
        self.ls_convention = str(ls_convention)
        self.kd_alpha = kd_alpha
        self.kd_temperature = kd_temperature
        self.kd_topk = int(kd_topk)

    def require_teacher(self, side: str, missing: str) -> None:
        """Refuse a task without a teacher (``missing`` says how to give one); check its
        ``--teacher-cache``, if any, against ``--kd-topk`` (``side``: gold or distilled)."""
        if not getattr(self.task, "has_teacher", False):
            raise ValueError(missing)
        if getattr(getattr(self.task, "cfg", None), "teacher_cache", ""):
            self.task.require_teacher_cache(self.kd_topk, side=side)

    def get_logits_and_target(self, model, net_output, sample):
        """The student's logits (B, T, V) and target (B, T), prefix removed; not flattened,
        so that they line up with the teacher's output and its top-1 tokens."""
        if getattr(getattr(model, "decoder", None), "adaptive_softmax", None) is not None:
            raise ValueError("KD needs full-vocabulary logits; adaptive softmax is not supported")
        logits, target = net_output[0], model.get_targets(sample, net_output)
        if self.ignore_prefix_size > 0:
            logits, target = logits[:, self.ignore_prefix_size:, :], target[:, self.ignore_prefix_size:]
        return logits, target

    def get_teacher_outputs(self, model, sample):
        """The teacher's distribution for ``sample`` (its ``target`` is what the student
        is fed), on the student's device and dtype, prefix removed."""
        return self.task.teacher_outputs(sample, model, topk=self.kd_topk, ignore_prefix_size=self.ignore_prefix_size)

    def log_kd(self, log: dict, kd_loss, teacher_out, logits, target, ntokens: int) -> None:
        """The KD term's logging outputs, summed over ``ntokens`` target tokens."""
        log["kd_loss"], log["kd_ntokens"] = kd_loss.data, ntokens
        if teacher_out.nll_sum is not None:
            log["teacher_nll_loss"] = teacher_out.nll_sum.data
        log["teacher_agree"] = teacher_agreement(logits, teacher_out.top1, target.eq(self.padding_idx)).data

    def log_accuracy(self, log: dict, scores, target) -> None:
        """With ``--report-accuracy``: the tokens whose argmax is the target (as fairseq
        counts them; logits and log-probabilities have the same argmax)."""
        if not self.report_accuracy:
            return
        mask = target.ne(self.padding_idx)
        log["n_correct"] = utils.item(scores.argmax(-1).masked_select(mask).eq(target.masked_select(mask)).sum())
        log["total"] = utils.item(mask.sum())

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """fairseq's loss, nll_loss, ppl and accuracy, then the KD metrics."""
        super().reduce_metrics(logging_outputs)

        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        kd_ntokens = total("kd_ntokens")
        if kd_ntokens > 0:
            ln2 = math.log(2)
            metrics.log_scalar("kd_loss", total("kd_loss") / kd_ntokens / ln2, kd_ntokens, round=3)
            agree = utils.item(total("teacher_agree"))
            metrics.log_scalar("teacher_agree", 100.0 * agree / kd_ntokens, kd_ntokens, round=2)
            if any("teacher_nll_loss" in log for log in logging_outputs):
                metrics.log_scalar("teacher_nll_loss", total("teacher_nll_loss") / kd_ntokens / ln2, kd_ntokens,
                                   round=3)
                metrics.log_derived("teacher_ppl", lambda meters: utils.get_perplexity(meters["teacher_nll_loss"].avg))
