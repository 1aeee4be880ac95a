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

``ls_kd_loss`` computes this with a fused, row-chunked autograd function
(``_LSKD``); ``ls_kd_loss_reference`` is the same definition in a dozen plain
lines, and the tests hold the one to the other (values and gradients).
"""

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

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
    if not (float(kd_topk).is_integer() and kd_topk >= 0):
        problems.append(f"{prefix}kd-topk must be >= 0 and a whole number (0 = all classes), got {kd_topk}")
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
    """``w_ls * LS + w_kd * T^2 KL(q_T || p_S)`` per row, fused and row-chunked.

    Inputs: student logits (N, V); target (N,) (None without an LS term); keep (N,)
    bool; the teacher as dense logits (N, V) or a top-k pair (indices (N, k),
    logits (N, k)) (None without a KD term); ``ls_ab = (a, b)`` (see
    ``_ls_coefficients``) or None; ``weights = (w_ls, w_kd)``; temperature T;
    ``need_grad``. Outputs per row, zero on rows that are not kept: the weighted
    loss (differentiable) and, for logging, ``ls``, ``nll`` and ``kd``.

    The gradient is written during the forward pass, chunk by chunk, into one
    (N, V) tensor (the only (N, V) buffer besides the inputs, which are not kept):
        dLS/dz = (a + V b) softmax(z) - a onehot(y) - b     (= p - q_LS)
        dKD/dz = T (softmax(z / T) - q_T)
    so backward only scales it by the incoming per-row gradient (nothing at all
    for the usual ``loss.sum().backward()``). The teacher gets no gradient.
    """

    @staticmethod
    def forward(ctx, logits, target, keep, t_idx, t_vals, ls_ab, weights, temperature, need_grad):
        dtype = _loss_dtype(logits.dtype)
        n, v = logits.shape
        w_ls, w_kd = weights
        temp = temperature
        want_ls, want_kd = ls_ab is not None, t_vals is not None
        ls_out, nll_out, kd_out = (logits.new_zeros(n, dtype=dtype) for _ in range(3))
        grad = torch.empty((n, v), dtype=logits.dtype, device=logits.device) if need_grad else None
        a, b = ls_ab if want_ls else (0.0, 0.0)
        # gradient coefficients: c_p softmax(z) + c_t softmax(z / T) - c_q q - w_ls (b + a onehot(y))
        c_p, c_t, c_q = w_ls * (a + v * b), w_kd * temp, w_kd * temp
        if temp == 1.0:
            c_p, c_t = c_p + c_t, 0.0
        # chunk-sized buffers, reused from chunk to chunk (fresh allocations cost page faults)
        scratch: Dict[str, torch.Tensor] = {}

        def buffer(name: str, rows: int) -> torch.Tensor:
            if name not in scratch:
                scratch[name] = logits.new_empty(rows, v, dtype=dtype)
            return scratch[name][:rows]

        for lo, hi in _row_chunks(n, v):
            rows = hi - lo
            z = logits[lo:hi].to(dtype)
            drop = ~keep[lo:hi]
            g = None
            if grad is not None:
                g = grad[lo:hi] if grad.dtype == dtype else buffer("grad", rows)
            logp = None
            if want_ls or temp == 1.0:  # log-probabilities at T = 1, in g when g starts from softmax(z)
                into = g if g is not None and c_p != 0.0 else buffer("logp", rows)
                logp = torch.log_softmax(z, dim=-1, out=into)
            if want_ls:
                nll = -logp.gather(-1, target[lo:hi, None]).squeeze(-1)
                nll_out[lo:hi] = nll.masked_fill(drop, 0.0)
                ls_out[lo:hi] = (a * nll - b * logp.sum(-1)).masked_fill(drop, 0.0)
            if want_kd:
                logp_t = logp
                if temp != 1.0:
                    logp_t = torch.log_softmax(torch.div(z, temp, out=buffer("z_t", rows)), dim=-1,
                                               out=buffer("logp_t", rows))
                t = t_vals[lo:hi].to(dtype)
                if t_idx is None:
                    if temp != 1.0:
                        t = torch.div(t, temp, out=buffer("z_t", rows))
                    logq = torch.log_softmax(t, dim=-1, out=buffer("logq", rows))
                    q = torch.exp(logq, out=buffer("q", rows))
                    sel = logp_t
                else:
                    logq = torch.log_softmax(t / temp, dim=-1)
                    q = logq.exp()
                    sel = logp_t.gather(-1, t_idx[lo:hi])
                kl = torch.linalg.vecdot(q, logq) - torch.linalg.vecdot(q, sel)
                if not bool(torch.isfinite(kl).all()):  # classes the teacher rules out: 0 log 0 = 0
                    kl = torch.where(q > 0, q * (logq - sel), torch.zeros_like(q)).sum(-1)
                kd_out[lo:hi] = (temp * temp * kl).masked_fill(drop, 0.0)
            if g is None:
                continue
            if c_p != 0.0:  # logp is in g
                g.exp_()
                if c_p != 1.0:
                    g.mul_(c_p)
            if c_t != 0.0:  # T != 1: the KD term's own softmax at temperature T
                p_t = logp_t.exp_()
                g.add_(p_t, alpha=c_t) if c_p != 0.0 else torch.mul(p_t, c_t, out=g)
            elif c_p == 0.0:
                g.zero_()
            if want_kd and c_q != 0.0:
                if t_idx is not None:
                    g.scatter_add_(-1, t_idx[lo:hi], q.mul_(-c_q))
                else:
                    g.add_(q, alpha=-c_q)
            if want_ls and w_ls != 0.0:
                if b != 0.0:
                    g.sub_(w_ls * b)
                g.scatter_add_(-1, target[lo:hi, None], g.new_full((rows, 1), -w_ls * a))
            if bool(drop.any()):
                g.index_fill_(0, drop.nonzero().squeeze(1), 0.0)
            if grad.dtype != dtype:
                grad[lo:hi] = g
        loss = torch.zeros_like(ls_out)
        if want_ls and w_ls != 0.0:
            loss.add_(ls_out, alpha=w_ls)
        if want_kd and w_kd != 0.0:
            loss.add_(kd_out, alpha=w_kd)
        parts = (ls_out, nll_out, kd_out)
        ctx.mark_non_differentiable(*parts)
        if grad is not None:
            ctx.save_for_backward(grad)
        return (loss, *parts)

    @staticmethod
    def backward(ctx, g_loss, _g_ls, _g_nll, _g_kd):
        if not ctx.saved_tensors:
            raise RuntimeError("the fused LS/KD loss was computed without gradient")
        (grad,) = ctx.saved_tensors
        if not bool(g_loss.eq(1).all()):  # a new tensor: the saved one may serve another backward
            grad = grad * g_loss.to(grad.dtype).unsqueeze(-1)
        return grad, None, None, None, None, None, None, None, None


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
    per_row = _fused_rows(student_logits, None, teacher, None, (0.0, 1.0), temperature, topk, ignore_mask)[0]
    return per_row.sum() if reduce else per_row.view(student_logits.shape[:-1])


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


def _fused_rows(student_logits, target, teacher, ls_ab, weights, temperature, topk, ignore_mask):
    """Per-row ``(w_ls * LS + w_kd * KD, LS, NLL, KD)`` from one ``_LSKD`` pass; the
    student's logits (..., V), its target (...) and the teacher's output are flattened
    here, once, for every caller."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    student, idx, vals, keep = _flatten_kd_inputs(student_logits, teacher, topk, ignore_mask)
    need_grad = torch.is_grad_enabled() and student.requires_grad
    flat_target = None if target is None else target.reshape(-1)
    return _LSKD.apply(student, flat_target, keep, idx, vals, ls_ab, weights, float(temperature), need_grad)


def _fused_sums(student_logits, target, teacher, ls_ab, weights, temperature, topk, ignore_index):
    """Summed ``_fused_rows``, positions whose target is ``ignore_index`` left out."""
    mask = target.eq(ignore_index) if ignore_index is not None else None
    rows = _fused_rows(student_logits, target, teacher, ls_ab, weights, temperature, topk, mask)
    return tuple(r.sum() for r in rows)


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
    are computed from ``student_logits`` in one fused, row-chunked pass that also
    writes their gradient into a single tensor (``lprobs`` may then be None), so KD
    adds no (N, V) buffers on top of what the logits already need.
    ``ls_kd_loss_reference`` is the same definition written plainly.

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
    loss, ls, nll, kd = _fused_sums(student_logits, target, teacher, ab, (1.0 - alpha, alpha), temperature, topk,
                                    ignore_index)
    return loss, {"ls_loss": ls.detach(), "nll_loss": nll.detach(), "kd_loss": kd.detach()}


def ls_kd_loss_reference(
    logits: torch.Tensor,
    target: torch.Tensor,
    teacher_logits: torch.Tensor,
    epsilon: float,
    alpha: float,
    temperature: float = 1.0,
    convention: str = "fairseq",
    topk: int = 0,
    ignore_index: Optional[int] = None,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """The definition ``ls_kd_loss`` computes, written plainly with autograd (as in
    mdistiller's ``kd_loss``); the tests hold the fused version to it. Same returns."""
    keep = target.ne(ignore_index) if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    logits, target, teacher_logits = logits[keep], target[keep], teacher_logits[keep]
    log_p = torch.log_softmax(logits, dim=-1)
    soft_target = smoothed_targets(target, logits.size(-1), epsilon, convention).to(log_p.dtype)
    ls, nll = -(soft_target * log_p).sum(), -log_p.gather(-1, target[:, None]).sum()
    log_p_t = torch.log_softmax(logits / temperature, dim=-1)
    if topk > 0:  # the teacher's k largest logits, renormalised; the student's log-probabilities on them
        teacher_logits, classes = teacher_logits.topk(topk, dim=-1)
        log_p_t = log_p_t.gather(-1, classes)
    log_q_t = torch.log_softmax(teacher_logits / temperature, dim=-1)
    kd = temperature**2 * torch.nn.functional.kl_div(log_p_t, log_q_t, log_target=True, reduction="sum")
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
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
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
            seq_term, seq_nll, _, kd = _fused_sums(seq_logits, seq_target, teacher, (1.0, 0.0), (1.0, alpha),
                                                   temperature, topk, ignore_index)
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


def teacher_agreement(
    student_logits: torch.Tensor, teacher: TeacherOutput, ignore_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Number of positions where the student's most likely class is the teacher's.

    ``teacher`` is the teacher's output (full logits (..., V) or a top-k pair) or,
    when already known, its most likely class per position (an integer tensor (...)).
    ``ignore_mask`` is True at positions left out (padding).
    """
    if isinstance(teacher, (tuple, list)):
        idx, vals = teacher
        teacher_top1 = idx.gather(-1, vals.argmax(-1, keepdim=True)).squeeze(-1)
    elif teacher.is_floating_point():
        teacher_top1 = teacher.argmax(-1)
    else:
        teacher_top1 = teacher
    same = student_logits.argmax(-1).eq(teacher_top1.reshape(student_logits.shape[:-1]))
    if ignore_mask is not None:
        same = same & ~ignore_mask.reshape(same.shape)
    return same.sum()


__all__: Sequence[str] = (
    "LS_CONVENTIONS",
    "label_smoothed_nll_loss",
    "smoothed_targets",
    "kd_loss",
    "ls_kd_loss",
    "ls_kd_loss_reference",
    "seq_kd_loss",
    "teacher_agreement",
    "check_kd_options",
    "ensemble_log_probs",
)
