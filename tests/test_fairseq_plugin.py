"""The fairseq plugin: task translation_kd, criterion label_smoothed_kd, checkpoint
loading under torch >= 2.6, resume, refusals and distributed training on CPU."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import PLUGIN, TINY_ARCH, cli_env, preprocess, run_cli, train_args, train_inner, write_corpus
from lskd_fairseq.fairseq_compat import allow_fairseq_checkpoint_globals

allow_fairseq_checkpoint_globals()  # fairseq checkpoints pickle an argparse.Namespace

KD = ["--user-dir", PLUGIN, "--task", "translation_kd", "--criterion", "label_smoothed_kd"]



# ---------------------------------------------------------------- registration


def test_user_dir_registers_task_and_criterion():
    code = (
        "import argparse, sys\n"
        "from fairseq import utils\n"
        f"utils.import_user_module(argparse.Namespace(user_dir={str(PLUGIN)!r}))\n"
        "from fairseq.tasks import TASK_REGISTRY\n"
        "from fairseq.criterions import CRITERION_REGISTRY\n"
        "assert 'translation_kd' in TASK_REGISTRY, TASK_REGISTRY.keys()\n"
        "assert 'label_smoothed_kd' in CRITERION_REGISTRY\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=cli_env(), cwd="/")


def test_every_option_has_help_text():
    # fairseq-train --help prints only the generic options, so check the dataclasses directly
    import dataclasses

    import lskd_fairseq.tasks  # noqa: F401
    from lskd_fairseq.criterions.label_smoothed_kd import LabelSmoothedKDConfig
    from lskd_fairseq.tasks.translation_kd import TranslationKDConfig

    for cls, names in ((LabelSmoothedKDConfig, ("label_smoothing", "ls_convention", "kd_alpha", "kd_temperature", "kd_topk", "report_accuracy", "ignore_prefix_size")),
                       (TranslationKDConfig, ("teacher_path",))):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in names:
            assert fields[name].metadata.get("help"), name


# ---------------------------------------------------------------- alpha = 0 is fairseq's LS criterion


def test_alpha_zero_trains_exactly_like_label_smoothed_cross_entropy(nmt_data, nmt_teacher, tmp_path):
    common = ["--label-smoothing", "0.1", "--report-accuracy"]
    ref = run_cli(train_args(nmt_data, tmp_path / "ref", 12, "--criterion", "label_smoothed_cross_entropy", *common))
    kd = run_cli(train_args(nmt_data, tmp_path / "kd", 12, *KD, "--teacher-path", nmt_teacher, "--kd-alpha", "0", *common))
    a, b = train_inner(ref), train_inner(kd)
    assert len(a) == len(b) == 12
    for ra, rb in zip(a, b):
        for key in ("loss", "nll_loss", "ppl", "accuracy", "gnorm"):
            assert ra[key] == rb[key], (key, ra, rb)
    wa = torch.load(tmp_path / "ref" / "checkpoint_last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "kd" / "checkpoint_last.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ---------------------------------------------------------------- KD training, teacher isolation, metrics


def test_kd_student_logs_kd_metrics_and_holds_no_teacher(nmt_data, nmt_teacher, tmp_path):
    proc = run_cli(
        train_args(nmt_data, tmp_path / "s", 6, *KD, "--teacher-path", nmt_teacher, "--kd-alpha", "0.7",
                   "--kd-temperature", "2", "--kd-topk", "4", "--label-smoothing", "0.1")
    )
    recs = train_inner(proc)
    assert len(recs) == 6
    for r in recs:
        for key in ("loss", "nll_loss", "kd_loss", "teacher_nll_loss", "teacher_agree"):
            assert key in r and math.isfinite(float(r[key]))
        assert 0.0 <= float(r["teacher_agree"]) <= 100.0
    state = torch.load(tmp_path / "s" / "checkpoint_last.pt", weights_only=True)
    teacher_state = torch.load(nmt_teacher, weights_only=True)
    assert state["model"].keys() == teacher_state["model"].keys()  # same architecture, one copy only
    # parameters only: fairseq also stores one-element "version" buffers
    n_student = sum(v.numel() for k, v in state["model"].items() if not k.endswith("version"))
    n_opt = sum(
        v.numel() for s in state["last_optimizer_state"]["state"].values() for k, v in s.items() if k == "exp_avg"
    )
    assert n_opt == n_student  # the optimizer saw the student's parameters only
    assert "teacher" not in json.dumps(list(state["model"].keys()))


def _build_in_process(data, teacher, **crit):
    import lskd_fairseq.tasks  # noqa: F401  (registers the plugin)
    from fairseq import options, tasks

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser,
        [str(data), "--task", "translation_kd", "--teacher-path", str(teacher), "--criterion", "label_smoothed_kd", "--cpu", *TINY_ARCH]
        + [f"--{k.replace('_', '-')}={v}" for k, v in crit.items()],
    )
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("valid")
    itr = task.get_batch_iterator(task.dataset("valid"), max_tokens=600).next_epoch_itr(shuffle=False)
    return task, model, criterion, next(iter(itr))


def test_teacher_is_frozen_outside_model_and_criterion(nmt_data, nmt_teacher):
    task, model, criterion, sample = _build_in_process(nmt_data, nmt_teacher, kd_alpha=0.5)
    teacher_params = {id(p) for m in task.teacher.models for p in m.parameters()}
    assert teacher_params
    assert not teacher_params & {id(p) for p in model.parameters()}
    assert not teacher_params & {id(p) for p in criterion.parameters()}
    assert all(not p.requires_grad for m in task.teacher.models for p in m.parameters())
    assert all(not m.training for tm in task.teacher.models for m in tm.modules())
    model.train()
    loss, _, log = criterion(model, sample)
    loss.backward()
    assert all(p.grad is None for m in task.teacher.models for p in m.parameters())


def test_loss_math_in_float32_and_teacher_follows_student_dtype(nmt_data, nmt_teacher):
    task, model, criterion, sample = _build_in_process(nmt_data, nmt_teacher, kd_alpha=0.5, kd_topk=8)
    model = model.bfloat16()
    loss, _, log = criterion(model, sample)
    assert loss.dtype == torch.float32
    assert next(task.teacher.models[0].parameters()).dtype == torch.bfloat16
    assert math.isfinite(float(log["kd_loss"]))


def test_teacher_topk_scores_match_full_scores(nmt_data, nmt_teacher):
    task, model, criterion, sample = _build_in_process(nmt_data, nmt_teacher, kd_alpha=0.5)
    pad = task.target_dictionary.pad()
    full = task.teacher.score(sample["net_input"], sample["target"], pad)
    top = task.teacher.score(sample["net_input"], sample["target"], pad, topk=5)
    vals, idx = full.dist.topk(5, dim=-1)
    assert torch.allclose(top.dist[1], vals, atol=1e-5)
    assert torch.allclose(full.nll_sum, top.nll_sum)
    assert torch.equal(full.top1, top.top1)
    # the teacher's NLL is the gold tokens' negative log-probability, padding excluded
    lp = torch.log_softmax(full.dist.float(), -1).gather(-1, sample["target"].unsqueeze(-1)).squeeze(-1)
    assert full.nll_sum.item() == pytest.approx(-lp[sample["target"].ne(pad)].sum().item(), rel=1e-5)


def test_ensemble_averages_probabilities(nmt_data, nmt_teacher, tmp_path):
    second = tmp_path / "t2"
    run_cli(train_args(nmt_data, second, 10, "--criterion", "label_smoothed_cross_entropy", seed=7))
    from lskd_fairseq.teacher import Teacher

    task, _, _, sample = _build_in_process(nmt_data, nmt_teacher, kd_alpha=0.5)
    pad = task.target_dictionary.pad()
    both = Teacher.load(f"{nmt_teacher}:{second / 'checkpoint_last.pt'}", task)
    one = [Teacher.load(p, task) for p in (str(nmt_teacher), str(second / "checkpoint_last.pt"))]
    p_avg = sum(torch.softmax(t.score(sample["net_input"], sample["target"], pad).dist.float(), -1) for t in one) / 2
    got = torch.softmax(both.score(sample["net_input"], sample["target"], pad).dist, -1)
    assert torch.allclose(got, p_avg, atol=1e-5)


# ---------------------------------------------------------------- refusals, before any training step


def _train_fails(args, match):
    proc = run_cli(args, check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert match in text, text[-3000:]
    assert "train_inner" not in text  # nothing trained
    return text


def test_missing_teacher_is_refused(nmt_data, tmp_path):
    _train_fails(train_args(nmt_data, tmp_path / "s", 2, *KD, "--teacher-path", tmp_path / "nope.pt"), "checkpoint not found")


def test_unreadable_teacher_is_refused(nmt_data, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    _train_fails(train_args(nmt_data, tmp_path / "s", 2, *KD, "--teacher-path", bad), "could not be read")


def test_teacher_with_other_dictionary_is_refused(nmt_data, nmt_teacher, tmp_path):
    other_text = write_corpus(tmp_path / "text", n_train=300)
    other = preprocess(other_text, tmp_path / "bin")
    text = _train_fails(train_args(other, tmp_path / "s", 2, *KD, "--teacher-path", nmt_teacher), "dictionary")
    assert "first difference" in text or "symbols" in text


@pytest.mark.parametrize(
    "opt, value, match",
    [("--kd-alpha", "1.5", "--kd-alpha must be in [0, 1]"), ("--kd-temperature", "0", "--kd-temperature must be > 0"),
     ("--kd-topk", "-2", "--kd-topk must be >= 0")],
)
def test_invalid_options_are_refused(nmt_data, nmt_teacher, tmp_path, opt, value, match):
    _train_fails(train_args(nmt_data, tmp_path / "s", 2, *KD, "--teacher-path", nmt_teacher, opt, value), match)


def test_kd_without_teacher_is_refused(nmt_data, tmp_path):
    _train_fails(train_args(nmt_data, tmp_path / "s", 2, *KD, "--kd-alpha", "0.5"), "needs a teacher")


# ---------------------------------------------------------------- checkpoints under torch >= 2.6, resume


def test_plain_fairseq_cannot_load_its_checkpoint_but_the_plugin_can(nmt_data, nmt_teacher, tmp_path):
    gen = ["fairseq-generate", nmt_data, "--path", nmt_teacher, "--beam", "2", "--max-tokens", "2000", "--cpu", "--max-len-b", "20"]
    plain = run_cli(gen, check=False)
    if plain.returncode == 0:
        pytest.skip("this torch/fairseq pair loads fairseq checkpoints without help")
    assert "weights_only" in plain.stderr or "Unpickling" in plain.stderr
    ok = run_cli(gen + ["--user-dir", PLUGIN])
    assert "Generate test with beam=2" in ok.stdout + ok.stderr


def test_fairseq_interactive_translates_with_the_plugin(nmt_data, nmt_teacher):
    """Serving a checkpoint (fairseq-interactive) works with the plugin, whatever torch's default."""
    inter = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.interactive", str(nmt_data), "--path", str(nmt_teacher), "--user-dir", str(PLUGIN),
         "--cpu", "--beam", "2", "--source-lang", "en", "--target-lang", "de"],
        input="a man is riding a bike .\n", capture_output=True, text=True, env=cli_env(), timeout=300,
    )
    assert inter.returncode == 0, inter.stderr[-2000:]
    assert any(line.startswith("H-0") for line in inter.stdout.splitlines())


def test_weights_only_stays_on_for_everything_else(tmp_path):
    import lskd_fairseq.tasks  # noqa: F401  (applies the allowlist)

    from fractions import Fraction  # an arbitrary class nobody allowlisted

    path = tmp_path / "x.pt"
    torch.save({"obj": Fraction(1, 3)}, path)
    with pytest.raises(Exception, match="weights_only|Unpickl"):
        torch.load(path)


def test_resume_continues_with_the_same_losses(nmt_data, nmt_teacher, tmp_path):
    kd = [*KD, "--teacher-path", nmt_teacher, "--kd-alpha", "0.5", "--kd-topk", "8", "--label-smoothing", "0.1"]
    full = train_inner(run_cli(train_args(nmt_data, tmp_path / "full", 30, *kd)))
    run_cli(train_args(nmt_data, tmp_path / "cut", 17, *kd))
    resumed = train_inner(run_cli(train_args(nmt_data, tmp_path / "cut", 30, *kd)))
    assert len(full) == 30
    assert [r["num_updates"] for r in resumed] == [str(n) for n in range(18, 31)] or [
        int(r["num_updates"]) for r in resumed
    ] == list(range(18, 31))
    for a, b in zip(full[17:], resumed):
        for key in ("loss", "nll_loss", "kd_loss", "teacher_nll_loss"):
            assert a[key] == b[key], (key, a, b)


# ---------------------------------------------------------------- distributed on CPU


def test_torchrun_two_cpu_workers_match_one_worker_with_update_freq_2(nmt_data, nmt_teacher, tmp_path):
    """2 gloo workers and 1 process accumulating 2 batches see the same batches;
    with dropout off their summed gradients, hence their updates, agree."""
    kd = [*KD, "--teacher-path", nmt_teacher, "--kd-alpha", "0.5", "--label-smoothing", "0.1", "--dropout", "0"]
    single = train_inner(run_cli(train_args(nmt_data, tmp_path / "one", 4, *kd, "--update-freq", "2")))
    port = 29500 + os.getpid() % 1000
    torchrun = [
        "torchrun", "--nproc_per_node", "2", "--master_port", str(port), str(shutil.which("fairseq-train", path=str(sys.executable.rsplit("/", 1)[0]))),
        *[str(a) for a in train_args(nmt_data, tmp_path / "two", 4, *kd)[1:]],
        "--distributed-backend", "gloo", "--distributed-world-size", "2",
    ]
    proc = run_cli(torchrun, timeout=900)
    text = proc.stdout + proc.stderr
    assert "distributed init (rank 1)" in text
    double = train_inner(proc)
    assert len(single) == len(double) == 4
    for a, b in zip(single, double):
        for key in ("loss", "nll_loss", "kd_loss"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=2e-3), (key, a, b)
