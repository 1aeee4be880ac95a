"""Label smoothing and knowledge distillation losses, as plain functions on tensors.

This module is the one place where lskd defines its loss math. It imports only
torch, so vision code (``lskd_vision``) and the fairseq criteria share it without
pulling in fairseq.

Conventions
-----------
Label smoothing with ``epsilon`` over ``K`` classes comes in two flavours:

* ``"fairseq"`` (default): the gold class gets ``1 - epsilon`` and every other
  class ``epsilon / (K - 1)``. This is what fairseq's
  ``label_smoothed_cross_entropy`` criterion does.
* ``"uniform"``: ``epsilon / K`` on every class, gold included, so the gold class
  gets ``1 - epsilon + epsilon / K`` (Szegedy et al. 2016, torchvision's recipes,
  ``torch.nn.CrossEntropyLoss(label_smoothing=...)``).

Knowledge distillation at temperature ``T`` (Hinton et al. 2015)::

    KD = T^2 * KL( softmax(z_T / T) || softmax(z_S / T) )

per position, and the combined objective is ``(1 - alpha) * LS-NLL + alpha * KD``.
The teacher is given either as full logits or as a top-k pair ``(indices,
logits)``; with top-k the teacher distribution is renormalised over its k
classes at temperature T (Tan et al. 2019), while the student's log-probabilities
are always normalised over the full vocabulary.
"""

from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

LS_CONVENTIONS = ("fairseq", "uniform")

TeacherOutput = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]

# Rows are processed in chunks of about this many elements, so the KD term never
# materialises a second (N, V) float32 tensor on top of the logits.
_CHUNK_ELEMENTS = 1 << 22


def label_smoothed_nll_loss(
    lprobs: torch.Tensor,
    target: torch.Tensor,
    epsilon: float,
    ignore_index: Optional[int] = None,
    reduce: bool = True,
    convention: str = "fairseq",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Label-smoothed negative log-likelihood.

    ``lprobs`` are log-probabilities (..., K); ``target`` holds class indices with
    one dimension less (or the same with a trailing 1). Returns ``(loss,
    nll_loss)``; summed when ``reduce``. With ``convention="fairseq"`` the result
    is bit-for-bit what fairseq's function of the same name returns.
    """
    if convention not in LS_CONVENTIONS:
        raise ValueError(
            f"unknown label-smoothing convention {convention!r}; "
            f"choose one of {', '.join(LS_CONVENTIONS)}"
        )
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
    num_classes = lprobs.size(-1)
    if convention == "fairseq":
        # gold: 1 - eps - eps_i + eps_i = 1 - eps; others: eps_i = eps / (K - 1)
        eps_i = epsilon / (num_classes - 1)
        loss = (1.0 - epsilon - eps_i) * nll_loss + eps_i * smooth_loss
    else:
        # gold: 1 - eps + eps / K; others: eps / K
        loss = (1.0 - epsilon) * nll_loss + (epsilon / num_classes) * smooth_loss
    return loss, nll_loss


def smoothed_targets(
    target: torch.Tensor, num_classes: int, epsilon: float, convention: str = "fairseq"
) -> torch.Tensor:
    """The dense target distribution that ``label_smoothed_nll_loss`` implies.

    Useful for checks and plots; the loss itself never builds it.
    """
    if convention not in LS_CONVENTIONS:
        raise ValueError(f"unknown label-smoothing convention {convention!r}")
    if convention == "fairseq":
        off, on = epsilon / (num_classes - 1), 1.0 - epsilon
    else:
        off, on = epsilon / num_classes, 1.0 - epsilon + epsilon / num_classes
    dist = torch.full((*target.shape, num_classes), off, dtype=torch.float64)
    dist.scatter_(-1, target.unsqueeze(-1), on)
    return dist


def _loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """Loss math runs in float32 at least (float64 stays float64, for gradcheck)."""
    return torch.promote_types(dtype, torch.float32)


def _row_chunks(num_rows: int, num_cols: int):
    step = max(1, _CHUNK_ELEMENTS // max(1, num_cols))
    for start in range(0, num_rows, step):
        yield start, min(num_rows, start + step)


def _teacher_probs_chunk(teacher, topk_pair: bool, lo: int, hi: int, temperature: float, dtype):
    """Teacher log-probabilities for rows lo:hi: dense (rows, V) or top-k (rows, k)."""
    if topk_pair:
        idx, vals = teacher
        return idx[lo:hi], torch.log_softmax(vals[lo:hi].to(dtype) / temperature, dim=-1)
    return None, torch.log_softmax(teacher[lo:hi].to(dtype) / temperature, dim=-1)


class _KDLoss(torch.autograd.Function):
    """Per-row ``T^2 * KL(q_T || p_S)`` with a row-chunked forward and backward.

    Nothing of size (N, V) is saved for backward beyond the inputs themselves; the
    gradient ``T * (softmax(z_S / T) - q_T)`` is recomputed chunk by chunk.
    The teacher receives no gradient (it is frozen by design).
    """

    @staticmethod
    def forward(ctx, student, temperature, teacher_idx, teacher_vals):
        topk_pair = teacher_idx is not None
        teacher = (teacher_idx, teacher_vals) if topk_pair else teacher_vals
        dtype = _loss_dtype(student.dtype)
        n, v = student.shape
        out = student.new_empty(n, dtype=dtype)
        for lo, hi in _row_chunks(n, v):
            logp = torch.log_softmax(student[lo:hi].to(dtype) / temperature, dim=-1)
            idx, logq = _teacher_probs_chunk(teacher, topk_pair, lo, hi, temperature, dtype)
            if topk_pair:
                logp = logp.gather(-1, idx)
            q = logq.exp()
            # q * (log q - log p), with 0 * log 0 = 0 for classes the teacher rules out
            out[lo:hi] = torch.where(q > 0, q * (logq - logp), torch.zeros_like(q)).sum(-1)
        out.mul_(temperature**2)
        ctx.temperature = temperature
        ctx.save_for_backward(student, teacher_idx if topk_pair else student.new_empty(0), teacher_vals)
        ctx.topk_pair = topk_pair
        return out

    @staticmethod
    def backward(ctx, grad_out):
        student, teacher_idx, teacher_vals = ctx.saved_tensors
        t = ctx.temperature
        topk_pair = ctx.topk_pair
        teacher = (teacher_idx, teacher_vals) if topk_pair else teacher_vals
        dtype = _loss_dtype(student.dtype)
        n, v = student.shape
        grad = torch.empty_like(student)
        for lo, hi in _row_chunks(n, v):
            g = torch.softmax(student[lo:hi].to(dtype) / t, dim=-1)
            idx, logq = _teacher_probs_chunk(teacher, topk_pair, lo, hi, t, dtype)
            if topk_pair:
                g.scatter_add_(-1, idx, -logq.exp())
            else:
                g.sub_(logq.exp())
            # d/dz [T^2 KL] = T * (p_S - q)
            g.mul_(grad_out[lo:hi].to(dtype).unsqueeze(-1) * t)
            grad[lo:hi] = g.to(grad.dtype)
        return grad, None, None, None


def _as_teacher_pair(teacher: TeacherOutput, topk: int, vocab: int):
    """Normalise the teacher argument to (indices or None, logits), applying top-k."""
    if isinstance(teacher, (tuple, list)):
        if len(teacher) != 2:
            raise ValueError("a top-k teacher must be a pair (indices, logits)")
        idx, vals = teacher
        if idx.shape != vals.shape:
            raise ValueError(
                f"top-k teacher indices {tuple(idx.shape)} and logits {tuple(vals.shape)} differ in shape"
            )
        have = idx.size(-1)
        if topk > have:
            raise ValueError(
                f"kd topk={topk} asks for more classes than the teacher provides ({have}); "
                f"use topk <= {have} or a teacher cache made with a larger k"
            )
        if 0 < topk < have:
            vals, order = vals.topk(topk, dim=-1)
            idx = idx.gather(-1, order)
        return idx.long(), vals
    if topk > 0 and topk < vocab:
        vals, idx = teacher.topk(topk, dim=-1)
        return idx, vals
    return None, teacher


def kd_loss(
    student_logits: torch.Tensor,
    teacher: TeacherOutput,
    temperature: float = 1.0,
    topk: int = 0,
    ignore_mask: Optional[torch.Tensor] = None,
    reduce: bool = True,
) -> torch.Tensor:
    """``T^2 * KL(softmax(z_T/T) || softmax(z_S/T))`` per position.

    Args:
        student_logits: (..., V) student logits.
        teacher: (..., V) teacher logits, or a pair ``(indices, logits)`` of shape
            (..., k) holding the teacher's top-k classes (for example from a cache).
        temperature: T > 0.
        topk: 0 keeps every class the teacher gives; k > 0 keeps the teacher's k
            largest logits, renormalised at temperature T.
        ignore_mask: bool (...,) tensor, True where a position contributes nothing
            (padding).
        reduce: sum over positions; otherwise return the per-position loss (...).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if topk < 0:
        raise ValueError(f"topk must be >= 0 (0 = full vocabulary), got {topk}")
    lead, vocab = student_logits.shape[:-1], student_logits.size(-1)
    idx, vals = _as_teacher_pair(teacher, topk, vocab)
    if vals.shape[:-1] != lead or (idx is None and vals.size(-1) != vocab):
        raise ValueError(
            f"teacher output {tuple(vals.shape)} does not match student logits {tuple(student_logits.shape)}"
        )
    student = student_logits.reshape(-1, vocab)
    vals = vals.reshape(-1, vals.size(-1)).detach()
    if idx is not None:
        idx = idx.reshape(-1, idx.size(-1))
    if ignore_mask is not None:
        keep = ~ignore_mask.reshape(-1).to(torch.bool)
        if not bool(keep.all()):
            # gather the kept rows: masked rows cost nothing and get zero gradient
            rows = keep.nonzero().squeeze(-1)
            per_kept = _KDLoss.apply(
                student.index_select(0, rows),
                float(temperature),
                None if idx is None else idx.index_select(0, rows),
                vals.index_select(0, rows),
            )
            per_row = per_kept.new_zeros(student.size(0)).index_copy(0, rows, per_kept)
            return per_row.sum() if reduce else per_row.view(lead)
    per_row = _KDLoss.apply(student, float(temperature), idx, vals)
    return per_row.sum() if reduce else per_row.view(lead)


def ls_kd_loss(
    lprobs: torch.Tensor,
    target: torch.Tensor,
    epsilon: float,
    student_logits: Optional[torch.Tensor] = None,
    teacher: Optional[TeacherOutput] = None,
    alpha: float = 0.0,
    temperature: float = 1.0,
    topk: int = 0,
    ignore_index: Optional[int] = None,
    convention: str = "fairseq",
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """``(1 - alpha) * LS-NLL + alpha * KD``, summed over positions.

    ``lprobs`` are the student's log-probabilities (T = 1) and ``student_logits``
    its logits (needed only when ``alpha > 0``). Returns ``(loss, parts)`` where
    ``parts`` holds the summed ``ls_loss``, ``nll_loss`` and ``kd_loss`` for
    logging (``kd_loss`` is 0 when ``alpha == 0``: the teacher is not consulted).
    With ``alpha == 1`` the hard-label term is still reported but gets no gradient.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    ls, nll = label_smoothed_nll_loss(
        lprobs, target, epsilon, ignore_index=ignore_index, reduce=True, convention=convention
    )
    if alpha == 0.0:
        return ls, {"ls_loss": ls.detach(), "nll_loss": nll.detach(), "kd_loss": ls.new_zeros(())}
    if student_logits is None or teacher is None:
        raise ValueError("alpha > 0 needs the student's logits and a teacher output")
    mask = target.eq(ignore_index) if ignore_index is not None else None
    kd = kd_loss(student_logits, teacher, temperature, topk, ignore_mask=mask, reduce=True)
    if alpha == 1.0:
        loss = kd
    else:
        loss = (1.0 - alpha) * ls + alpha * kd
    return loss, {"ls_loss": ls.detach(), "nll_loss": nll.detach(), "kd_loss": kd.detach()}


def seq_kd_loss(
    beta: float,
    gold_lprobs: Optional[torch.Tensor] = None,
    gold_target: Optional[torch.Tensor] = None,
    seq_lprobs: Optional[torch.Tensor] = None,
    seq_target: Optional[torch.Tensor] = None,
    epsilon: float = 0.0,
    seq_logits: Optional[torch.Tensor] = None,
    teacher: Optional[TeacherOutput] = None,
    alpha: float = 0.0,
    temperature: float = 1.0,
    topk: int = 0,
    ignore_index: Optional[int] = None,
    convention: str = "fairseq",
    gold_scale: float = 1.0,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Sequence-level KD (Kim & Rush 2016), optionally with word-level KD on the
    teacher's sequence, mixed with the gold objective::

        (1 - beta) * gold_scale * LS-NLL(gold) + beta * (NLL(seq) + alpha * KD(seq))

    summed over positions. ``seq_*`` are the student's log-probabilities / logits
    on the teacher's sequence (teacher forcing on it) and ``teacher`` the teacher's
    distribution there (full logits or a top-k pair). ``beta = 1, alpha = 0`` is
    plain Seq-KD; ``alpha > 0`` adds Word-KD. ``gold_scale`` rescales the gold sum
    (the criterion uses ``seq_tokens / gold_tokens`` so that both terms are sums
    over the same number of tokens). Terms with zero weight are not computed and
    their inputs may be None. Returns ``(loss, parts)`` with the summed
    ``ls_loss`` / ``nll_loss`` (gold), ``seq_nll_loss`` and ``kd_loss`` (zeros
    where not computed).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if alpha < 0.0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    parts: Dict[str, torch.Tensor] = {}
    loss = None
    if beta < 1.0:
        if gold_lprobs is None or gold_target is None:
            raise ValueError("beta < 1 needs the gold log-probabilities and target")
        ls, nll = label_smoothed_nll_loss(
            gold_lprobs, gold_target, epsilon, ignore_index=ignore_index, reduce=True, convention=convention
        )
        loss = (1.0 - beta) * gold_scale * ls
        parts["ls_loss"], parts["nll_loss"] = ls.detach(), nll.detach()
    if beta > 0.0:
        if seq_lprobs is None or seq_target is None:
            raise ValueError("beta > 0 needs the student's log-probabilities on the teacher's sequence")
        _, seq_nll = label_smoothed_nll_loss(seq_lprobs, seq_target, 0.0, ignore_index=ignore_index, reduce=True)
        seq_term = seq_nll
        parts["seq_nll_loss"] = seq_nll.detach()
        if alpha > 0.0:
            if seq_logits is None or teacher is None:
                raise ValueError("alpha > 0 needs the student's logits and the teacher's output on the sequence")
            mask = seq_target.eq(ignore_index) if ignore_index is not None else None
            kd = kd_loss(seq_logits, teacher, temperature, topk, ignore_mask=mask, reduce=True)
            seq_term = seq_term + alpha * kd
            parts["kd_loss"] = kd.detach()
        loss = beta * seq_term if loss is None else loss + beta * seq_term
    ref = loss
    for key in ("ls_loss", "nll_loss", "seq_nll_loss", "kd_loss"):
        parts.setdefault(key, ref.new_zeros(()).detach())
    return loss, parts


def topk_agreement(
    student_logits: torch.Tensor, teacher: TeacherOutput, ignore_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Number of positions where the student's argmax is the teacher's argmax."""
    if isinstance(teacher, (tuple, list)):
        idx, vals = teacher
        teacher_top1 = idx.gather(-1, vals.argmax(-1, keepdim=True)).squeeze(-1)
    else:
        teacher_top1 = teacher.argmax(-1)
    same = student_logits.argmax(-1).eq(teacher_top1)
    if ignore_mask is not None:
        same = same & ~ignore_mask
    return same.sum()


__all__: Sequence[str] = (
    "LS_CONVENTIONS",
    "label_smoothed_nll_loss",
    "smoothed_targets",
    "kd_loss",
    "ls_kd_loss",
    "seq_kd_loss",
    "topk_agreement",
)
