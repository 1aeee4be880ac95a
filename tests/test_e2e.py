"""End to end with the real command lines: fairseq-preprocess and fairseq-train of an
LS teacher (fixtures in conftest.py), fairseq-train of a KD student through the
plugin, fairseq-generate, and a sacreBLEU score."""

import re

import sacrebleu
import torch

from conftest import PLUGIN, run_cli, train_args
from lskd_fairseq.fairseq_compat import allow_fairseq_checkpoint_globals

allow_fairseq_checkpoint_globals()  # fairseq checkpoints pickle an argparse.Namespace


def test_teacher_student_generate_bleu(nmt_data, nmt_teacher, tmp_path):
    student_dir = tmp_path / "student"
    run_cli(
        train_args(
            nmt_data, student_dir, 30,
            "--user-dir", PLUGIN, "--task", "translation_kd", "--teacher-path", nmt_teacher,
            "--criterion", "label_smoothed_kd", "--label-smoothing", "0.1",
            "--kd-alpha", "0.5", "--kd-temperature", "1", "--kd-topk", "8",
        )
    )
    ckpt = student_dir / "checkpoint_last.pt"
    assert ckpt.is_file() and (student_dir / "checkpoint_best.pt").is_file()

    # the student's checkpoint holds the student only: same tensors as an architecture
    # twin trained without a teacher, and nothing that belongs to the teacher
    student = torch.load(ckpt, weights_only=True)
    teacher = torch.load(nmt_teacher, weights_only=True)
    assert set(student["model"]) == set(teacher["model"])
    assert all(student["model"][k].shape == teacher["model"][k].shape for k in teacher["model"])
    assert not any(torch.equal(student["model"][k], teacher["model"][k]) for k in teacher["model"] if k.endswith("weight"))
    assert "teacher_path" in str(student["cfg"]["task"])  # the run's config records where the teacher came from

    gen = run_cli(
        ["fairseq-generate", nmt_data, "--user-dir", PLUGIN, "--path", ckpt, "--gen-subset", "test",
         "--beam", "4", "--max-tokens", "4000", "--cpu", "--max-len-a", "1.2", "--max-len-b", "10",
         # fairseq 0.12 drops a last batch whose size is not a multiple of this (default 8)
         "--required-batch-size-multiple", "1"]
    )
    hyps = {}
    for line in gen.stdout.splitlines():
        m = re.match(r"^H-(\d+)\t\S+\t(.*)$", line)
        if m:
            hyps[int(m.group(1))] = m.group(2)
    refs = (nmt_data.parent / "text" / "test.de").read_text(encoding="utf-8").splitlines()
    assert sorted(hyps) == list(range(len(refs)))  # every test sentence translated
    bleu = sacrebleu.corpus_bleu([hyps[i] for i in range(len(refs))], [refs])
    assert "Generate test with beam=4" in gen.stdout + gen.stderr
    print(f"e2e student BLEU after 30 updates: {bleu.score:.2f} ({bleu.format(signature=True)})")

    # a real expectation: the distilled student has learned something an untrained model of its
    # architecture (the teacher's, with fairseq's initial weights) has not. After 30 updates its
    # translations are a few words long, so BLEU is ~0 for both through the brevity penalty
    # (measured: student 0.00, untrained 0.01); what it has learned shows in BLEU's word
    # precision: 74.5% of its words are in the references (1-gram precision), against a few
    # percent for the untrained model's random words
    from nmt_baselines import score, untrained_twin

    twin = untrained_twin(nmt_teacher, tmp_path / "untrained.pt")
    base = score(nmt_data, twin, nmt_data.parent / "text" / "test.de", tmp_path / "untrained", beam=4)
    base_p1 = float(re.search(r"= [\d.]+ ([\d.]+)/", base["bleu_string"]).group(1))
    print(f"untrained twin: {base['bleu_string']}")
    assert bleu.precisions[0] > base_p1 + 30, (bleu.precisions, base["bleu_string"])
