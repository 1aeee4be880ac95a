"""A distilled student deploys without its teacher.

A student's checkpoint records ``task: translation_kd`` and its ``--teacher-path``.
The teacher is needed to train only: with the teacher file deleted the student
must load and translate through the four ways fairseq serves a model.
"""

import shutil
import subprocess
import sys

import pytest
import torch

from conftest import PLUGIN, cli_env, run_cli, train_args
from fork_cli import fork_cli  # noqa: F401  (fixture)
from lskd_fairseq.fairseq_compat import allow_fairseq_checkpoint_globals

allow_fairseq_checkpoint_globals()  # fairseq checkpoints pickle an argparse.Namespace

SENTENCE = "a man is riding a bike ."


@pytest.fixture(scope="module")
def student(nmt_data, nmt_teacher, fork_cli, tmp_path_factory):  # noqa: F811
    """A KD student trained for 2 updates; its teacher is deleted afterwards."""
    root = tmp_path_factory.mktemp("deploy")
    teacher = root / "teacher" / "teacher.pt"
    teacher.parent.mkdir()
    shutil.copy(nmt_teacher, teacher)
    save = root / "student"
    fork_cli.run(train_args(nmt_data, save, 2, "--user-dir", PLUGIN, "--task", "translation_kd",
                            "--criterion", "label_smoothed_kd", "--teacher-path", teacher, "--kd-alpha", "0.5",
                            "--disable-validation"))
    shutil.rmtree(teacher.parent)
    state = torch.load(save / "checkpoint_last.pt", weights_only=True)
    # the premise: the checkpoint names a teacher that no longer exists
    assert state["cfg"]["task"]["_name"] == "translation_kd"
    assert state["cfg"]["task"]["teacher_path"] == str(teacher) and not teacher.exists()
    return save, teacher


def test_from_pretrained_without_the_teacher(student, nmt_data):
    # in a fresh interpreter, as a user's script makes the call (in this one lskd_fairseq is
    # already imported, and fairseq then treats user_dir as loaded and skips it)
    save, _ = student
    code = (
        "import sys\n"
        "from fairseq.models.transformer import TransformerModel\n"
        f"hub = TransformerModel.from_pretrained({str(save)!r}, checkpoint_file='checkpoint_last.pt', "
        f"data_name_or_path={str(nmt_data)!r}, user_dir={str(PLUGIN)!r})\n"
        "assert type(hub.task).__name__ == 'TranslationKDTask' and hub.task._teacher is None\n"
        f"print('OUT', hub.translate({SENTENCE!r}, beam=2))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = [line for line in proc.stdout.splitlines() if line.startswith("OUT ")]
    assert len(out) == 1 and out[0][4:].strip()


def test_load_model_ensemble_and_task_without_the_teacher(student, nmt_data):
    import lskd_fairseq.tasks  # noqa: F401  (as --user-dir would)
    from fairseq import checkpoint_utils
    from fairseq.dataclass.configs import GenerationConfig

    save, _ = student
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(save / "checkpoint_last.pt")], arg_overrides={"data": str(nmt_data)})
    assert type(task).__name__ == "TranslationKDTask" and task._teacher is None
    task.load_dataset("test")
    ds = task.dataset("test")
    sample = ds.collater([ds[i] for i in range(4)])
    generator = task.build_generator(models, GenerationConfig(beam=2, max_len_b=10))
    hypos = task.inference_step(generator, models, sample)
    assert len(hypos) == 4 and all(len(h[0]["tokens"]) > 0 for h in hypos)


def test_fairseq_generate_without_the_teacher(student, nmt_data):
    # with the options of the training command (task and teacher), as a user may copy them
    save, teacher = student
    proc = run_cli(["fairseq-generate", nmt_data, "--path", save / "checkpoint_last.pt", "--user-dir", PLUGIN,
                    "--task", "translation_kd", "--teacher-path", teacher, "--beam", "2", "--max-tokens", "2000",
                    "--cpu", "--max-len-b", "10", "--gen-subset", "valid"])
    hyps = [line for line in proc.stdout.splitlines() if line.startswith("H-")]
    assert len(hyps) > 90  # of 100 (a few over the max length are skipped)


def test_fairseq_interactive_without_the_teacher(student, nmt_data):
    save, _ = student
    proc = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.interactive", str(nmt_data), "--path", str(save / "checkpoint_last.pt"),
         "--user-dir", str(PLUGIN), "--cpu", "--beam", "2", "--source-lang", "en", "--target-lang", "de"],
        input=SENTENCE + "\n", capture_output=True, text=True, env=cli_env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any(line.startswith("H-0") for line in proc.stdout.splitlines())
