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

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

LS_CONVENTIONS = ("fairseq", "uniform")

TeacherOutput = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]

# Rows are processed in chunks of about this many elements, so the KD term never
# materialises a second (N, V) float32 tensor on top of the logits.
_CHUNK_ELEMENTS = 1 << 22


def check_kd_options(label_smoothing: float = 0.0, kd_alpha: float = 0.0, kd_temperature: float = 1.0,
                     kd_topk: int = 0, prefix: str = "--") -> None:
    """The one validation of LS/KD option values, shared by both fairseq criteria and
    ``lskd-vision-train``: epsilon in [0, 1), alpha in [0, 1], T > 0, top-k >= 0.

    Raises ``ValueError`` listing every bad value with its option name (``prefix`` +
    ``label-smoothing`` etc.), so each caller can show it as its own usage error.
    """
    problems = []
    if not 0.0 <= label_smoothing < 1.0:
        problems.append(f"{prefix}label-smoothing must be in [0, 1), got {label_smoothing}")
    if not 0.0 <= kd_alpha <= 1.0:
        problems.append(f"{prefix}kd-alpha must be in [0, 1], got {kd_alpha}")
    if not kd_temperature > 0.0:
        problems.append(f"{prefix}kd-temperature must be > 0, got {kd_temperature}")
    if int(kd_topk) != kd_topk or kd_topk < 0:
        problems.append(f"{prefix}kd-topk must be an integer >= 0 (0 = all classes), got {kd_topk}")
    if problems:
        raise ValueError("; ".join(problems))


def ensemble_log_probs(logits: Sequence[torch.Tensor], dim: int = -1) -> torch.Tensor:
    """The one teacher-ensemble rule (NMT and vision): the log of the average of the
    members' probabilities, computed in log space, in float32 or wider.

    One member: its logits unchanged (they are a valid teacher output as they are).
    Several: ``log(mean_i softmax(z_i))``, a logit vector whose softmax at T=1 is the
    averaged distribution (at T != 1 the average is taken at T=1, then tempered).
    """
    if len(logits) == 1:
        return logits[0]
    lps = torch.stack([torch.log_softmax(z.to(_loss_dtype(z.dtype)), dim=dim) for z in logits])
    return torch.logsumexp(lps, dim=0) - math.log(len(logits))


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


def _ls_coefficients(epsilon: float, num_classes: int, convention: str) -> Tuple[float, float]:
    """``(a, b)`` with ``LS = a * nll + b * sum_c(-log p_c)`` (see label_smoothed_nll_loss)."""
    if convention == "fairseq":
        eps_i = epsilon / (num_classes - 1)
        return 1.0 - epsilon - eps_i, eps_i
    if convention == "uniform":
        return 1.0 - epsilon, epsilon / num_classes
    raise ValueError(f"unknown label-smoothing convention {convention!r}; choose one of {', '.join(LS_CONVENTIONS)}")


class _LSKD(torch.autograd.Function):
    """Per-row label-smoothed NLL, NLL and ``T^2 * KL(q_T || p_S)``, fused and row-chunked.

    Inputs: student logits (N, V); target (N,) (or None when no LS term is wanted);
    keep (N,) bool; the teacher as dense logits (N, V) or a top-k pair
    (indices (N, k), logits (N, k)); ``ls_ab = (a, b)`` or None; temperature T.
    Outputs: per-row ``ls``, ``nll`` (not differentiable) and ``kd``, zero on rows
    that are not kept. Nothing of size (N, V) is kept for backward besides the
    inputs; the gradient
        dLS/dz = (a + V b) softmax(z) - a onehot(y) - b     (= p - q_LS)
        dKD/dz = T (softmax(z / T) - q_T)
    is recomputed chunk by chunk and written into a single (N, V) tensor. The
    teacher gets no gradient (it is frozen by design).
    """

    @staticmethod
    def forward(ctx, logits, target, keep, t_idx, t_vals, ls_ab, temperature):
        dtype = _loss_dtype(logits.dtype)
        n, v = logits.shape
        ls_out = logits.new_zeros(n, dtype=dtype)
        nll_out = logits.new_zeros(n, dtype=dtype)
        kd_out = logits.new_zeros(n, dtype=dtype)
        want_kd = t_vals is not None
        for lo, hi in _row_chunks(n, v):
            z = logits[lo:hi].to(dtype)
            k = keep[lo:hi]
            logp = None
            if ls_ab is not None:
                logp = torch.log_softmax(z, dim=-1)
                nll = -logp.gather(-1, target[lo:hi, None]).squeeze(-1)
                smooth = -logp.sum(-1)
                nll_out[lo:hi] = nll.masked_fill(~k, 0.0)
                ls_out[lo:hi] = (ls_ab[0] * nll + ls_ab[1] * smooth).masked_fill(~k, 0.0)
            if want_kd:
                # at T = 1 the KD term shares the LS term's log-softmax
                if logp is None or temperature != 1.0:
                    logp = torch.log_softmax(z / temperature if temperature != 1.0 else z, dim=-1)
                logq = torch.log_softmax(t_vals[lo:hi].to(dtype) / temperature, dim=-1)
                logp_t = logp.gather(-1, t_idx[lo:hi]) if t_idx is not None else logp
                q = logq.exp()
                # q * (log q - log p), with 0 * log 0 = 0 for classes the teacher rules out
                kl = torch.where(q > 0, q * (logq - logp_t), torch.zeros_like(q)).sum(-1)
                kd_out[lo:hi] = (temperature**2 * kl).masked_fill(~k, 0.0)
        ctx.mark_non_differentiable(nll_out)
        ctx.ls_ab, ctx.temperature, ctx.want_kd = ls_ab, temperature, want_kd
        empty = logits.new_empty(0)
        ctx.save_for_backward(
            logits,
            target if target is not None else empty,
            keep,
            t_idx if t_idx is not None else empty,
            t_vals if want_kd else empty,
        )
        ctx.has_idx = t_idx is not None
        return ls_out, nll_out, kd_out

    @staticmethod
    def backward(ctx, g_ls, _g_nll, g_kd):
        logits, target, keep, t_idx, t_vals = ctx.saved_tensors
        ls_ab, t = ctx.ls_ab, ctx.temperature
        dtype = _loss_dtype(logits.dtype)
        n, v = logits.shape
        use_ls = ls_ab is not None and g_ls is not None and bool(g_ls.ne(0).any())
        use_kd = ctx.want_kd and g_kd is not None and bool(g_kd.ne(0).any())
        grad = torch.empty_like(logits)
        for lo, hi in _row_chunks(n, v):
            z = logits[lo:hi].to(dtype)
            w_keep = keep[lo:hi].to(dtype).unsqueeze(-1)
            # g = c_p * softmax(z) [+ c_t * softmax(z / T)] - b_row - a_row * onehot(y) - c_q * q
            g = None
            if use_ls:
                a, b = ls_ab
                w = g_ls[lo:hi].to(dtype).unsqueeze(-1)
                c_p = w * (a + v * b)
                if use_kd and t == 1.0:  # one softmax serves both terms
                    c_p = c_p + g_kd[lo:hi].to(dtype).unsqueeze(-1)
                g = torch.softmax(z, dim=-1).mul_(c_p).sub_(w * b)
                g.scatter_add_(-1, target[lo:hi, None], -a * w)
            if use_kd:
                c_t = g_kd[lo:hi].to(dtype).unsqueeze(-1) * t
                if g is None or t != 1.0:
                    gk = torch.softmax(z / t if t != 1.0 else z, dim=-1).mul_(c_t)
                    g = gk if g is None else g.add_(gk)
                q = torch.softmax(t_vals[lo:hi].to(dtype) / t, dim=-1).mul_(c_t)
                if ctx.has_idx:
                    g.scatter_add_(-1, t_idx[lo:hi], -q)
                else:
                    g.sub_(q)
            if g is None:
                grad[lo:hi] = 0
            else:
                grad[lo:hi] = g.mul_(w_keep).to(grad.dtype)
        return grad, None, None, None, None, None, None


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
    student, idx, vals, keep = _flatten_kd_inputs(student_logits, teacher, topk, ignore_mask)
    _, _, per_row = _LSKD.apply(student, None, keep, idx, vals, None, float(temperature))
    return per_row.sum() if reduce else per_row.view(lead)


def _flatten_kd_inputs(student_logits, teacher, topk, ignore_mask):
    """(N, V) student logits, teacher (indices or None, logits) as 2-D, keep mask (N,)."""
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
    if ignore_mask is None:
        keep = torch.ones(student.size(0), dtype=torch.bool, device=student.device)
    else:
        keep = ~ignore_mask.reshape(-1).to(device=student.device, dtype=torch.bool)
    return student, idx, vals, keep


def _fused_sums(student_logits, target, teacher, ls_ab, temperature, topk, ignore_index):
    """Summed ``(a*nll + b*smooth, nll, KD)`` from one ``_LSKD`` pass (positions equal to
    ``ignore_index`` left out)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    mask = target.eq(ignore_index) if ignore_index is not None else None
    student, idx, vals, keep = _flatten_kd_inputs(student_logits, teacher, topk, mask)
    ls_rows, nll_rows, kd_rows = _LSKD.apply(student, target.reshape(-1), keep, idx, vals, ls_ab, float(temperature))
    return ls_rows.sum(), nll_rows.sum(), kd_rows.sum()


def ls_kd_loss(
    lprobs: Optional[torch.Tensor],
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

    With ``alpha == 0`` this is exactly ``label_smoothed_nll_loss(lprobs, ...)``
    (bit for bit, and the teacher is not consulted). With ``alpha > 0`` both terms
    are computed from ``student_logits`` in one fused, row-chunked pass whose
    backward writes a single gradient tensor (``lprobs`` may then be None), so KD
    adds no (N, V) buffers on top of what the logits already need.

    Returns ``(loss, parts)`` with the summed ``ls_loss``, ``nll_loss`` and
    ``kd_loss`` for logging (``kd_loss`` is 0 when ``alpha == 0``). With
    ``alpha == 1`` the hard-label term is still reported but gets no gradient.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha == 0.0:
        ls, nll = label_smoothed_nll_loss(
            lprobs, target, epsilon, ignore_index=ignore_index, reduce=True, convention=convention
        )
        return ls, {"ls_loss": ls.detach(), "nll_loss": nll.detach(), "kd_loss": ls.new_zeros(())}
    if student_logits is None or teacher is None:
        raise ValueError("alpha > 0 needs the student's logits and a teacher output")
    ab = _ls_coefficients(epsilon, student_logits.size(-1), convention)
    ls, nll, kd = _fused_sums(student_logits, target, teacher, ab, temperature, topk, ignore_index)
    loss = kd if alpha == 1.0 else (1.0 - alpha) * ls + alpha * kd
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
    distribution there (full logits or a top-k pair). With ``alpha > 0`` both
    sequence terms come from ``seq_logits`` in one fused pass (as in
    ``ls_kd_loss``) and ``seq_lprobs`` is not needed. ``beta = 1, alpha = 0`` is
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
        if seq_target is None:
            raise ValueError("beta > 0 needs the teacher's sequence (seq_target)")
        if alpha > 0.0:
            if seq_logits is None or teacher is None:
                raise ValueError("alpha > 0 needs the student's logits and the teacher's output on the sequence")
            # NLL (the LS term with a = 1, b = 0) and KD in one fused pass over the logits:
            # no log-probability buffer, one softmax shared at T = 1
            seq_nll, _, kd = _fused_sums(seq_logits, seq_target, teacher, (1.0, 0.0), temperature, topk, ignore_index)
            seq_term = seq_nll + alpha * kd
            parts["kd_loss"] = kd.detach()
        else:
            if seq_lprobs is None:
                raise ValueError("beta > 0 needs the student's log-probabilities on the teacher's sequence")
            _, seq_nll = label_smoothed_nll_loss(seq_lprobs, seq_target, 0.0, ignore_index=ignore_index, reduce=True)
            seq_term = seq_nll
        parts["seq_nll_loss"] = seq_nll.detach()
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
