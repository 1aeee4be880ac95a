"""``translation_kd``: fairseq's ``translation`` task holding a frozen teacher.

The teacher (one checkpoint or an ensemble, ``--teacher-path a.pt:b.pt``) is
loaded when the student model is built, before any training step, and is
checked against the student's dictionaries then. It lives on the task, not on
the model or the criterion, so DDP never wraps it, the optimizer never sees it
and checkpoints never contain it; a resumed run simply loads it again from
``--teacher-path``.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

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


@register_task("translation_kd", dataclass=TranslationKDConfig)
class TranslationKDTask(TranslationTask):
    """Translation with a frozen teacher for word-level (and sequence-level) KD."""

    cfg: TranslationKDConfig

    def __init__(self, cfg: TranslationKDConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self._teacher: Optional[Teacher] = None

    @classmethod
    def setup_task(cls, cfg: TranslationKDConfig, **kwargs):
        for path in split_paths(cfg.teacher_path):
            if not os.path.isfile(path):
                raise TeacherError(f"--teacher-path: checkpoint not found: {path}")
        return super().setup_task(cfg, **kwargs)

    @property
    def has_teacher(self) -> bool:
        return bool(self.cfg.teacher_path)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        # Models built from a checkpoint are the teacher itself or a model being
        # loaded for generation: neither needs a teacher.
        if not from_checkpoint and self.has_teacher and self._teacher is None:
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

    def teacher_outputs(self, sample, student, topk: int = 0, ignore_prefix_size: int = 0) -> TeacherOutput:
        """The teacher's scores for ``sample``, on the student's device and dtype."""
        teacher = self.teacher
        teacher.to_match(student)
        return teacher.score(
            sample["net_input"],
            sample["target"],
            self.target_dictionary.pad(),
            topk=topk,
            ignore_prefix_size=ignore_prefix_size,
        )
