"""The one teacher loader for lskd's NMT side.

A teacher is one fairseq checkpoint or an ensemble of several (``a.pt:b.pt``),
loaded once, frozen and in eval mode. It is deliberately *not* an ``nn.Module``:
holding it in a task (or a tool) keeps it out of DDP, out of the student's
checkpoints and out of the optimizer.

An ensemble's distribution is the average of its members' probabilities; its
"logits" are ``log(mean_m softmax(z_m))``, so temperature T applies to those
(``softmax(log p / T)``, which is p at T = 1).
"""

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch

from lskd_fairseq import fairseq_compat
from lskd_fairseq.artifacts import check_same_dictionary
from lskd_fairseq.errors import LskdError
from lskd_fairseq.losses import ensemble_log_probs
from lskd_fairseq import console

logger = console.get_logger("teacher")

# Rows of decoder features projected to the vocabulary at a time when only the
# teacher's top-k is wanted, so the full (tokens x vocab) logits never exist at once.
_TOPK_ROWS = 1024


class TeacherError(LskdError):
    """A teacher that cannot be used: missing, unreadable or incompatible."""


DICT_CHECKS = ("full", "size-only")


def add_teacher_args(parser) -> None:
    """The teacher options of the NMT tools (``lskd-distill-data``, ``lskd-teacher-cache``),
    the same as the task's ``--teacher-path``/``--teacher-data``/``--teacher-dict-check``."""
    parser.add_argument("--teacher-path", required=True,
                        help="teacher checkpoint(s), a.pt[:b.pt] for an ensemble (probabilities averaged)")
    parser.add_argument("--teacher-data", default="",
                        help="the teacher's data-bin (its dict.*.txt), if the one its checkpoint records has moved")
    parser.add_argument("--teacher-dict-check", default="full", choices=list(DICT_CHECKS),
                        help="full: compare the teacher's dictionaries with the data's symbol by symbol (default); "
                             "size-only: compare sizes only (an opt-out, logged)")


def split_paths(paths: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(paths, str):
        paths = [p for p in paths.split(":") if p]
    return list(paths)


def teacher_dictionary_paths(teacher_state: dict, path: str, task, teacher_data: str = "") -> Tuple[str, str]:
    """The files of the dictionaries the teacher was trained with: ``dict.SRC.txt`` and
    ``dict.TGT.txt`` in its data-bin (``teacher_data``, else the one its checkpoint
    records). Its languages are those it recorded or, as fairseq does when ``-s/-t``
    were not given, inferred from the data-bin's file names
    (``data_utils.infer_language_pair``), else the student's."""
    from fairseq.data import data_utils

    tcfg = (teacher_state.get("cfg") or {}).get("task") or {}
    data = teacher_data or str(tcfg.get("data") or "").split(":")[0]
    src, tgt = tcfg.get("source_lang"), tcfg.get("target_lang")
    where = f"--teacher-data {teacher_data}" if teacher_data else f"its data-bin {data or '(none recorded)'}"
    fix = ("pass --teacher-data DIR (the teacher's data-bin, with its dict.*.txt), or compare sizes only "
           "with --teacher-dict-check size-only (not recommended: another vocabulary of the same size passes)")
    if not data or not os.path.isdir(data):
        raise TeacherError(f"teacher {path}: its dictionaries cannot be found ({where} does not exist); {fix}")
    if src is None or tgt is None:
        src, tgt = data_utils.infer_language_pair(data)
    if src is None or tgt is None:
        src, tgt = task.cfg.source_lang, task.cfg.target_lang
    files = (os.path.join(data, f"dict.{src}.txt"), os.path.join(data, f"dict.{tgt}.txt"))
    for f in files:
        if not os.path.isfile(f):
            raise TeacherError(f"teacher {path}: its dictionaries cannot be found ({f} is missing in {where}); {fix}")
    return files


def check_dictionaries(teacher_state: dict, path: str, task, teacher_data: str = "",
                       dict_check: str = "full") -> None:
    """Refuse a teacher whose dictionaries differ from the student task's.

    The teacher's own dictionary files (see ``teacher_dictionary_paths``) are compared
    symbol by symbol with the student's (``artifacts.check_same_dictionary``), and must
    match the teacher's embedding sizes. ``dict_check="size-only"`` (an explicit
    opt-out, logged) compares the embedding sizes with the student's only.
    """
    from fairseq.data import Dictionary

    if dict_check not in DICT_CHECKS:
        raise TeacherError(f"--teacher-dict-check must be one of {', '.join(DICT_CHECKS)}, got {dict_check!r}")
    model_state = teacher_state.get("model", {})
    fix = ("binarize the student's data with the teacher's dictionaries (fairseq-preprocess "
           "--srcdict/--tgtdict) or use a matching teacher")
    sides = (("source", task.source_dictionary, "encoder.embed_tokens.weight"),
             ("target", task.target_dictionary, "decoder.embed_tokens.weight"))
    if dict_check == "size-only":
        logger.warning(f"teacher {path}: --teacher-dict-check size-only: only the dictionary sizes are compared, "
                       f"not their symbols")
        for side, dictionary, emb_key in sides:
            emb = model_state.get(emb_key)
            if dictionary is not None and emb is not None:
                check_same_dictionary(int(emb.shape[0]), dictionary, f"teacher {path}: its {side} dictionary "
                                      f"differs in size from the student's", fix, error=TeacherError, size_only=True)
        return
    files = teacher_dictionary_paths(teacher_state, path, task, teacher_data)
    for (side, dictionary, emb_key), dict_file in zip(sides, files):
        if dictionary is None:
            continue
        theirs = Dictionary.load(dict_file)
        emb = model_state.get(emb_key)
        if emb is not None and int(emb.shape[0]) != len(theirs):
            raise TeacherError(
                f"teacher {path}: its {side} embedding has {int(emb.shape[0])} rows but {dict_file} has "
                f"{len(theirs)} symbols, so that file is not the dictionary it was trained with; "
                f"pass --teacher-data DIR (the teacher's data-bin)")
        check_same_dictionary(theirs, dictionary, f"teacher {path}: its {side} dictionary ({dict_file}) differs "
                              f"from the student data's ({task.cfg.data})", fix, error=TeacherError)
    logger.info(f"teacher {path}: dictionaries {files[0]} and {files[1]} are the student's")


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

    ``dist`` is passed to ``losses.ls_kd_loss``: full logits (B, T, V) or a top-k pair.
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
    def load(cls, paths: Union[str, Sequence[str]], task, topk: int = 0, teacher_data: str = "",
             dict_check: str = "full") -> "Teacher":
        """Load checkpoint(s) for use with ``task``'s dictionaries; clear errors otherwise.

        ``topk`` (``--kd-topk``) is refused when larger than the vocabulary;
        ``teacher_data`` and ``dict_check`` are passed to ``check_dictionaries``.
        """
        paths = split_paths(paths)
        if not paths:
            raise TeacherError("no teacher checkpoint given (--teacher-path a.pt[:b.pt ...])")
        states = []
        for p in paths:
            state = load_checkpoint_state(p)
            check_dictionaries(state, p, task, teacher_data=teacher_data, dict_check=dict_check)
            states.append(state)
        vocab = len(task.target_dictionary)  # the teacher's too, once the dictionaries agree
        if topk > vocab:
            raise TeacherError(
                f"--kd-topk {topk} is larger than the teacher's vocabulary ({vocab} target symbols); "
                f"use --kd-topk <= {vocab}, or 0 for the full vocabulary")
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
            # NLL = logsumexp(z) - z_gold: no (rows, V) log-softmax buffer is written
            z = logits.float()
            gold = z.gather(-1, flat_target[lo:hi, None]).squeeze(-1) - torch.logsumexp(z, dim=-1)
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
