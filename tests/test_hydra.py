"""fairseq-hydra-train with the shipped YAML config (examples/hydra/kd_student.yaml): the
translation_kd task with label_smoothed_kd, and the same file switched to
sequence_distillation, each trained for two updates on a tiny corpus."""

from pathlib import Path

import pytest
import torch

from conftest import PLUGIN, REPO, preprocess, run_cli, train_args, write_corpus
from lskd_fairseq.fairseq_compat import allow_fairseq_checkpoint_globals

allow_fairseq_checkpoint_globals()
CONFIG_DIR = REPO / "examples" / "hydra"

# the example's student is 2+2 layers d=64; a smaller one keeps the test fast
SMALL = ["model.encoder_layers=1", "model.decoder_layers=1", "model.encoder_embed_dim=32",
         "model.decoder_embed_dim=32", "model.encoder_ffn_embed_dim=64", "model.decoder_ffn_embed_dim=64",
         "model.encoder_attention_heads=2", "model.decoder_attention_heads=2"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 200-pair corpus, its data-bin, a teacher (3 updates) and its distilled training set."""
    root = tmp_path_factory.mktemp("hydra")
    text = write_corpus(root / "text", n_train=200, n_valid=30, n_test=30)
    data = preprocess(text, root / "bin")
    run_cli(train_args(data, root / "teacher", 3, "--criterion", "label_smoothed_cross_entropy",
                       "--label-smoothing", "0.1", "--disable-validation"))
    teacher = root / "teacher" / "checkpoint_last.pt"
    run_cli(["lskd-distill-data", data, "--out", root / "distill", "--split", "train", "--teacher-path", teacher,
             "--source-text", text / "train.en", "--beam", "1", "--max-tokens", "4000", "--cpu",
             "--max-len-a", "1.2", "--max-len-b", "10", "--no-progress-bar"])
    return root, data, teacher


def _hydra(cwd: Path, *overrides):
    return run_cli(["fairseq-hydra-train", "--config-dir", CONFIG_DIR, "--config-name", "kd_student",
                    f"common.user_dir={PLUGIN}", "optimization.max_update=2", "common.log_interval=1",
                    "hydra.run.dir=hydra_run", *SMALL, *overrides], cwd=cwd)


def test_word_kd_student_from_the_yaml_config(tiny, tmp_path):
    root, data, teacher = tiny
    # relative paths: the config keeps the working directory (hydra.job.chdir: false)
    (tmp_path / "data-bin").symlink_to(data)
    proc = _hydra(tmp_path, "task.data=data-bin", f"task.teacher_path={teacher}", "checkpoint.save_dir=student")
    log = proc.stdout + proc.stderr
    assert "num_updates=2" in log.replace(" ", "") or "num_updates 2" in log
    assert "kd_loss" in log and "teacher_agree" in log  # the KD criterion ran, with the teacher
    ckpt = tmp_path / "student" / "checkpoint_last.pt"
    assert ckpt.is_file(), log[-3000:]
    state = torch.load(ckpt, weights_only=True)
    cfg = state["cfg"]
    assert cfg["task"]["_name"] == "translation_kd" and cfg["task"]["teacher_path"] == str(teacher)
    assert cfg["criterion"]["_name"] == "label_smoothed_kd"
    assert (cfg["criterion"]["kd_alpha"], cfg["criterion"]["kd_topk"], cfg["criterion"]["label_smoothing"]) == (0.5, 4, 0.1)
    assert cfg["criterion"]["kd_temperature"] == 1.0
    assert cfg["criterion"]["ls_convention"] == "fairseq"  # a default the YAML leaves out, from the dataclass
    assert state["optimizer_history"][-1]["num_updates"] == 2
    assert (tmp_path / "hydra_run").is_dir()  # hydra's own files, beside the run, not in the checkpoint folder


def test_sequence_kd_student_from_the_same_config(tiny, tmp_path):
    root, data, _ = tiny
    proc = _hydra(tmp_path, f"task.data={data}", "task.teacher_path=", f"+task.distilled_data={root / 'distill'}",
                  "criterion._name=sequence_distillation", "criterion.kd_alpha=0", "checkpoint.save_dir=seq")
    log = proc.stdout + proc.stderr
    assert "seq_nll_loss" in log
    state = torch.load(tmp_path / "seq" / "checkpoint_last.pt", weights_only=True)
    assert state["cfg"]["criterion"]["_name"] == "sequence_distillation"
    assert state["cfg"]["criterion"]["seq_kd_beta"] == 1.0
    assert state["cfg"]["task"]["distilled_data"] == str(root / "distill")
    assert state["optimizer_history"][-1]["num_updates"] == 2


def test_a_bad_kd_option_in_the_config_is_refused(tiny, tmp_path):
    _, data, teacher = tiny
    proc = run_cli(["fairseq-hydra-train", "--config-dir", CONFIG_DIR, "--config-name", "kd_student",
                    f"common.user_dir={PLUGIN}", f"task.data={data}", f"task.teacher_path={teacher}",
                    "criterion.kd_alpha=1.5", "checkpoint.save_dir=bad", "hydra.run.dir=hydra_run", *SMALL],
                   cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "alpha" in (proc.stdout + proc.stderr).lower()
    assert not (tmp_path / "bad" / "checkpoint_last.pt").exists()


def test_example_config_names_the_plugin_task_and_criteria():
    text = (CONFIG_DIR / "kd_student.yaml").read_text(encoding="utf-8")
    assert "_name: translation_kd" in text and "_name: label_smoothed_kd" in text
    assert "criterion._name=sequence_distillation" in text
