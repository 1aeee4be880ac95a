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

What this criterion shares with ``sequence_distillation`` (options, validation,
the student's logits, the teacher's output, accuracy and KD metrics) is in
``lskd_fairseq.criterions.common``, on top of fairseq's
``LabelSmoothedCrossEntropyCriterion``.
"""

from dataclasses import dataclass

from fairseq.criterions import register_criterion

from lskd_fairseq.criterions.common import KDConfig, KDCriterion
from lskd_fairseq.losses import label_smoothed_nll_loss, ls_kd_loss


@dataclass
class LabelSmoothedKDConfig(KDConfig):
    """fairseq's label_smoothed_cross_entropy options and the KD ones (``KDConfig``)."""


@register_criterion("label_smoothed_kd", dataclass=LabelSmoothedKDConfig)
class LabelSmoothedKDCriterion(KDCriterion):
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
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size=ignore_prefix_size,
                         report_accuracy=report_accuracy, ls_convention=ls_convention, kd_alpha=kd_alpha,
                         kd_temperature=kd_temperature, kd_topk=kd_topk)
        if kd_alpha > 0:
            self.require_teacher("gold", "--criterion label_smoothed_kd with --kd-alpha > 0 needs a teacher: "
                                 "use --task translation_kd --teacher-path CKPT (or --kd-alpha 0)")

    def forward(self, model, sample, reduce=True):
        net_output = model(**sample["net_input"])
        teacher_out = None
        if self.kd_alpha == 0:
            # exactly fairseq's label_smoothed_cross_entropy; the teacher is not run
            scores, target = self.get_lprobs_and_target(model, net_output, sample)
            loss, nll_loss = label_smoothed_nll_loss(
                scores, target, self.eps, ignore_index=self.padding_idx, reduce=reduce, convention=self.ls_convention
            )
        else:
            # one fused pass over the logits for both terms (no log-probability buffer)
            scores, target = self.get_logits_and_target(model, net_output, sample)
            teacher_out = self.get_teacher_outputs(model, sample)
            loss, parts = ls_kd_loss(
                None, target, self.eps, student_logits=scores, teacher=teacher_out.dist, alpha=self.kd_alpha,
                temperature=self.kd_temperature, topk=self.kd_topk, ignore_index=self.padding_idx,
                convention=self.ls_convention,
            )
            nll_loss = parts["nll_loss"]
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        if teacher_out is not None:
            self.log_kd(logging_output, parts["kd_loss"], teacher_out, scores, target, sample["ntokens"])
        self.log_accuracy(logging_output, scores, target)
        return loss, sample_size, logging_output
