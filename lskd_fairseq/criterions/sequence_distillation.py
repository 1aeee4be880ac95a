"""``sequence_distillation``: train the student on the teacher's sequences.

    loss = (1 - beta) * LS-NLL(gold) + beta * (NLL(teacher seq) + alpha * word-KD(teacher seq))

(the math is ``lskd_fairseq.losses.seq_kd_loss``). ``--seq-kd-beta 1 --kd-alpha 0``
is plain sequence-level KD (Kim & Rush 2016); ``--kd-alpha > 0`` adds word-level
KD on the teacher's sequence (Seq-KD + Word-KD); ``0 < beta < 1`` mixes in the
gold references. ``--kd-alpha`` is checked as in ``label_smoothed_kd`` (in
[0, 1], by ``losses.check_kd_options``); here it weighs word-KD against the NLL
of the teacher's sequence rather than mixing the two.

Needs ``--task translation_kd --distilled-data DIR`` (a data-bin made by
``lskd-distill-data`` from the training data, aligned by sample id): batches then
carry the teacher's sequence of each sample. The word-KD term takes the teacher's
distribution from ``--teacher-path`` (run online) or from ``--teacher-cache DIR``
made over the *distilled* data-bin (``lskd-teacher-cache DISTILLED_DIR``).

Normalisation: the loss is a sum over the teacher sequences' tokens and
``sample_size`` is their number (sentences with ``--sentence-avg``); the gold
term is rescaled by ``seq_tokens / gold_tokens`` so that it is a sum over the
same number of tokens. Validation (and any batch without a teacher sequence)
uses the gold LS-NLL only, so validation losses compare across beta and alpha.
"""

import math
from dataclasses import dataclass, field

from fairseq.criterions import register_criterion
from fairseq.logging import metrics

from lskd_fairseq.criterions.common import KDConfig, KDCriterion
from lskd_fairseq.losses import label_smoothed_nll_loss, seq_kd_loss


@dataclass
class SequenceDistillationConfig(KDConfig):
    seq_kd_beta: float = field(
        default=1.0,
        metadata={"help": "weight of the teacher-sequence term in [0, 1]; the gold term gets 1 - beta"},
    )
    kd_alpha: float = field(
        default=0.0, metadata={"help": "weight in [0, 1] of word-level KD on the teacher's sequence"}
    )


@register_criterion("sequence_distillation", dataclass=SequenceDistillationConfig)
class SequenceDistillationCriterion(KDCriterion):
    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing=0.0,
        ls_convention="fairseq",
        seq_kd_beta=1.0,
        kd_alpha=0.0,
        kd_temperature=1.0,
        kd_topk=0,
        report_accuracy=False,
        ignore_prefix_size=0,
    ):
        beta_problem = [] if 0.0 <= seq_kd_beta <= 1.0 else [f"--seq-kd-beta must be in [0, 1], got {seq_kd_beta}"]
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size=ignore_prefix_size,
                         report_accuracy=report_accuracy, ls_convention=ls_convention, kd_alpha=kd_alpha,
                         kd_temperature=kd_temperature, kd_topk=kd_topk, extra_problems=beta_problem)
        if seq_kd_beta > 0 and not getattr(getattr(task, "cfg", None), "distilled_data", ""):
            raise ValueError(
                "--criterion sequence_distillation with --seq-kd-beta > 0 needs the teacher's sequences: "
                "use --task translation_kd --distilled-data DIR (made by lskd-distill-data)"
            )
        if seq_kd_beta > 0 and kd_alpha > 0:
            self.require_teacher("distilled", "--kd-alpha > 0 needs a teacher: --teacher-path CKPT or "
                                 "--teacher-cache DIR (a cache made over the --distilled-data data-bin)")
        self.beta = seq_kd_beta

    def forward(self, model, sample, reduce=True):
        distilled = sample.get("distilled")
        nsentences = sample["target"].size(0)
        if self.beta == 0 or distilled is None or not model.training:
            net_output = model(**sample["net_input"])
            lprobs, target = self.get_lprobs_and_target(model, net_output, sample)
            loss, nll = label_smoothed_nll_loss(
                lprobs, target, self.eps, ignore_index=self.padding_idx, convention=self.ls_convention
            )
            sample_size = nsentences if self.sentence_avg else sample["ntokens"]
            log = {"loss": loss.data, "nll_loss": nll.data, "nll_ntokens": sample["ntokens"],
                   "ntokens": sample["ntokens"], "nsentences": nsentences, "sample_size": sample_size}
            self.log_accuracy(log, lprobs, target)
            return loss, sample_size, log

        net_input = sample["net_input"]
        seq_input = {"src_tokens": net_input["src_tokens"], "src_lengths": net_input["src_lengths"],
                     "prev_output_tokens": distilled["prev_output_tokens"]}
        seq_sample = {"id": sample["id"], "net_input": seq_input, "target": distilled["target"],
                      "ntokens": distilled["ntokens"]}
        if "teacher_topk" in distilled:
            seq_sample["teacher_topk"] = distilled["teacher_topk"]
        seq_output = model(**seq_input)
        seq_logits = seq_lprobs = teacher_out = None
        if self.kd_alpha > 0:  # the fused loss works on the logits
            seq_logits, seq_target = self.get_logits_and_target(model, seq_output, seq_sample)
            teacher_out = self.get_teacher_outputs(model, seq_sample)
        else:
            seq_lprobs, seq_target = self.get_lprobs_and_target(model, seq_output, seq_sample)
        gold_lprobs = gold_target = None
        if self.beta < 1:
            gold_lprobs, gold_target = self.get_lprobs_and_target(model, model(**net_input), sample)
        seq_ntokens, gold_ntokens = distilled["ntokens"], sample["ntokens"]
        loss, parts = seq_kd_loss(
            self.beta,
            gold_lprobs=gold_lprobs,
            gold_target=gold_target,
            seq_lprobs=seq_lprobs,
            seq_target=seq_target,
            epsilon=self.eps,
            seq_logits=seq_logits,
            teacher=None if teacher_out is None else teacher_out.dist,
            alpha=self.kd_alpha,
            temperature=self.kd_temperature,
            topk=self.kd_topk,
            ignore_index=self.padding_idx,
            convention=self.ls_convention,
            gold_scale=seq_ntokens / max(1, gold_ntokens),
        )
        sample_size = nsentences if self.sentence_avg else seq_ntokens
        log = {"loss": loss.data, "ntokens": gold_ntokens, "nsentences": nsentences, "sample_size": sample_size,
               "seq_nll_loss": parts["seq_nll_loss"].data, "seq_ntokens": seq_ntokens}
        if self.beta < 1:
            log["nll_loss"], log["nll_ntokens"] = parts["nll_loss"].data, gold_ntokens
        else:
            log["nll_loss"], log["nll_ntokens"] = parts["seq_nll_loss"].data, seq_ntokens
        if teacher_out is not None:
            self.log_kd(log, parts["kd_loss"], teacher_out, seq_logits, seq_target, seq_ntokens)
        if gold_lprobs is not None:
            self.log_accuracy(log, gold_lprobs, gold_target)
        else:
            self.log_accuracy(log, seq_logits if seq_logits is not None else seq_lprobs, seq_target)
        return loss, sample_size, log

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """The shared metrics, with ``nll_loss`` per token of the sequences it was
        measured on (gold, or the teacher's with beta = 1), and ``seq_nll_loss``."""
        per_nll_token = [{**log, "ntokens": log.get("nll_ntokens", log.get("ntokens", 0))} for log in logging_outputs]
        super().reduce_metrics(per_nll_token)
        seq_ntokens = sum(log.get("seq_ntokens", 0) for log in logging_outputs)
        if seq_ntokens > 0:
            seq_nll = sum(log.get("seq_nll_loss", 0) for log in logging_outputs)
            metrics.log_scalar("seq_nll_loss", seq_nll / seq_ntokens / math.log(2), seq_ntokens, round=3)
