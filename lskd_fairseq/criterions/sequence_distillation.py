"""``sequence_distillation``: train the student on the teacher's sequences.

    loss = (1 - beta) * LS-NLL(gold) + beta * (NLL(teacher seq) + alpha * word-KD(teacher seq))

(the math is ``lskd_fairseq.losses.seq_kd_loss``). ``--seq-kd-beta 1 --kd-alpha 0``
is plain sequence-level KD (Kim & Rush 2016); ``--kd-alpha > 0`` adds word-level
KD on the teacher's sequence (Seq-KD + Word-KD); ``0 < beta < 1`` mixes in the
gold references.

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

import torch
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from omegaconf import II

from lskd_fairseq.criterions.label_smoothed_kd import LS_CONVENTION_CHOICES, log_kd_and_accuracy_metrics
from lskd_fairseq.criterions.label_smoothed_kd import strip_prefix
from lskd_fairseq.losses import label_smoothed_nll_loss, seq_kd_loss


@dataclass
class SequenceDistillationConfig(FairseqDataclass):
    label_smoothing: float = field(default=0.0, metadata={"help": "epsilon for the gold (hard-label) term"})
    ls_convention: LS_CONVENTION_CHOICES = field(
        default="fairseq", metadata={"help": "label-smoothing convention, as in label_smoothed_kd"}
    )
    seq_kd_beta: float = field(
        default=1.0,
        metadata={"help": "weight of the teacher-sequence term in [0, 1]; the gold term gets 1 - beta"},
    )
    kd_alpha: float = field(
        default=0.0, metadata={"help": "weight (>= 0) of word-level KD on the teacher's sequence"}
    )
    kd_temperature: float = field(default=1.0, metadata={"help": "word-KD temperature T > 0"})
    kd_topk: int = field(default=0, metadata={"help": "word-KD on the teacher's top-k tokens (0 = all)"})
    report_accuracy: bool = field(default=False, metadata={"help": "report the student's token accuracy"})
    ignore_prefix_size: int = field(default=0, metadata={"help": "ignore the first N tokens of the target"})
    sentence_avg: bool = II("optimization.sentence_avg")


@register_criterion("sequence_distillation", dataclass=SequenceDistillationConfig)
class SequenceDistillationCriterion(FairseqCriterion):
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
        super().__init__(task)
        problems = []
        if not 0.0 <= label_smoothing < 1.0:
            problems.append(f"--label-smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= seq_kd_beta <= 1.0:
            problems.append(f"--seq-kd-beta must be in [0, 1], got {seq_kd_beta}")
        if kd_alpha < 0.0:
            problems.append(f"--kd-alpha must be >= 0, got {kd_alpha}")
        if not kd_temperature > 0.0:
            problems.append(f"--kd-temperature must be > 0, got {kd_temperature}")
        if kd_topk < 0:
            problems.append(f"--kd-topk must be >= 0, got {kd_topk}")
        if problems:
            raise ValueError("; ".join(problems))
        cfg = getattr(task, "cfg", None)
        if seq_kd_beta > 0 and not getattr(cfg, "distilled_data", ""):
            raise ValueError(
                "--criterion sequence_distillation with --seq-kd-beta > 0 needs the teacher's sequences: "
                "use --task translation_kd --distilled-data DIR (made by lskd-distill-data)"
            )
        if seq_kd_beta > 0 and kd_alpha > 0:
            if not getattr(task, "has_teacher", False):
                raise ValueError(
                    "--kd-alpha > 0 needs a teacher: --teacher-path CKPT or --teacher-cache DIR "
                    "(a cache made over the --distilled-data data-bin)"
                )
            if getattr(cfg, "teacher_cache", ""):
                task.require_teacher_cache(kd_topk, side="distilled")
        self.sentence_avg = sentence_avg
        self.eps = label_smoothing
        self.ls_convention = str(ls_convention)
        self.beta = seq_kd_beta
        self.kd_alpha = kd_alpha
        self.kd_temperature = kd_temperature
        self.kd_topk = kd_topk
        self.report_accuracy = report_accuracy
        self.ignore_prefix_size = ignore_prefix_size

    def _logits_target(self, model, net_output, target):
        """The student's logits (N, V) and ``target`` (N,), prefix removed."""
        return strip_prefix(net_output[0], target, self.ignore_prefix_size)

    def _lprobs_target(self, model, net_output, target):
        """The student's log-probabilities (N, V) and ``target`` (N,), prefix removed."""
        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        return strip_prefix(lprobs, target, self.ignore_prefix_size)

    def forward(self, model, sample, reduce=True):
        d = sample.get("distilled")
        nsent = sample["target"].size(0)
        if self.beta == 0 or d is None or not model.training:
            net_output = model(**sample["net_input"])
            lprobs, target = self._lprobs_target(model, net_output, sample["target"])
            loss, nll = label_smoothed_nll_loss(
                lprobs, target, self.eps, ignore_index=self.padding_idx, convention=self.ls_convention
            )
            sample_size = nsent if self.sentence_avg else sample["ntokens"]
            log = {"loss": loss.data, "nll_loss": nll.data, "nll_ntokens": sample["ntokens"],
                   "ntokens": sample["ntokens"], "nsentences": nsent, "sample_size": sample_size}
            if self.report_accuracy:
                self._accuracy(log, lprobs, target)
            return loss, sample_size, log

        net_input = sample["net_input"]
        seq_input = {"src_tokens": net_input["src_tokens"], "src_lengths": net_input["src_lengths"],
                     "prev_output_tokens": d["prev_output_tokens"]}
        seq_output = model(**seq_input)
        seq_logits, seq_target = self._logits_target(model, seq_output, d["target"])
        # with word-KD the fused loss works on the logits; log-probabilities only without it
        seq_lprobs = None if self.kd_alpha > 0 else self._lprobs_target(model, seq_output, d["target"])[0]
        gold_lprobs = gold_target = None
        if self.beta < 1:
            gold_output = model(**net_input)
            gold_lprobs, gold_target = self._lprobs_target(model, gold_output, sample["target"])
        teacher_out, dist = None, None
        if self.kd_alpha > 0:
            dsample = {"id": sample["id"], "net_input": seq_input, "target": d["target"], "ntokens": d["ntokens"]}
            if "teacher_topk" in d:
                dsample["teacher_topk"] = d["teacher_topk"]
            teacher_out = self.task.teacher_outputs(
                dsample, model, topk=self.kd_topk, ignore_prefix_size=self.ignore_prefix_size
            )
            dist = teacher_out.dist
            dist = tuple(x.reshape(-1, x.size(-1)) for x in dist) if isinstance(dist, tuple) \
                else dist.reshape(-1, dist.size(-1))
        seq_ntokens, gold_ntokens = d["ntokens"], sample["ntokens"]
        loss, parts = seq_kd_loss(
            self.beta,
            gold_lprobs=gold_lprobs,
            gold_target=gold_target,
            seq_lprobs=seq_lprobs,
            seq_target=seq_target,
            epsilon=self.eps,
            seq_logits=seq_logits,
            teacher=dist,
            alpha=self.kd_alpha,
            temperature=self.kd_temperature,
            topk=self.kd_topk,
            ignore_index=self.padding_idx,
            convention=self.ls_convention,
            gold_scale=seq_ntokens / max(1, gold_ntokens),
        )
        sample_size = nsent if self.sentence_avg else seq_ntokens
        log = {"loss": loss.data, "ntokens": gold_ntokens, "nsentences": nsent, "sample_size": sample_size,
               "seq_nll_loss": parts["seq_nll_loss"].data, "seq_ntokens": seq_ntokens}
        if self.beta < 1:
            log["nll_loss"], log["nll_ntokens"] = parts["nll_loss"].data, gold_ntokens
        else:
            log["nll_loss"], log["nll_ntokens"] = parts["seq_nll_loss"].data, seq_ntokens
        if teacher_out is not None:
            log["kd_loss"], log["kd_ntokens"] = parts["kd_loss"].data, seq_ntokens
            with torch.no_grad():
                mask = seq_target.ne(self.padding_idx)
                log["teacher_agree"] = (
                    seq_logits.argmax(-1).eq(teacher_out.top1.reshape(-1)).masked_fill(~mask, False).sum().data
                )
        if self.report_accuracy:
            if gold_lprobs is not None:
                self._accuracy(log, gold_lprobs, gold_target)
            else:
                self._accuracy(log, seq_logits, seq_target)  # argmax(logits) = argmax(log-probs)
        return loss, sample_size, log

    def _accuracy(self, log, scores, target):
        mask = target.ne(self.padding_idx)
        log["n_correct"] = utils.item(scores.argmax(1).masked_select(mask).eq(target.masked_select(mask)).sum())
        log["total"] = utils.item(mask.sum())

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        ln2 = math.log(2)
        sample_size = total("sample_size")
        metrics.log_scalar("loss", total("loss") / max(1, sample_size) / ln2, sample_size, round=3)
        nll_ntokens = total("nll_ntokens")
        metrics.log_scalar("nll_loss", total("nll_loss") / max(1, nll_ntokens) / ln2, nll_ntokens, round=3)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))
        seq_ntokens = total("seq_ntokens")
        if seq_ntokens > 0:
            metrics.log_scalar("seq_nll_loss", total("seq_nll_loss") / seq_ntokens / ln2, seq_ntokens, round=3)
        log_kd_and_accuracy_metrics(logging_outputs)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
