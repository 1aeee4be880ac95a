"""The one teacher loader for lskd's NMT side.

A teacher is one fairseq checkpoint or an ensemble of several (``a.pt:b.pt``),
loaded once, frozen and in eval mode. It is deliberately *not* an ``nn.Module``:
holding it in a task (or a tool) keeps it out of DDP, out of the student's
checkpoints and out of the optimizer.

An ensemble's distribution is the average of its members' probabilities; its
"logits" are ``log(mean_m softmax(z_m))``, so temperature T applies to those
(``softmax(log p / T)``, which is p at T = 1).
"""

import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch

from lskd_fairseq import fairseq_compat
from lskd_fairseq.losses import ensemble_log_probs

logger = logging.getLogger(__name__)

# Rows of decoder features projected to the vocabulary at a time when only the
# teacher's top-k is wanted, so the full (tokens x vocab) logits never exist at once.
_TOPK_ROWS = 1024


class TeacherError(ValueError):
    """A teacher that cannot be used: missing, unreadable or incompatible."""


def split_paths(paths: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(paths, str):
        paths = [p for p in paths.split(":") if p]
    return list(paths)


def _read_dictionary_file(path: str) -> Optional[List[str]]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [line.rsplit(" ", 1)[0] if " " in line else line.rstrip("\n") for line in f]


def check_dictionaries(teacher_state: dict, path: str, task) -> None:
    """Refuse a teacher whose dictionaries differ from the student task's.

    The symbols are compared when the teacher's data directory (recorded in its
    checkpoint) is still there; otherwise the embedding sizes are compared.
    """
    cfg = teacher_state.get("cfg") or {}
    tcfg = cfg.get("task") or {}
    data = str(tcfg.get("data") or "").split(":")[0]
    model_state = teacher_state.get("model", {})
    for side, dictionary, emb_key, lang in (
        ("source", task.source_dictionary, "encoder.embed_tokens.weight", tcfg.get("source_lang")),
        ("target", task.target_dictionary, "decoder.embed_tokens.weight", tcfg.get("target_lang")),
    ):
        if dictionary is None:
            continue
        student_symbols = list(dictionary.symbols)
        teacher_symbols = None
        if data and lang:
            # a saved dictionary holds the symbols after the 4 specials (and any padding added later)
            saved = _read_dictionary_file(os.path.join(data, f"dict.{lang}.txt"))
            if saved is not None:
                teacher_symbols = student_symbols[: dictionary.nspecial] + saved
        emb = model_state.get(emb_key)
        teacher_size = emb.shape[0] if emb is not None else None
        if teacher_symbols is not None:
            n = min(len(teacher_symbols), len(student_symbols))
            first = next((i for i in range(n) if teacher_symbols[i] != student_symbols[i]), None)
            if first is not None:
                raise TeacherError(
                    f"teacher {path}: its {side} dictionary differs from the student's "
                    f"(teacher {len(teacher_symbols)} symbols from {data}, student {len(student_symbols)}); "
                    f"first difference at index {first}: teacher {teacher_symbols[first]!r} vs "
                    f"student {student_symbols[first]!r}. Binarize the student's data with the teacher's "
                    f"dictionaries (fairseq-preprocess --srcdict/--tgtdict) or use a matching teacher."
                )
        if teacher_size is not None and teacher_size != len(student_symbols):
            extra = ""
            if teacher_symbols is not None and len(teacher_symbols) != len(student_symbols):
                n = min(len(teacher_symbols), len(student_symbols))
                extra = f"; the first {n} symbols agree, the longer one continues with {(teacher_symbols + student_symbols)[n]!r}"
            raise TeacherError(
                f"teacher {path}: its {side} dictionary has {teacher_size} symbols, the student's has "
                f"{len(student_symbols)}{extra}. Binarize the student's data with the teacher's "
                f"dictionaries (fairseq-preprocess --srcdict/--tgtdict) or use a matching teacher."
            )


def load_checkpoint_state(path: str) -> dict:
    """Read a fairseq checkpoint (weights_only, with fairseq's globals allowed)."""
    fairseq_compat.apply()
    if not os.path.isfile(path):
        raise TeacherError(f"teacher checkpoint not found: {path} (check --teacher-path)")
    from fairseq import checkpoint_utils

    try:
        return checkpoint_utils.load_checkpoint_to_cpu(path)
    except Exception as e:  # noqa: BLE001 - any failure to read means the same to the user
        raise TeacherError(
            f"teacher checkpoint {path} could not be read ({type(e).__name__}: {e}); "
            f"is it a complete fairseq checkpoint?"
        ) from e


@dataclass
class TeacherOutput:
    """What the criteria need from a teacher on one batch.

    ``dist`` is passed to ``losses.kd_loss``: full logits (B, T, V) or a top-k pair.
    ``nll_sum`` is the teacher's NLL of the gold tokens (nats, padding excluded) and
    ``top1`` its argmax token per position (B, T).
    """

    dist: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]
    nll_sum: Optional[torch.Tensor]
    top1: torch.Tensor


class Teacher:
    """A frozen fairseq model or ensemble that scores batches under teacher forcing."""

    def __init__(self, models: List[torch.nn.Module], paths: List[str]):
        self.models = models
        self.paths = paths
        for m in self.models:
            m.eval()
            m.requires_grad_(False)

    @classmethod
    def load(cls, paths: Union[str, Sequence[str]], task) -> "Teacher":
        """Load checkpoint(s) for use with ``task``'s dictionaries; clear errors otherwise."""
        paths = split_paths(paths)
        if not paths:
            raise TeacherError("no teacher checkpoint given (--teacher-path a.pt[:b.pt ...])")
        states = []
        for p in paths:
            state = load_checkpoint_state(p)
            check_dictionaries(state, p, task)
            states.append(state)
        from fairseq import checkpoint_utils

        models = []
        for p, state in zip(paths, states):
            try:
                (model,), _ = checkpoint_utils.load_model_ensemble([p], task=task, state=state)
            except Exception as e:  # noqa: BLE001
                raise TeacherError(f"teacher {p} could not be built: {type(e).__name__}: {e}") from e
            models.append(model)
        n = sum(x.numel() for m in models for x in m.parameters())
        logger.info(f"teacher: {len(models)} model(s), {n:,} parameters, from {':'.join(paths)}")
        return cls(models, paths)

    def to_match(self, like: torch.nn.Module) -> None:
        """Move the teacher to the device and floating dtype of ``like`` (the student)."""
        ref = next(like.parameters())
        for m in self.models:
            p = next(m.parameters())
            if p.device != ref.device or p.dtype != ref.dtype:
                m.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else p.dtype)

    def _features(self, model, net_input):
        return model(**net_input, features_only=True)[0]

    @torch.no_grad()
    def score(
        self,
        net_input: dict,
        target: torch.Tensor,
        padding_idx: int,
        topk: int = 0,
        ignore_prefix_size: int = 0,
    ) -> TeacherOutput:
        """Teacher-forced scores for a batch; top-k computed chunk-wise when ``topk > 0``."""
        feats = [self._features(m, net_input) for m in self.models]
        if ignore_prefix_size > 0:
            feats = [f[:, ignore_prefix_size:, :] for f in feats]
            target = target[:, ignore_prefix_size:]
        bsz, tlen = target.shape
        flat_feats = [f.reshape(bsz * tlen, -1) for f in feats]
        flat_target = target.reshape(-1)
        keep = flat_target.ne(padding_idx)
        rows = flat_target.numel()
        nll = torch.zeros((), dtype=torch.float32, device=target.device)
        top1 = torch.empty_like(flat_target)
        if topk > 0:
            idx_out = torch.empty(rows, topk, dtype=torch.long, device=target.device)
            val_out = None
            step = _TOPK_ROWS
        else:
            full = None
            step = rows
        for lo in range(0, rows, step):
            hi = min(rows, lo + step)
            logits = self._chunk_logits(flat_feats, lo, hi)
            lp = torch.log_softmax(logits.float(), dim=-1)
            gold = lp.gather(-1, flat_target[lo:hi, None]).squeeze(-1)
            nll -= gold.masked_fill(~keep[lo:hi], 0.0).sum()
            top1[lo:hi] = logits.argmax(-1)
            if topk > 0:
                v, i = logits.topk(topk, dim=-1)
                if val_out is None:
                    val_out = torch.empty(rows, topk, dtype=v.dtype, device=v.device)
                idx_out[lo:hi], val_out[lo:hi] = i, v
            else:
                full = logits
        if topk > 0:
            dist = (idx_out.view(bsz, tlen, topk), val_out.view(bsz, tlen, topk))
        else:
            dist = full.view(bsz, tlen, -1)
        return TeacherOutput(dist=dist, nll_sum=nll, top1=top1.view(bsz, tlen))

    def _chunk_logits(self, flat_feats, lo: int, hi: int) -> torch.Tensor:
        return ensemble_log_probs([m.decoder.output_layer(f[lo:hi]) for m, f in zip(self.models, flat_feats)])
