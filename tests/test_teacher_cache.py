"""Top-k teacher cache: lskd-teacher-cache, --teacher-cache, and its refusals."""

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import preprocess, run_cli, train_args
from seqkd_common import CACHE_K, KD_TASK, N_TRAIN, seqkd_env, train_inner  # noqa: F401
from test_seqkd import _perturbed_student, make_task

import lskd_fairseq.tasks  # noqa: F401,E402
from lskd_fairseq import artifacts  # noqa: E402
from lskd_fairseq.artifacts import ArtifactError  # noqa: E402
from lskd_fairseq.cli import teacher_cache as cache_cli  # noqa: E402
from lskd_fairseq.criterions.label_smoothed_kd import LabelSmoothedKDCriterion  # noqa: E402


def test_cache_layout_and_size(seqkd_env):
    env = seqkd_env
    h = json.loads((env.cache / "train.topk.json").read_text())
    assert h["complete"] and h["k"] == CACHE_K and h["id_dtype"] == "uint16" and h["logit_dtype"] == "float16"
    assert h["n_samples"] == N_TRAIN
    task = make_task(env)
    task.load_dataset("train")
    sizes = task.dataset("train").tgt_sizes
    assert h["n_tokens"] == int(sizes.sum())
    assert h["teacher"]["sha256"] == [artifacts.sha256_file(str(env.teacher))]
    assert h["tgt_dict_sha256"] == artifacts.dictionary_sha256(task.tgt_dict)
    # about 5 bytes x k per token is the target: 2 (uint16 id) + 2 (float16) per entry, plus offsets
    assert 4 * CACHE_K <= h["bytes_per_token"] <= 5 * CACHE_K
    ids = np.fromfile(env.cache / "train.topk.ids", dtype=np.uint16)
    assert ids.size == h["n_tokens"] * CACHE_K
    offsets = np.load(env.cache / "train.topk.offsets")
    assert np.array_equal(np.diff(offsets), sizes)


def _batch(task, split, ids):
    ds = task.dataset(split)
    return ds.collater([ds[i] for i in ids])


def test_cache_reproduces_the_online_teacher_topk_loss(seqkd_env):
    env = seqkd_env
    online = make_task(env, teacher_path=env.teacher)
    cached = make_task(env, teacher_cache=env.cache)
    for t in (online, cached):
        t.load_dataset("train")
    model = _perturbed_student(env, online)
    kw = dict(label_smoothing=0.1, kd_alpha=0.5, kd_temperature=2.0, kd_topk=4)
    c_on = LabelSmoothedKDCriterion(online, False, **kw)
    c_ca = LabelSmoothedKDCriterion(cached, False, **kw)
    ids = list(range(0, N_TRAIN, 7))
    s_on, s_ca = _batch(online, "train", ids), _batch(cached, "train", ids)
    assert "teacher_topk" in s_ca and "teacher_topk" not in s_on
    assert torch.equal(s_on["target"], s_ca["target"])
    # the cached indices are the online teacher's top-k, in order
    out = online.teacher_outputs(s_on, model, topk=CACHE_K)
    mask = s_on["target"].ne(online.target_dictionary.pad())
    idx_c, val_c = s_ca["teacher_topk"]
    assert (idx_c[mask] == out.dist[0][mask]).float().mean() > 0.999
    assert torch.allclose(val_c[mask].float(), out.dist[1][mask], rtol=1e-3, atol=1e-2)
    model.zero_grad()
    loss_on, _, log_on = c_on(model, s_on)
    loss_on.backward()
    g_on = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss_ca, _, log_ca = c_ca(model, s_ca)
    loss_ca.backward()
    g_ca = [p.grad.clone() for p in model.parameters()]
    # within float16 rounding of the teacher's logits
    assert torch.allclose(log_ca["kd_loss"], log_on["kd_loss"], rtol=2e-3)
    assert torch.allclose(loss_ca, loss_on, rtol=1e-3)
    assert torch.equal(log_ca["nll_loss"], log_on["nll_loss"])
    num = sum((a - b).pow(2).sum() for a, b in zip(g_on, g_ca)).sqrt()
    den = sum(a.pow(2).sum() for a in g_on).sqrt()
    assert num / den < 5e-3
    # and a cache of other logits would not pass this test
    bad = (idx_c, val_c.float() * 1.5)
    s_bad = dict(s_ca, teacher_topk=bad)
    _, _, log_bad = c_ca(model, s_bad)
    assert not torch.allclose(log_bad["kd_loss"], log_on["kd_loss"], rtol=2e-3)


@pytest.fixture(scope="module")
def other_bins(seqkd_env, tmp_path_factory):
    """Data-bins that a cache of seqkd_env.bin must not serve: other data with the same
    dictionaries, and the same data with other dictionaries."""
    env = seqkd_env
    root = tmp_path_factory.mktemp("otherbins")
    text = root / "text"
    text.mkdir()
    # other data: train = the original test + valid sentences, same dictionaries
    for lang in ("en", "de"):
        t = (env.text / f"test.{lang}").read_text() + (env.text / f"valid.{lang}").read_text()
        (text / f"train.{lang}").write_text(t)
        for split in ("valid", "test"):
            shutil.copy(env.text / f"{split}.{lang}", text / f"{split}.{lang}")
    other_data = preprocess(text, root / "other_data",
                            extra=["--srcdict", env.bin / "dict.en.txt", "--tgtdict", env.bin / "dict.de.txt"])
    other_dict = preprocess(env.text, root / "other_dict", extra=["--thresholdtgt", "1"])
    return other_data, other_dict


def test_refusals(seqkd_env, other_bins, tmp_path):
    env = seqkd_env
    other_data, other_dict = other_bins

    def refused(task, match, topk=4, split="train"):
        task.load_dataset(split)
        with pytest.raises(ArtifactError, match=match):
            LabelSmoothedKDCriterion(task, False, label_smoothing=0.1, kd_alpha=0.5, kd_topk=topk)

    # a smaller k than requested, and the full vocabulary
    refused(make_task(env, teacher_cache=env.cache), f"made with k={CACHE_K}, smaller than the requested --kd-topk 16",
            topk=16)
    refused(make_task(env, teacher_cache=env.cache), "--kd-topk 0 \\(full vocabulary\\) cannot be served", topk=0)
    # other data (same dictionaries), other dictionaries
    refused(make_task(env, teacher_cache=env.cache, data=other_data), "made for other data")
    refused(make_task(env, teacher_cache=env.cache, data=other_dict), "other dictionaries")
    # another teacher given with --teacher-path
    from lskd_fairseq.teacher import load_checkpoint_state

    state = load_checkpoint_state(str(env.teacher))
    k = next(iter(state["model"]))
    state["model"][k] = state["model"][k] + 0.01
    other_teacher = tmp_path / "other.pt"
    torch.save(state, other_teacher)
    refused(make_task(env, teacher_cache=env.cache, teacher_path=other_teacher), "made by another teacher")
    # an interrupted cache: no header, so nothing looks complete
    partial = tmp_path / "partial"
    shutil.copytree(env.cache, partial)
    (partial / "train.topk.json").unlink()
    refused(make_task(env, teacher_cache=partial), "no complete cache for split 'train'")
    # a split without a cache and no teacher to run online (valid, loaded before training)
    only_train = tmp_path / "only_train"
    shutil.copytree(env.cache, only_train)
    (only_train / "valid.topk.json").unlink()
    refused(make_task(env, teacher_cache=only_train), "no complete cache for split 'valid'", split="valid")
    # ... which falls back to the online teacher when --teacher-path is given
    t = make_task(env, teacher_cache=only_train, teacher_path=env.teacher)
    t.load_dataset("valid")
    LabelSmoothedKDCriterion(t, False, label_smoothing=0.1, kd_alpha=0.5, kd_topk=4)
    assert t.teacher_cache_for("valid") is None
    # lskd-teacher-cache over a data-bin whose dictionaries the teacher does not have
    rc = cache_cli.main([str(other_dict), "--out", str(tmp_path / "c"), "--teacher-path", str(env.teacher),
                         "--k", "4", "--cpu", "--no-progress-bar"])
    assert rc == 2 and not (tmp_path / "c" / "train.topk.json").exists()


def test_fairseq_train_refuses_a_small_cache_before_training(seqkd_env, tmp_path):
    env = seqkd_env
    save = tmp_path / "ck"
    proc = run_cli(train_args(env.bin, save, 2, *KD_TASK, "--teacher-cache", env.cache, "--criterion",
                              "label_smoothed_kd", "--kd-alpha", "0.5", "--kd-topk", str(2 * CACHE_K)), check=False)
    assert proc.returncode != 0
    assert f"made with k={CACHE_K}" in proc.stdout + proc.stderr
    assert not train_inner(proc) and not (save / "checkpoint_last.pt").exists()


def _final_params(path):
    from lskd_fairseq.teacher import load_checkpoint_state

    return load_checkpoint_state(str(path))["model"]


def test_training_from_the_cache_resumes_exactly(seqkd_env, tmp_path):
    env = seqkd_env
    common = [*KD_TASK, "--teacher-cache", env.cache, "--criterion", "label_smoothed_kd", "--kd-alpha", "0.5",
              "--kd-topk", "4", "--label-smoothing", "0.1", "--max-tokens", "500", "--disable-validation"]
    a = run_cli(train_args(env.bin, tmp_path / "a", 6, *common))
    b1 = run_cli(train_args(env.bin, tmp_path / "b", 3, *common))
    b2 = run_cli(train_args(env.bin, tmp_path / "b", 6, *common))
    ra, rb1, rb2 = train_inner(a), train_inner(b1), train_inner(b2)
    assert [int(r["num_updates"]) for r in rb2] == [4, 5, 6]
    assert int(rb2[0]["epoch"]) == int(ra[3]["epoch"]) == 1  # resumed in the middle of the epoch
    for x, y in zip(ra, rb1 + rb2):
        assert x["loss"] == y["loss"] and x["kd_loss"] == y["kd_loss"], (x, y)
    pa, pb = _final_params(tmp_path / "a" / "checkpoint_last.pt"), _final_params(tmp_path / "b" / "checkpoint_last.pt")
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.allclose(pa[k].float(), pb[k].float(), atol=1e-6), k


def test_sequence_distillation_from_a_cache_of_the_distilled_data(seqkd_env, tmp_path):
    """Word-KD on the teacher's sequences, from a cache made over the distilled data-bin."""
    from lskd_fairseq.criterions.sequence_distillation import SequenceDistillationCriterion

    env = seqkd_env
    dcache = tmp_path / "dcache"
    assert cache_cli.main([str(env.distilled), "--out", str(dcache), "--teacher-path", str(env.teacher),
                           "--k", "4", "--cpu", "--no-progress-bar"]) == 0
    online = make_task(env, distilled=env.distilled, teacher_path=env.teacher)
    cached = make_task(env, distilled=env.distilled, teacher_cache=dcache)
    for t in (online, cached):
        t.load_dataset("train")
    kw = dict(label_smoothing=0.1, seq_kd_beta=0.5, kd_alpha=0.5, kd_temperature=1.0, kd_topk=4)
    c_on = SequenceDistillationCriterion(online, False, **kw)
    c_ca = SequenceDistillationCriterion(cached, False, **kw)
    model = _perturbed_student(env, online)
    ids = list(range(3, N_TRAIN, 11))
    s_on, s_ca = _batch(online, "train", ids), _batch(cached, "train", ids)
    assert "teacher_topk" in s_ca["distilled"]
    loss_on, _, log_on = c_on(model, s_on)
    loss_ca, _, log_ca = c_ca(model, s_ca)
    assert torch.allclose(log_ca["kd_loss"], log_on["kd_loss"], rtol=2e-3)
    assert torch.allclose(loss_ca, loss_on, rtol=1e-3)
    # the gold cache does not fit the distilled targets: refused
    with pytest.raises(ArtifactError, match="made for other data"):
        _load_and_build(env, env.cache, kw)
    # and fairseq-train runs with it, logging the KD term
    proc = run_cli(train_args(env.bin, tmp_path / "ck", 2, *KD_TASK, "--distilled-data", env.distilled,
                              "--teacher-cache", dcache, "--criterion", "sequence_distillation",
                              "--seq-kd-beta", "0.5", "--kd-alpha", "0.5", "--kd-topk", "4",
                              "--disable-validation"))
    recs = train_inner(proc)
    assert len(recs) == 2 and all("kd_loss" in r and "seq_nll_loss" in r for r in recs)


def _load_and_build(env, cache, kw):
    from lskd_fairseq.criterions.sequence_distillation import SequenceDistillationCriterion

    t = make_task(env, distilled=env.distilled, teacher_cache=cache)
    t.load_dataset("train")
    return SequenceDistillationCriterion(t, False, **kw)
