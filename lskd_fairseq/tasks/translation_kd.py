"""``translation_kd``: fairseq's ``translation`` task holding a frozen teacher.

The teacher (one checkpoint or an ensemble, ``--teacher-path a.pt:b.pt``) is
needed to train only. It is loaded when a criterion that uses it is built
(``build_criterion``: fairseq-train, fairseq-validate), before any training
step, and is checked then: its dictionaries against the student's (see
``teacher.check_dictionaries``; ``--teacher-data``, ``--teacher-dict-check``) and
``--kd-topk`` against its vocabulary. Loading a student for inference
(``from_pretrained``, ``load_model_ensemble_and_task``, fairseq-generate,
fairseq-interactive) never touches the teacher, so a student deploys without
it. The teacher lives on the task, not on the model or the criterion, so DDP
never wraps it, the optimizer never sees it and checkpoints never contain it;
a resumed run simply loads it again from ``--teacher-path``.

Refused before training: a teacher (or teacher cache, or distilled data) with a
criterion that cannot use it, and resuming a checkpoint trained with another
teacher (by SHA-256) or other ``--kd-alpha/--kd-temperature/--kd-topk`` unless
``--kd-allow-changed-settings`` (the KD settings are saved in the task's state
in every checkpoint; deliberate changes are logged and kept there too).

Offline teacher artifacts:

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

import os
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
from fairseq.data import data_utils
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from lskd_fairseq import artifacts, fairseq_compat
from lskd_fairseq.artifacts import ArtifactError
from lskd_fairseq.errors import LskdError, OptionError
from lskd_fairseq.teacher import DICT_CHECKS, Teacher, TeacherError, TeacherOutput, split_paths
from lskd_fairseq import console

logger = console.get_logger("translation_kd")

# What each lskd criterion can use from this task; any other criterion uses none of it.
CRITERION_INPUTS = {
    "label_smoothed_kd": {"teacher"},
    "sequence_distillation": {"teacher", "distilled"},
}
# The criterion options that make up the KD settings a resumed run must keep.
KD_SETTINGS = ("kd_alpha", "kd_temperature", "kd_topk")
STATE_KEY = "lskd_kd"


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
    teacher_data: str = field(
        default="",
        metadata={
            "help": "the teacher's data-bin (its dict.*.txt), when the one its checkpoint records has moved; "
            "the teacher's dictionaries are compared with the student's"
        },
    )
    teacher_dict_check: ChoiceEnum(list(DICT_CHECKS)) = field(
        default="full",
        metadata={
            "help": "full: compare the teacher's dictionaries with the student's symbol by symbol; "
            "size-only: compare their sizes only (an opt-out, recorded in the log)"
        },
    )
    kd_allow_changed_settings: bool = field(
        default=False,
        metadata={
            "help": "resume a checkpoint under another teacher or other --kd-alpha/--kd-temperature/--kd-topk "
            "(deliberately, e.g. for a curriculum); the change is logged and saved in the checkpoint"
        },
    )


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
        self._kd_settings: Optional[dict] = None  # set when a training criterion is built
        self._kd_history: list = []

    @property
    def has_teacher(self) -> bool:
        """A teacher is available: a checkpoint (``--teacher-path``) or a cache of one."""
        return bool(self.cfg.teacher_path) or bool(getattr(self.cfg, "teacher_cache", ""))

    def _check_teacher_files(self) -> None:
        for path in split_paths(self.cfg.teacher_path):
            if not os.path.isfile(path):
                raise TeacherError(f"--teacher-path: checkpoint not found: {path}")

    def _load_teacher(self, topk: int = 0) -> Teacher:
        self._check_teacher_files()
        return Teacher.load(self.cfg.teacher_path, task=self, topk=topk, teacher_data=self.cfg.teacher_data,
                            dict_check=str(self.cfg.teacher_dict_check))

    @property
    def teacher(self) -> Teacher:
        if self._teacher is None:
            if not self.has_teacher:
                raise TeacherError(
                    "this criterion needs a teacher: pass --teacher-path to --task translation_kd"
                )
            self._teacher = self._load_teacher()
        return self._teacher

    # ------------------------------------------------------------------ criterion: training only

    def build_criterion(self, cfg, from_checkpoint=False):
        """Build the criterion, refuse inputs it cannot use, and load the teacher it needs.

        Only training and validation build a criterion, so only they load the teacher.
        """
        from fairseq.criterions import CRITERION_REGISTRY

        name = getattr(cfg, "_name", None) or getattr(cfg, "criterion", None) or type(cfg).__name__
        given = {"teacher": [o for o, v in (("--teacher-path", self.cfg.teacher_path),
                                            ("--teacher-cache", self.cfg.teacher_cache)) if v],
                 "distilled": ["--distilled-data"] if self.cfg.distilled_data else []}
        usable = CRITERION_INPUTS.get(name, set())
        unused = [opt for what, opts in given.items() if what not in usable for opt in opts]
        if unused:
            users = sorted(c for c, inputs in CRITERION_INPUTS.items() if inputs & {w for w, o in given.items() if o})
            raise OptionError(
                f"{' and '.join(unused)} given, but --criterion {name} cannot use "
                f"{'them' if len(unused) > 1 else 'it'}: it would be loaded and ignored; use --criterion "
                f"{' or '.join(users)}, or drop {' and '.join(unused)}"
            )
        if self.cfg.teacher_path:
            self._check_teacher_files()
        criterion_cls = CRITERION_REGISTRY.get(name)
        try:
            criterion = super().build_criterion(cfg, from_checkpoint)
        except ValueError as e:
            # lskd's criteria refuse bad option values with ValueError: one line for the user
            if isinstance(e, LskdError) or not getattr(criterion_cls, "__module__", "").startswith("lskd_fairseq."):
                raise
            raise OptionError(str(e)) from e
        if "teacher" in usable and self.cfg.teacher_path and self._teacher is None:
            self._teacher = self._load_teacher(topk=int(getattr(cfg, "kd_topk", 0) or 0))
        if usable:
            self._kd_settings = dict(criterion=name, teacher=self._teacher_identity(),
                                     **{k: getattr(cfg, k, None) for k in KD_SETTINGS})
            fairseq_compat.enable_resume_check()
        return criterion

    def _teacher_identity(self) -> Optional[dict]:
        """Which teacher this run distils: its checkpoint's SHA-256 (or that recorded by the cache)."""
        if self.cfg.teacher_path:
            if self._teacher_fp is None:
                self._teacher_fp = artifacts.teacher_fingerprint(split_paths(self.cfg.teacher_path))
            return {"paths": self._teacher_fp["paths"], "sha256": self._teacher_fp["ensemble_sha256"]}
        if self.cfg.teacher_cache:
            header = artifacts.read_json(artifacts.cache_paths(self.cfg.teacher_cache, self.cfg.train_subset)["header"])
            teacher = (header or {}).get("teacher") or {}
            return {"paths": teacher.get("paths"), "sha256": teacher.get("ensemble_sha256"),
                    "cache": os.path.abspath(self.cfg.teacher_cache)}
        return None

    # ------------------------------------------------------------------ checkpoints: the KD settings

    def state_dict(self):
        state = dict(super().state_dict())
        if self._kd_settings is not None:
            state[STATE_KEY] = {"settings": self._kd_settings, "changes": list(self._kd_history)}
        return state

    def check_resume(self, filename: str, reset: bool = False) -> None:
        """Refuse to resume ``filename`` if it was trained with other KD settings.

        Called by fairseq's trainer (``fairseq_compat.enable_resume_check``) before it
        restores the checkpoint. ``reset``: only its weights are taken (all of
        --reset-optimizer, --reset-lr-scheduler and --reset-meters, as with
        --finetune-from-model), which starts a new run, so nothing is compared.
        """
        if self._kd_settings is None or reset:
            return
        try:
            state = torch.load(filename, map_location="cpu", mmap=True, weights_only=True)
        except Exception:  # noqa: BLE001 - an old (non-zip) file: read it whole
            try:
                state = torch.load(filename, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - truncated or corrupt: one line, not a traceback
                raise ArtifactError(
                    f"{filename} is damaged: it cannot be read as a checkpoint ({type(e).__name__}; truncated?); "
                    f"move it aside to start over, or resume from another one with --restore-file") from None
        saved = ((state.get("task_state") or {}).get(STATE_KEY) or {})
        old = saved.get("settings")
        if old is None:
            tcfg = (state.get("cfg") or {}).get("task") or {}
            ccfg = (state.get("cfg") or {}).get("criterion") or {}
            if ccfg.get("_name") not in CRITERION_INPUTS:
                return  # not a KD run: starting KD from it is a new run
            paths = [os.path.abspath(p) for p in split_paths(str(tcfg.get("teacher_path") or ""))]
            old = dict(criterion=ccfg.get("_name"), teacher={"paths": paths or None, "sha256": None},
                       **{k: ccfg.get(k) for k in KD_SETTINGS})
        new = self._kd_settings
        diffs = []
        for k in KD_SETTINGS:
            if old.get(k) != new.get(k):
                diffs.append(f"--{k.replace('_', '-')} {old.get(k)} -> {new.get(k)}")
        old_t, new_t = old.get("teacher") or {}, new.get("teacher") or {}
        same_teacher = (old_t.get("sha256") == new_t.get("sha256") if old_t.get("sha256") and new_t.get("sha256")
                        else old_t.get("paths") == new_t.get("paths"))
        if not same_teacher:
            diffs.append(f"teacher {old_t.get('paths')} (SHA-256 {str(old_t.get('sha256'))[:12]}) -> "
                         f"{new_t.get('paths')} (SHA-256 {str(new_t.get('sha256'))[:12]})")
        if not diffs:
            return
        what = "; ".join(diffs)
        if not self.cfg.kd_allow_changed_settings:
            raise OptionError(
                f"resuming {filename}, which was trained with other KD settings: {what}. Resume with its "
                f"settings, start a new --save-dir, or pass --kd-allow-changed-settings to continue under "
                f"the new ones deliberately"
            )
        num_updates = ((state.get("optimizer_history") or [{}])[-1]).get("num_updates")
        logger.warning(f"--kd-allow-changed-settings: resuming {filename} (update {num_updates}) under "
                       f"changed KD settings: {what}")
        self._kd_history = list(saved.get("changes") or []) + [
            {"num_updates": num_updates, "changed": diffs, "from": old, "to": new}]

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
            src_dict=self.src_dict,
            tgt_dict=self.tgt_dict,
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
