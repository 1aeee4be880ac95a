"""fairseq's --bf16 under the plugin on CPU (fairseq 0.12 makes --bf16 imply --tpu;
``lskd_fairseq.fairseq_compat`` undoes that off TPUs), bf16 teachers, and --bf16 in
lskd-teacher-cache / lskd-distill-data.

One update under --bf16 is compared with float32 (same seed, no dropout): the
losses fairseq logs for it agree within RTOL (bf16 keeps 8 bits of mantissa; the
criteria compute their losses in float32).
"""

import json
import math

import numpy as np
import pytest
import torch

from conftest import PLUGIN, run_cli, train_args, train_inner
from lskd_fairseq.fairseq_compat import allow_fairseq_checkpoint_globals
from seqkd_common import CACHE_K, seqkd_env  # noqa: F401 (fixture)

allow_fairseq_checkpoint_globals()  # fairseq checkpoints pickle an argparse.Namespace

RTOL = 2e-2
KD_TASK = ["--user-dir", PLUGIN, "--task", "translation_kd"]


def _parse(*extra):
    import lskd_fairseq.tasks  # noqa: F401  (applies fairseq_compat)
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["data", "--user-dir", str(PLUGIN), "--task", "translation",
                                                "--arch", "transformer", "--cpu", *extra])
    return args, convert_namespace_to_omegaconf(args)


def test_bf16_no_longer_implies_tpu_but_tpu_is_kept():
    for flag in ("--bf16", "--memory-efficient-bf16"):
        args, cfg = _parse(flag)
        assert cfg.common.bf16 and not cfg.common.tpu and not args.tpu, flag
    _, cfg = _parse("--bf16", "--tpu")
    assert cfg.common.bf16 and cfg.common.tpu
    _, cfg = _parse()
    assert not cfg.common.bf16 and not cfg.common.tpu


def test_bf16_keeps_tpu_where_torch_xla_is_installed(monkeypatch):
    import argparse

    from lskd_fairseq import fairseq_compat

    monkeypatch.setattr(fairseq_compat, "_xla_installed", lambda: True)
    args = argparse.Namespace(bf16=True, tpu=True)
    fairseq_compat.undo_bf16_implied_tpu(args, ["--bf16"])
    assert args.tpu


def _first_updates(tmp_path, name, data, *extra):
    """Train 2 updates in float32 and in bf16: the first update's records of each."""
    recs = {}
    for prec, flags in (("fp32", []), ("bf16", ["--bf16"])):
        save = tmp_path / f"{name}_{prec}"
        proc = run_cli(train_args(data, save, 2, *extra, *flags, "--dropout", "0", "--disable-validation"))
        recs[prec] = train_inner(proc)[0]
        state = torch.load(save / "checkpoint_last.pt", weights_only=True)
        # fairseq saves float32 weights (utils.move_to_cpu); its bf16 run has float32 master
        # weights in FP16Optimizer and no TPU
        assert state["cfg"]["common"]["bf16"] == (prec == "bf16") and not state["cfg"]["common"]["tpu"]
        opt = state["optimizer_history"][-1]["optimizer_name"]
        assert opt == ("FP16Optimizer" if prec == "bf16" else "FairseqAdam"), (prec, opt)
    return recs["fp32"], recs["bf16"]


def _close(a, b, keys):
    for key in keys:
        x, y = float(a[key]), float(b[key])
        assert math.isclose(x, y, rel_tol=RTOL), (key, x, y)


def test_teacher_translation_task_with_plugin(seqkd_env, tmp_path):
    a, b = _first_updates(tmp_path, "teacher", seqkd_env.bin, "--user-dir", PLUGIN,
                          "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1")
    _close(a, b, ("loss", "nll_loss"))


def test_kd_student_online_teacher(seqkd_env, tmp_path):
    a, b = _first_updates(tmp_path, "kd", seqkd_env.bin, *KD_TASK, "--teacher-path", seqkd_env.teacher,
                          "--criterion", "label_smoothed_kd", "--kd-alpha", "0.5", "--label-smoothing", "0.1")
    _close(a, b, ("loss", "nll_loss", "kd_loss", "teacher_nll_loss"))


def test_kd_student_teacher_cache(seqkd_env, tmp_path):
    a, b = _first_updates(tmp_path, "cache", seqkd_env.bin, *KD_TASK, "--teacher-cache", seqkd_env.cache,
                          "--criterion", "label_smoothed_kd", "--kd-alpha", "0.5", "--kd-topk", "4",
                          "--label-smoothing", "0.1")
    _close(a, b, ("loss", "nll_loss", "kd_loss"))


def test_sequence_distillation_student(seqkd_env, tmp_path):
    a, b = _first_updates(tmp_path, "seq", seqkd_env.bin, *KD_TASK, "--distilled-data", seqkd_env.distilled,
                          "--teacher-path", seqkd_env.teacher, "--criterion", "sequence_distillation",
                          "--seq-kd-beta", "0.5", "--kd-alpha", "0.5", "--kd-topk", "4", "--label-smoothing", "0.1")
    _close(a, b, ("loss", "nll_loss"))


def test_teacher_follows_a_bf16_student_and_scores_in_float32(seqkd_env):
    from lskd_fairseq import artifacts
    from lskd_fairseq.teacher import Teacher

    task = artifacts.setup_translation_task(str(seqkd_env.bin), None, None)
    task.load_dataset("valid")
    ds = task.dataset("valid")
    sample = ds.collater([ds[i] for i in range(8)])
    pad = task.tgt_dict.pad()
    ref = Teacher.load(str(seqkd_env.teacher), task).score(sample["net_input"], sample["target"], pad)
    teacher = Teacher.load(str(seqkd_env.teacher), task)
    teacher.to_match(torch.nn.Linear(2, 2).to(torch.bfloat16))  # a bf16 student
    assert {p.dtype for m in teacher.models for p in m.parameters()} == {torch.bfloat16}
    out = teacher.score(sample["net_input"], sample["target"], pad)
    assert out.nll_sum.dtype == torch.float32
    assert math.isclose(out.nll_sum.item(), ref.nll_sum.item(), rel_tol=RTOL)


def test_teacher_cache_tool_bf16(seqkd_env, tmp_path):
    out = tmp_path / "cache_bf16"
    run_cli(["lskd-teacher-cache", seqkd_env.bin, "--split", "valid", "--out", out, "--teacher-path",
             seqkd_env.teacher, "--k", CACHE_K, "--cpu", "--bf16", "--no-progress-bar"])
    from lskd_fairseq import artifacts

    header = json.loads(open(artifacts.cache_paths(out, "valid")["header"]).read())
    ref = json.loads(open(artifacts.cache_paths(seqkd_env.cache, "valid")["header"]).read())
    assert header["bf16_teacher"] and header["n_tokens"] == ref["n_tokens"]
    vals = np.fromfile(artifacts.cache_paths(out, "valid")["logits"], dtype=np.float16).reshape(-1, CACHE_K)
    rvals = np.fromfile(artifacts.cache_paths(seqkd_env.cache, "valid")["logits"],
                        dtype=np.float16).reshape(-1, CACHE_K)
    ids = np.fromfile(artifacts.cache_paths(out, "valid")["ids"], dtype=header["id_dtype"]).reshape(-1, CACHE_K)
    rids = np.fromfile(artifacts.cache_paths(seqkd_env.cache, "valid")["ids"],
                       dtype=ref["id_dtype"]).reshape(-1, CACHE_K)
    # float16 values as before, bf16-close to the float32 teacher's; the same top-1 nearly everywhere
    scale = np.abs(rvals[:, 0].astype(np.float32)).mean()
    assert np.abs(vals[:, 0].astype(np.float32) - rvals[:, 0]).mean() < 2 * RTOL * scale
    assert not np.array_equal(vals, rvals)  # the teacher did run in bf16
    assert (ids[:, 0] == rids[:, 0]).mean() > 0.95


def test_distill_data_tool_bf16(seqkd_env, tmp_path):
    out = tmp_path / "distill_bf16"
    env = seqkd_env
    run_cli(["lskd-distill-data", env.bin, "--out", out, "--split", "valid", "--teacher-path", env.teacher,
             "--source-text", env.text / "valid.en", "--target-text", env.text / "valid.de",
             "--beam", "1", "--max-len-a", "1.2", "--max-len-b", "5", "--cpu", "--bf16", "--no-progress-bar"])
    manifest = json.loads((out / "valid.distill.json").read_text())
    assert manifest["complete"] and manifest["fingerprint"]["generation"]["bf16"] is True


def test_tools_refuse_fp16_with_bf16(seqkd_env, tmp_path):
    proc = run_cli(["lskd-teacher-cache", seqkd_env.bin, "--out", tmp_path / "c", "--teacher-path",
                    seqkd_env.teacher, "--cpu", "--fp16", "--bf16"], check=False)
    assert proc.returncode == 2 and "error:" in proc.stderr


@pytest.mark.parametrize("topk", [0, 4])
def test_kd_loss_of_bf16_logits_is_computed_in_float32(topk):
    """Under --bf16 the criteria get bf16 logits (student and teacher); the loss and its
    parts come out in float32, equal to the float32 loss of the same (bf16-rounded) logits."""
    from lskd_fairseq.losses import ls_kd_loss

    g = torch.Generator().manual_seed(0)
    s = (3 * torch.randn(6, 50, 300, generator=g)).to(torch.bfloat16)
    t = (3 * torch.randn(6, 50, 300, generator=g)).to(torch.bfloat16)
    target = torch.randint(4, 300, (6, 50), generator=g)
    kw = dict(epsilon=0.1, alpha=0.5, temperature=2.0, topk=topk, ignore_index=1)
    loss, parts = ls_kd_loss(None, target, student_logits=s.requires_grad_(), teacher=t, **kw)
    ref, rparts = ls_kd_loss(None, target, student_logits=s.detach().float(), teacher=t.float(), **kw)
    assert loss.dtype == torch.float32 and all(v.dtype == torch.float32 for v in parts.values())
    for a, b in [(loss, ref)] + [(parts[k], rparts[k]) for k in parts]:
        assert math.isclose(a.item(), b.item(), rel_tol=1e-5), (a, b)
    loss.backward()
    assert s.grad.dtype == torch.bfloat16 and torch.isfinite(s.grad.float()).all()
