"""Sequence-level distillation: lskd-distill-data and the sequence_distillation criterion."""

import json
import os
import shutil

import pytest
import torch

from conftest import PLUGIN, run_cli, train_args
from seqkd_common import BEAM, GEN, KD_TASK, N_TRAIN, read_manifest, seqkd_env, train_inner  # noqa: F401

import lskd_fairseq.tasks  # noqa: F401,E402  (registers task and criteria)
from lskd_fairseq import distill  # noqa: E402


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [x.rstrip("\n") for x in f]


def distill_inproc(env, out, *extra, split="valid"):
    argv = [str(env.bin), "--out", str(out), "--split", split, "--teacher-path", str(env.teacher),
            "--source-text", str(env.text / f"{split}.en"), "--target-text", str(env.text / f"{split}.de"),
            *GEN, "--cpu", "--no-progress-bar", *[str(x) for x in extra]]
    return distill.main(argv)


def make_task(env, distilled=None, teacher_path=None, teacher_cache=None, data=None):
    from lskd_fairseq.tasks.translation_kd import TranslationKDConfig, TranslationKDTask

    cfg = TranslationKDConfig(
        data=str(data or env.bin), source_lang="en", target_lang="de", train_subset="train",
        dataset_impl=None, required_seq_len_multiple=1, teacher_path=str(teacher_path or ""),
        teacher_cache=str(teacher_cache or ""), distilled_data=str(distilled or ""),
    )
    return TranslationKDTask.setup_task(cfg)


# ------------------------------------------------------------------ the corpus


def test_distilled_corpus_is_in_sample_id_order_and_matches_fairseq_generate(seqkd_env):
    env = seqkd_env
    man = read_manifest(env.distilled)
    assert man["complete"] and man["n_samples"] == N_TRAIN == man["n_output"]
    src_out, tgt_out = lines(env.distilled / "train.en"), lines(env.distilled / "train.de")
    assert src_out == lines(env.text / "train.en")  # line i = sample i, original text
    assert lines(env.distilled / "train.ids") == [str(i) for i in range(N_TRAIN)]
    # fairseq-generate, same beam and lengths: its output is scrambled, its H-<id> lines are not
    proc = run_cli(["fairseq-generate", env.bin, "--user-dir", PLUGIN, "--gen-subset", "train", "--path", env.teacher, *GEN,
                    "--max-tokens", "4096", "--cpu"])
    hyp = {}
    order = []
    for line in proc.stdout.splitlines():
        if line.startswith("H-"):
            sid, _, text = line.split("\t")
            hyp[int(sid[2:])] = text
            order.append(int(sid[2:]))
    assert order != sorted(order)  # what the tool avoids
    # (fairseq-generate may also leave a few of the longest sentences out altogether)
    assert len(hyp) >= 0.95 * N_TRAIN
    filtered = set(man["filtered_ids"])
    ids = [i for i in range(N_TRAIN) if i not in filtered and i in hyp]
    assert len(ids) > N_TRAIN // 2
    same = sum(tgt_out[i] == hyp[i] for i in ids) / len(ids)
    shifted = sum(tgt_out[i] == hyp.get((i + 1) % N_TRAIN) for i in ids) / len(ids)
    assert same >= 0.95, same
    assert shifted < 0.5, shifted
    # subword units / token strings are kept as the teacher wrote them: the binarized
    # target side is exactly the text re-encoded with the teacher's dictionary
    from fairseq.data import data_utils

    tdict = env.dict_symbols("de")
    sdict = env.dict_symbols("en")
    tgt_ds = data_utils.load_indexed_dataset(str(env.distilled / "train.en-de.de"), tdict)
    src_ds = data_utils.load_indexed_dataset(str(env.distilled / "train.en-de.en"), sdict)
    gold_src = data_utils.load_indexed_dataset(str(env.bin / "train.en-de.en"), sdict)
    for i in range(N_TRAIN):
        enc = tdict.encode_line(tgt_out[i], add_if_not_exist=False).long()
        assert torch.equal(enc, tgt_ds[i].long()), i
        assert torch.equal(src_ds[i], gold_src[i]), i
    # filtered samples keep the gold reference (aligned by sample id)
    gold_de = lines(env.text / "train.de")
    for i in filtered:
        assert tgt_out[i] == gold_de[i]
    # the data-bin is complete for fairseq-train: dictionaries and the other splits
    for name in ("dict.en.txt", "dict.de.txt", "valid.en-de.en.bin", "valid.en-de.de.idx", "test.en-de.de.bin"):
        assert (env.distilled / name).exists(), name


def test_original_source_kept_where_dictionary_has_unk(seqkd_env):
    env = seqkd_env
    sdict = env.dict_symbols("en")
    orig = lines(env.text / "train.en")
    out = lines(env.distilled / "train.en")
    with_unk = [i for i, line in enumerate(orig) if any(sdict.index(w) == sdict.unk() for w in line.split())]
    assert len(with_unk) >= 10  # words seen once are <unk> in this dictionary
    from fairseq.data import data_utils

    gold_src = data_utils.load_indexed_dataset(str(env.bin / "train.en-de.en"), sdict)
    for i in with_unk:
        assert "<unk>" in sdict.string(gold_src[i])  # what decoding the ids would give
        assert out[i] == orig[i] and "<unk>" not in out[i]


def test_source_text_is_checked(seqkd_env, tmp_path, capsys):
    env = seqkd_env
    # no text given and none beside the data-bin: the ids have <unk>, so they cannot stand in
    rc = distill.main([str(env.bin), "--out", str(tmp_path / "a"), "--split", "train", "--teacher-path",
                       str(env.teacher), "--cpu", "--no-progress-bar"])
    err = capsys.readouterr().err
    assert rc == 2 and "--source-text" in err and "<unk>" in err
    # a file with another number of lines
    rc = distill.main([str(env.bin), "--out", str(tmp_path / "b"), "--split", "train", "--teacher-path",
                       str(env.teacher), "--source-text", str(env.text / "valid.en"), "--cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "lines" in err and str(N_TRAIN) in err
    # same line count, one line that does not re-encode to the binarized ids
    bad = lines(env.text / "train.en")
    bad[6] = "a completely different sentence ."
    (tmp_path / "bad.en").write_text("\n".join(bad) + "\n", encoding="utf-8")
    rc = distill.main([str(env.bin), "--out", str(tmp_path / "c"), "--split", "train", "--teacher-path",
                       str(env.teacher), "--source-text", str(tmp_path / "bad.en"), "--cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "line 7" in err
    for d in ("a", "b", "c"):
        assert not (tmp_path / d / "train.distill.json").exists()


def test_select_by_bleu_unit():
    ref = "a man rides a red bike down the street ."
    hyps = ["a dog .", "a man rides a bike .", "a man rides a red bike down the street .", "street ."]
    assert distill.select_by_bleu(hyps, ref) == 2
    assert distill.select_by_bleu(["x y z", "x y z"], "x y z") == 0  # ties: the better-scored one
    assert distill.select_by_bleu(["a@@ b c", "ab c"], "ab c", remove_bpe="@@ ") == 0


def test_seq_inter_picks_the_best_bleu_hypothesis(seqkd_env, tmp_path):
    from sacrebleu.metrics import BLEU

    env = seqkd_env
    out = tmp_path / "inter"
    assert distill_inproc(env, out, "--nbest", BEAM, "--select", "bleu", "--write-nbest") == 0
    man = read_manifest(out, "valid")
    refs = lines(env.text / "valid.de")
    nbest = {}
    for line in lines(out / "valid.nbest.de"):
        sid, rank, _, text = line.split("\t")
        nbest.setdefault(int(sid), []).append((int(rank), text))
    chosen = lines(out / "valid.de")
    bleu = BLEU(effective_order=True)
    not_top = 0
    filtered = set(man["filtered_ids"])
    for i, hs in nbest.items():
        if i in filtered:
            continue
        assert [r for r, _ in hs] == list(range(len(hs))) and len(hs) == BEAM
        scores = [bleu.sentence_score(t, [refs[i]]).score for _, t in hs]
        best = max(range(len(hs)), key=lambda k: (scores[k], -k))
        assert chosen[i] == hs[best][1], (i, scores)
        not_top += best != 0
    assert not_top > 0 and not_top == man["selected_not_top_beam"]


def test_filtering_counts_and_drop(seqkd_env, tmp_path):
    env = seqkd_env
    out = tmp_path / "filt"
    assert distill_inproc(env, out, "--filter-max-len", 9, "--filter-ratio", 1.3, "--on-filtered", "drop",
                          "--write-nbest") == 0
    man = read_manifest(out, "valid")
    c = man["counts"]
    src = lines(env.text / "valid.en")
    expect = {"empty": 0, "too_long": 0, "ratio": 0}
    kept = []
    hyps = {int(x.split("\t")[0]): x.split("\t")[3] for x in lines(out / "valid.nbest.de") if x.split("\t")[1] == "0"}
    for i in range(len(src)):
        s, h = len(src[i].split()), len(hyps[i].split())
        if h == 0:
            expect["empty"] += 1
        elif s > 9 or h > 9:
            expect["too_long"] += 1
        elif max(s, h) / max(1, min(s, h)) > 1.3:
            expect["ratio"] += 1
        else:
            kept.append(i)
    assert {k: c[k] for k in expect} == expect
    assert c["kept"] == len(kept) == man["n_output"] and c["total"] == len(src)
    assert expect["too_long"] > 0 and expect["ratio"] > 0 and kept  # the test exercises each case
    assert lines(out / "valid.ids") == [str(i) for i in kept]
    assert lines(out / "valid.en") == [src[i] for i in kept]
    assert lines(out / "valid.de") == [hyps[i] for i in kept]


def test_interrupted_run_leaves_nothing_complete_and_resumes(seqkd_env, tmp_path, monkeypatch, capsys):
    env = seqkd_env
    out, ref = tmp_path / "resume", tmp_path / "ref"
    calls = {"n": 0}
    original_add = distill.PartialStore.add

    def add_then_die(self, records):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original_add(self, records)

    monkeypatch.setattr(distill.PartialStore, "add", add_then_die)
    with pytest.raises(KeyboardInterrupt):
        distill_inproc(env, out, "--batch-size", 4)
    monkeypatch.setattr(distill.PartialStore, "add", original_add)
    assert not (out / "valid.distill.json").exists()
    assert not (out / "valid.en-de.de.bin").exists() and not (out / "valid.de").exists()
    # a training run refuses the incomplete directory
    task = make_task(env, distilled=out)
    with pytest.raises(distill.DistillError, match="no complete distilled split"):
        task.load_dataset("train")
    # a cut last line is tolerated
    with open(out / ".lskd-partial-valid" / "hyps.jsonl", "ab") as f:
        f.write(b'{"id": 3, "hy')
    assert distill_inproc(env, out, "--batch-size", 4) == 0
    man = read_manifest(out, "valid")
    assert man["resumed_from_partial"] == 8 and man["generated_now"] == man["n_samples"] - 8
    assert not (out / ".lskd-partial-valid").exists()
    assert distill_inproc(env, ref, "--batch-size", 4) == 0
    for name in ("valid.en", "valid.de", "valid.ids"):
        assert lines(out / name) == lines(ref / name), name
    assert (out / "valid.en-de.de.bin").read_bytes() == (ref / "valid.en-de.de.bin").read_bytes()
    capsys.readouterr()
    assert distill_inproc(env, out, "--batch-size", 4) == 0  # complete: nothing to do
    assert "already complete" in capsys.readouterr().out
    # other generation options: the partial hypotheses would not fit, so the run restarts
    os.remove(out / "valid.distill.json")
    (out / ".lskd-partial-valid").mkdir()
    (out / ".lskd-partial-valid" / "state.json").write_text(json.dumps({"fingerprint": {"other": 1}}))
    (out / ".lskd-partial-valid" / "hyps.jsonl").write_text('{"id": 0, "hyps": [[[5, 6], -1.0]]}\n')
    assert distill_inproc(env, out, "--batch-size", 4) == 0
    assert read_manifest(out, "valid")["resumed_from_partial"] == 0
    assert lines(out / "valid.de") == lines(ref / "valid.de")


# ------------------------------------------------------------------ the criterion


def _perturbed_student(env, task, seed=0):
    from fairseq import checkpoint_utils

    (model,), _ = checkpoint_utils.load_model_ensemble([str(env.teacher)], task=task)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    for m in model.modules():
        if hasattr(m, "p") and isinstance(m.p, float):
            m.p = 0.0  # no dropout: forward passes are comparable
    model.train()
    return model


def test_sequence_distillation_loss_matches_the_formula(seqkd_env):
    """(1-b) * s * LS(gold) + b * (NLL(seq) + a * T^2 KL_topk(seq)), computed here by hand."""
    from fairseq import checkpoint_utils

    from lskd_fairseq.criterions.sequence_distillation import SequenceDistillationCriterion

    env = seqkd_env
    task = make_task(env, distilled=env.distilled, teacher_path=env.teacher)
    task.load_dataset("train")
    model = _perturbed_student(env, task)
    beta, alpha, temp, k, eps = 0.3, 0.7, 2.0, 4, 0.1
    crit = SequenceDistillationCriterion(task, False, label_smoothing=eps, seq_kd_beta=beta, kd_alpha=alpha,
                                         kd_temperature=temp, kd_topk=k)
    ds = task.dataset("train")
    sample = ds.collater([ds[i] for i in range(12)])
    loss, sample_size, log = crit(model, sample)

    tdict = task.target_dictionary
    pad = tdict.pad()
    dist_lines = lines(env.distilled / "train.de")
    ids = sample["id"].tolist()
    seqs = [tdict.encode_line(dist_lines[i], add_if_not_exist=False).long() for i in ids]
    from fairseq.data import data_utils

    seq_tgt = data_utils.collate_tokens(seqs, pad, tdict.eos())
    seq_prev = data_utils.collate_tokens(seqs, pad, tdict.eos(), move_eos_to_beginning=True)
    ni = sample["net_input"]
    (teacher,), _ = checkpoint_utils.load_model_ensemble([str(env.teacher)], task=task)
    teacher.eval()
    with torch.no_grad():
        t_logits = teacher(ni["src_tokens"], ni["src_lengths"], seq_prev)[0].float()
        s_seq = model(ni["src_tokens"], ni["src_lengths"], seq_prev)[0].float()
        s_gold = model(**ni)[0].float()
    V = s_seq.size(-1)
    mask_s = seq_tgt.ne(pad)
    lp_seq = s_seq.log_softmax(-1)
    nll_seq = -(lp_seq.gather(-1, seq_tgt.unsqueeze(-1)).squeeze(-1) * mask_s).sum()
    tv, ti = t_logits.topk(k, -1)
    q = (tv / temp).softmax(-1)
    lp_t = (s_seq / temp).log_softmax(-1).gather(-1, ti)
    kd = (temp**2 * (q * (q.log() - lp_t)).sum(-1) * mask_s).sum()
    gold = sample["target"]
    mask_g = gold.ne(pad)
    lp_g = s_gold.log_softmax(-1)
    nll_g = -lp_g.gather(-1, gold.unsqueeze(-1)).squeeze(-1)
    smooth = -lp_g.sum(-1)
    ls = (((1 - eps) * nll_g + eps / (V - 1) * (smooth - nll_g)) * mask_g).sum()
    seq_ntok, gold_ntok = int(mask_s.sum()), int(mask_g.sum())
    expect = (1 - beta) * (seq_ntok / gold_ntok) * ls + beta * (nll_seq + alpha * kd)
    assert sample_size == seq_ntok == sample["distilled"]["ntokens"]
    assert torch.allclose(loss.detach(), expect, rtol=1e-4), (loss.item(), expect.item())
    assert torch.allclose(log["kd_loss"], kd, rtol=1e-4)
    assert torch.allclose(log["seq_nll_loss"], nll_seq, rtol=1e-4)
    # plain Seq-KD: beta = 1, alpha = 0 -> NLL of the teacher's sequence only, teacher not consulted
    crit1 = SequenceDistillationCriterion(task, False, seq_kd_beta=1.0, kd_alpha=0.0)
    loss1, _, log1 = crit1(model, sample)
    assert torch.allclose(loss1.detach(), nll_seq, rtol=1e-4) and "kd_loss" not in log1
    # validation: gold LS-NLL only
    model.eval()
    loss_v, size_v, _ = crit(model, sample)
    assert size_v == gold_ntok and torch.allclose(loss_v.detach(), ls, rtol=1e-4)


def _copy(src, dst, keep_file_records=False):
    """A copy of a distilled data-bin; without its manifest's file records (as manifests of
    lskd before 7 Dec 2026 were), so that the checks of content behind them are reached."""
    shutil.copytree(src, dst, symlinks=True)
    if not keep_file_records:
        for man in dst.glob("*.distill.json"):
            m = json.loads(man.read_text())
            m.pop("files", None)
            man.write_text(json.dumps(m))
    return dst


def _rewrite_bin(prefix, items, vocab):
    from fairseq.data import indexed_dataset

    b = indexed_dataset.make_builder(str(prefix) + ".bin", impl="mmap", vocab_size=vocab)
    for t in items:
        b.add_item(t.int())
    b.finalize(str(prefix) + ".idx")


def test_distilled_data_mismatch_is_refused(seqkd_env, tmp_path):
    from fairseq.data import data_utils

    env = seqkd_env
    sdict, tdict = env.dict_symbols("en"), env.dict_symbols("de")
    src = data_utils.load_indexed_dataset(str(env.distilled / "train.en-de.en"), sdict)
    tgt = data_utils.load_indexed_dataset(str(env.distilled / "train.en-de.de"), tdict)
    src_items = [src[i] for i in range(len(src))]
    tgt_items = [tgt[i] for i in range(len(tgt))]

    def refused(ddir, match):
        task = make_task(env, distilled=ddir)
        with pytest.raises(distill.DistillError, match=match):
            task.load_dataset("train")

    # the good one loads, and its batches carry the teacher's sequences
    task = make_task(env, distilled=env.distilled)
    task.load_dataset("train")
    ds = task.dataset("train")
    s = ds.collater([ds[i] for i in (5, 1, 7)])
    assert torch.equal(s["distilled"]["target"][s["id"].tolist().index(7)][: len(tgt_items[7])], tgt_items[7])
    # a file changed after lskd-distill-data wrote it: refused by its recorded size and hash
    d = _copy(env.distilled, tmp_path / "changed", keep_file_records=True)
    _rewrite_bin(d / "train.en-de.de", tgt_items[:250], len(tdict))
    refused(d, r"train\.en-de\.de\.bin is damaged: \d+ bytes, its header promises \d+ \(truncated\?\); "
            r"rebuild it with `lskd-distill-data .* --force`")
    # different sizes
    d = _copy(env.distilled, tmp_path / "sizes")
    _rewrite_bin(d / "train.en-de.en", src_items[:250], len(sdict))
    _rewrite_bin(d / "train.en-de.de", tgt_items[:250], len(tdict))
    refused(d, "250 source / 250 target samples, the gold split has 300")
    # different source sentences (two of the same length swapped: the sizes agree)
    by_len = {}
    for i, t in enumerate(src_items):
        by_len.setdefault(len(t), []).append(i)
    a, b = next(v[:2] for v in by_len.values() if len(v) >= 2 and not torch.equal(src_items[v[0]], src_items[v[1]]))
    swapped = list(src_items)
    swapped[a], swapped[b] = swapped[b], swapped[a]
    d = _copy(env.distilled, tmp_path / "source")
    _rewrite_bin(d / "train.en-de.en", swapped, len(sdict))
    refused(d, f"source sentences differ from the gold data's, first at sample {min(a, b)}")
    # different dictionaries
    d = _copy(env.distilled, tmp_path / "dict")
    dl = (d / "dict.de.txt").read_text(encoding="utf-8").splitlines()
    dl[3], dl[4] = dl[4], dl[3]
    (d / "dict.de.txt").write_text("\n".join(dl) + "\n", encoding="utf-8")
    refused(d, "de dictionary differs")
    # made with --on-filtered drop: not aligned by sample id
    d = _copy(env.distilled, tmp_path / "drop")
    man = json.loads((d / "train.distill.json").read_text())
    man["on_filtered"] = "drop"
    (d / "train.distill.json").write_text(json.dumps(man))
    refused(d, "on-filtered drop")
    # and fairseq-train stops before the first update, with the message
    save = tmp_path / "ck"
    proc = run_cli(train_args(env.bin, save, 2, *KD_TASK, "--distilled-data", tmp_path / "dict",
                              "--criterion", "sequence_distillation"), check=False)
    assert proc.returncode != 0
    assert "dictionary differs" in proc.stderr + proc.stdout
    assert not train_inner(proc) and not (save / "checkpoint_last.pt").exists()
    # the criterion without --distilled-data is refused too
    proc = run_cli(train_args(env.bin, save, 2, *KD_TASK, "--criterion", "sequence_distillation"), check=False)
    assert proc.returncode != 0 and "--distilled-data" in proc.stderr + proc.stdout


def test_seq_kd_training_runs(seqkd_env, tmp_path):
    env = seqkd_env
    proc = run_cli(train_args(env.bin, tmp_path / "ck", 3, *KD_TASK, "--distilled-data", env.distilled,
                              "--criterion", "sequence_distillation", "--seq-kd-beta", "1", "--kd-alpha", "0",
                              "--disable-validation"))
    recs = train_inner(proc)
    assert len(recs) == 3
    for r in recs:
        assert "seq_nll_loss" in r and "kd_loss" not in r
        assert float(r["loss"]) == pytest.approx(float(r["seq_nll_loss"]), abs=2e-3)
    assert (tmp_path / "ck" / "checkpoint_last.pt").exists()
