"""Shared, disk-cached set-up for test_seqkd.py and test_teacher_cache.py.

A small Multi30k subset (300 training pairs; words seen once map to <unk>), a
tiny teacher trained for a few updates, a distilled training split and a top-k
cache. Built once per test session under pytest's base temp folder: the second
module to ask finds it there (a marker file is written when it is complete).
"""

import json
import os
from pathlib import Path

import pytest

from conftest import PLUGIN, preprocess, run_cli, train_args, train_inner, write_corpus  # noqa: F401 (re-exported)

N_TRAIN, N_VALID, N_TEST = 300, 40, 20
BEAM = 3
CACHE_K = 8
GEN = ["--beam", str(BEAM), "--max-len-a", "1.2", "--max-len-b", "5"]


class Env:
    def __init__(self, root: Path):
        self.root = root
        self.text = root / "text"
        self.bin = root / "bin"
        self.teacher = root / "teacher" / "checkpoint_last.pt"
        self.distilled = root / "distilled"
        self.cache = root / "cache"

    def dict_symbols(self, lang):
        from fairseq.data import Dictionary

        return Dictionary.load(str(self.bin / f"dict.{lang}.txt"))


def build(root: Path) -> Env:
    env = Env(root)
    marker = root / "READY"
    if marker.exists():
        return env
    root.mkdir(parents=True, exist_ok=True)
    write_corpus(env.text, n_train=N_TRAIN, n_valid=N_VALID, n_test=N_TEST)
    preprocess(env.text, env.bin)
    run_cli(train_args(env.bin, env.teacher.parent, 80, "--criterion", "label_smoothed_cross_entropy",
                       "--label-smoothing", "0.1", "--disable-validation", "--max-tokens", "1000",
                       "--lr", "0.005", "--save-interval", "1000", "--log-interval", "20"))
    # one distilled training split (teacher's best beam), used by several tests
    run_cli(["lskd-distill-data", env.bin, "--out", env.distilled, "--teacher-path", env.teacher,
             "--source-text", env.text / "train.en", "--target-text", env.text / "train.de",
             *GEN, "--cpu", "--no-progress-bar"])
    # a top-k cache over the gold train and valid splits
    for split in ("train", "valid"):
        run_cli(["lskd-teacher-cache", env.bin, "--split", split, "--out", env.cache, "--teacher-path",
                 env.teacher, "--k", CACHE_K, "--cpu", "--no-progress-bar"])
    marker.write_text("ok")
    return env


@pytest.fixture(scope="session")
def seqkd_env(tmp_path_factory):
    # LSKD_TEST_SEQKD_DIR keeps the set-up between sessions (for development only)
    keep = os.environ.get("LSKD_TEST_SEQKD_DIR")
    return build(Path(keep) if keep else tmp_path_factory.getbasetemp() / "seqkd_shared")



KD_TASK = ["--user-dir", PLUGIN, "--task", "translation_kd"]


def read_manifest(out, split="train"):
    with open(os.path.join(out, f"{split}.distill.json"), encoding="utf-8") as f:
        return json.load(f)
