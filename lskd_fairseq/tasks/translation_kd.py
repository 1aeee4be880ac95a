"""``translation_kd``: fairseq's ``translation`` task holding a frozen teacher.

The teacher (one checkpoint or an ensemble, ``--teacher-path a.pt:b.pt``) is
loaded when the student model is built, before any training step, and is
checked against the student's dictionaries then. It lives on the task, not on
the model or the criterion, so DDP never wraps it, the optimizer never sees it
and checkpoints never contain it; a resumed run simply loads it again from
``--teacher-path``.

Offline teacher artifacts (issue 3):

* ``--teacher-cache DIR``: the teacher's top-k tokens and logits per target token,
  made by ``lskd-teacher-cache``. Batches carry them (looked up by sample id in
  the data loader), and ``teacher_outputs`` returns them instead of running a
  teacher. Criteria call ``require_teacher_cache`` when they are built; the cache
  is then checked (data, dictionaries, k, and the teacher when ``--teacher-path``
  is also given) for every split loaded, before training starts. A split without
  a cache falls back to the online teacher when ``--teacher-path`` is given, and
  is refused otherwise.
* ``--distilled-data DIR``: a data-bin made by ``lskd-distill-data``, aligned
  with the gold data by sample id. Batches then also carry the teacher's
  sequence for each sample (``sample["distilled"]``), for the
  ``sequence_distillation`` criterion. Gold and distilled data must agree in
  size, source sentences and dictionaries, or loading the split fails.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, Optional

from fairseq.data import data_utils
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from lskd_fairseq import artifacts
from lskd_fairseq.artifacts import ArtifactError
from lskd_fairseq.teacher import Teacher, TeacherError, TeacherOutput, split_paths

logger = logging.getLogger(__name__)


@dataclass
class TranslationKDConfig(TranslationConfig):
    teacher_path: str = field(
        default="",
        metadata={
            "help": "teacher checkpoint(s) for knowledge distillation, separated by ':' "
            "for an ensemble (probabilities are averaged); the teacher must use the "
            "same dictionaries as the student"
        },
    )
    teacher_cache: str = field(
        default="",
        metadata={
            "help": "directory of a top-k teacher cache made by lskd-teacher-cache; the "
            "criterion reads the teacher's top-k logits from it instead of running a teacher"
        },
    )
    distilled_data: str = field(
        default="",
        metadata={
            "help": "data-bin made by lskd-distill-data from this data (aligned by sample id), "
            "holding the teacher's translations; used by --criterion sequence_distillation"
        },
    )


class DistilledDataError(ArtifactError):
    """Gold and distilled data that do not belong together."""


class _KDCollater:
    """Wraps a LanguagePairDataset's collater: adds the distilled targets and cached
    teacher top-k of the batch's samples, looked up by sample id."""

    def __init__(self, inner, task, split: str, distilled=None):
        self.inner = inner
        self.task = task
        self.split = split
        self.distilled = distilled

    def __call__(self, samples, *args, **kwargs):
        sample = self.inner(samples, *args, **kwargs)
        if not sample or "id" not in sample:
            return sample
        ids = sample["id"].tolist()
        tgt_dict = self.task.target_dictionary
        pad, eos = tgt_dict.pad(), tgt_dict.eos()
        if self.distilled is not None:
            tgts = [self.distilled[i] for i in ids]
            sample["distilled"] = {
                "target": data_utils.collate_tokens(tgts, pad, eos, left_pad=False),
                "prev_output_tokens": data_utils.collate_tokens(
                    tgts, pad, eos, left_pad=False, move_eos_to_beginning=True
                ),
                "ntokens": sum(len(t) for t in tgts),
            }
        cache = self.task.teacher_cache_for(self.split)
        if cache is not None:
            holder = sample if self.task.teacher_cache_side == "gold" else sample.get("distilled")
            if holder is not None and holder.get("target") is not None:
                holder["teacher_topk"] = cache.lookup(ids, holder["target"], pad)
        return sample


@register_task("translation_kd", dataclass=TranslationKDConfig)
class TranslationKDTask(TranslationTask):
    """Translation with a frozen teacher for word-level (and sequence-level) KD."""

    cfg: TranslationKDConfig

    def __init__(self, cfg: TranslationKDConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self._teacher: Optional[Teacher] = None
        self._distilled: Dict[str, object] = {}
        self._caches: Dict[str, Optional[artifacts.TopKCache]] = {}
        self._cache_topk: Optional[int] = None
        self.teacher_cache_side: Optional[str] = None
        self._teacher_fp = None

    @classmethod
    def setup_task(cls, cfg: TranslationKDConfig, **kwargs):
        for path in split_paths(cfg.teacher_path):
            if not os.path.isfile(path):
                raise TeacherError(f"--teacher-path: checkpoint not found: {path}")
        return super().setup_task(cfg, **kwargs)

    @property
    def has_teacher(self) -> bool:
        """A teacher is available: a checkpoint (``--teacher-path``) or a cache of one."""
        return bool(self.cfg.teacher_path) or bool(getattr(self.cfg, "teacher_cache", ""))

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        # Models built from a checkpoint are the teacher itself or a model being
        # loaded for generation: neither needs a teacher.
        if not from_checkpoint and self.cfg.teacher_path and self._teacher is None:
            self._teacher = Teacher.load(self.cfg.teacher_path, task=self)
        return model

    @property
    def teacher(self) -> Teacher:
        if self._teacher is None:
            if not self.has_teacher:
                raise TeacherError(
                    "this criterion needs a teacher: pass --teacher-path to --task translation_kd"
                )
            self._teacher = Teacher.load(self.cfg.teacher_path, task=self)
        return self._teacher

    # ------------------------------------------------------------------ datasets

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        distilled = None
        if self.cfg.distilled_data:
            distilled = self._load_distilled(split)
        if self.cfg.teacher_cache and self._cache_topk is not None:
            self._open_cache(split)
        if distilled is not None or self.cfg.teacher_cache:
            ds = self.datasets[split]
            inner = ds.collater
            if isinstance(inner, _KDCollater):
                inner = inner.inner
            ds.collater = _KDCollater(inner, self, split, distilled)

    def _lang_pair(self):
        return self.cfg.source_lang, self.cfg.target_lang

    def _gold_data_dir(self) -> str:
        from fairseq import utils

        return utils.split_paths(self.cfg.data)[0]

    def _load_distilled(self, split):
        """The distilled targets for ``split`` (an indexed dataset), checked against the gold data."""
        ddir = self.cfg.distilled_data
        src, tgt = self._lang_pair()
        required = split == self.cfg.train_subset
        tgt_ds = artifacts.check_distilled_against_gold(
            ddir, split, src, tgt, self._gold_data_dir(), len(self.datasets[split]),
            self.src_dict, self.tgt_dict, required=required,
        )
        if tgt_ds is None:
            logger.info(f"--distilled-data {ddir}: no distilled split {split!r}; it is evaluated on gold only")
        self._distilled[split] = tgt_ds
        return tgt_ds

    # ------------------------------------------------------------------ teacher cache

    def require_teacher_cache(self, topk: int, side: str = "gold") -> None:
        """Called by a criterion that reads teacher outputs from ``--teacher-cache``.

        ``side`` is ``"gold"`` (the cache covers the gold targets) or ``"distilled"``
        (it covers the ``--distilled-data`` targets). Checks every split loaded so
        far; later splits are checked when they are loaded.
        """
        if not self.cfg.teacher_cache:
            return
        if side not in ("gold", "distilled"):
            raise ValueError(f"side must be 'gold' or 'distilled', got {side!r}")
        if side == "distilled" and not self.cfg.distilled_data:
            raise ArtifactError("a teacher cache over distilled targets needs --distilled-data")
        if not os.path.isdir(self.cfg.teacher_cache):
            raise ArtifactError(f"--teacher-cache: no such directory: {self.cfg.teacher_cache}")
        self._cache_topk = topk
        self.teacher_cache_side = side
        self._caches.clear()
        for split in list(self.datasets.keys()):
            self._open_cache(split)

    def _open_cache(self, split: str) -> None:
        side = self.teacher_cache_side
        try:
            cache = artifacts.TopKCache(self.cfg.teacher_cache, split)
        except ArtifactError:
            if self.cfg.teacher_path:
                logger.info(f"teacher cache: no cache for split {split!r}; the teacher runs online there")
                self._caches[split] = None
                return
            raise
        src, tgt = self._lang_pair()
        if side == "gold":
            data_dir, what = self._gold_data_dir(), "the gold data"
            n = len(self.datasets[split])
        else:
            data_dir, what = self.cfg.distilled_data, "the distilled data"
            dist = self._distilled.get(split)
            if dist is None:
                if split == self.cfg.train_subset:
                    raise ArtifactError(f"no distilled split {split!r} for the teacher cache to cover")
                self._caches[split] = None
                return
            n = len(dist)
        if self.cfg.teacher_path and self._teacher_fp is None:
            self._teacher_fp = artifacts.teacher_fingerprint(split_paths(self.cfg.teacher_path))
        cache.check(
            topk=self._cache_topk,
            data_fp=artifacts.data_fingerprint(data_dir, split, src, tgt),
            src_dict_sha=artifacts.dictionary_sha256(self.src_dict),
            tgt_dict_sha=artifacts.dictionary_sha256(self.tgt_dict),
            n_samples=n,
            teacher_fp=self._teacher_fp,
            what=what,
        )
        logger.info(
            f"teacher cache: split {split!r} from {self.cfg.teacher_cache} (k={cache.k}, "
            f"{cache.header['n_tokens']} tokens, {cache.header['bytes_per_token']:.1f} bytes/token)"
        )
        self._caches[split] = cache

    def teacher_cache_for(self, split: str) -> Optional[artifacts.TopKCache]:
        if not self.cfg.teacher_cache or self._cache_topk is None:
            return None
        return self._caches.get(split)

    # ------------------------------------------------------------------ teacher outputs

    def teacher_outputs(self, sample, student, topk: int = 0, ignore_prefix_size: int = 0) -> TeacherOutput:
        """The teacher's scores for ``sample``, on the student's device and dtype.

        Batches that carry cached top-k outputs (``--teacher-cache``) are served from
        them: ``dist`` is the ``(indices, logits)`` pair and ``nll_sum`` is None.
        """
        cached = sample.get("teacher_topk") if isinstance(sample, dict) else None
        if cached is not None:
            idx, vals = cached
            if topk <= 0 or topk > idx.size(-1):
                raise ArtifactError(
                    f"teacher cache has k={idx.size(-1)}; --kd-topk must be in [1, {idx.size(-1)}], got {topk}"
                )
            if ignore_prefix_size > 0:
                idx, vals = idx[:, ignore_prefix_size:], vals[:, ignore_prefix_size:]
            # rows are stored in descending order, so the first k are the top-k
            idx, vals = idx[..., :topk], vals[..., :topk]
            return TeacherOutput(dist=(idx, vals), nll_sum=None, top1=idx[..., 0])
        if not self.cfg.teacher_path:
            raise TeacherError(
                "this batch has no cached teacher outputs and no --teacher-path was given "
                "(was the criterion built with this task's --teacher-cache?)"
            )
        teacher = self.teacher
        teacher.to_match(student)
        return teacher.score(
            sample["net_input"],
            sample["target"],
            self.target_dictionary.pad(),
            topk=topk,
            ignore_prefix_size=ignore_prefix_size,
        )
