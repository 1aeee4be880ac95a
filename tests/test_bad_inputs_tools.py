"""Bad input to the NMT tools is refused: lskd-bleu, the sentencepiece tool and the recipe's
stages on a partial run. Every row asserts a non-zero exit, a message that names the
problem and the fix, no traceback, and that nothing a rerun would trust was left behind."""

import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, List

import pytest

from conftest import require_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
RECIPE = os.path.join(REPO, "recipes", "multi30k", "run.sh")


def _env():
    env = dict(os.environ)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _run(cmd, timeout=600):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=_env(), timeout=timeout,
                          cwd=REPO)


@dataclass
class Row:
    id: str
    cmd: Callable  # (files: dict of paths) -> argv
    says: List[str]  # substrings of the message: the problem and the fix
    absent: List[str] = field(default_factory=list)  # keys of files that must not exist afterwards


@pytest.fixture()
def files(tmp_path):
    f = {
        "empty": tmp_path / "empty.txt",
        "two": tmp_path / "two.txt",
        "three": tmp_path / "three.txt",
        "missing": tmp_path / "no_such_file.txt",
        "json": tmp_path / "out" / "res.json",
        "hyp_out": tmp_path / "out" / "hyp.txt",
        "spm_prefix": tmp_path / "spm" / "m",
        "spm_model": tmp_path / "spm" / "m.model",
        "encoded": tmp_path / "enc.txt",
        "eval_json": tmp_path / "res" / "a.json",
        "res": tmp_path / "res",
        "gen": tmp_path / "gen",
    }
    f["empty"].write_text("", encoding="utf-8")
    f["two"].write_text("ein Hund läuft .\nzwei Katzen .\n", encoding="utf-8")
    f["three"].write_text("ein Hund läuft .\nzwei Katzen .\ndrei Vögel .\n", encoding="utf-8")
    return f


def _bleu(*args):
    return lambda f: [os.path.join(BIN, "lskd-bleu"), "score", *[f[a] if a in f else a for a in args],
                      "--json", f["json"], "--hyp-out", f["hyp_out"]]


def _spm(*args):
    return lambda f: [sys.executable, "-m", "lskd_fairseq.cli.spm", *[f[a] if a in f else a for a in args]]


TOOL_ROWS = [
    Row("bleu-empty-hyp-and-ref", _bleu("--hyp", "empty", "--ref", "empty"),
        ["reference file", "is empty", "give the raw reference text"], ["json", "hyp_out"]),
    Row("bleu-empty-hyp", _bleu("--hyp", "empty", "--ref", "two"),
        ["no hypotheses in", "give the system's output"], ["json", "hyp_out"]),
    Row("bleu-more-hyps-than-refs", _bleu("--hyp", "three", "--ref", "two"),
        ["3 hypotheses", "but 2 references", "one per line"], ["json", "hyp_out"]),
    Row("bleu-fewer-hyps-than-refs", _bleu("--hyp", "two", "--ref", "three"),
        ["2 hypotheses", "but 3 references"], ["json", "hyp_out"]),
    Row("bleu-missing-hyp", _bleu("--hyp", "missing", "--ref", "two"),
        ["hypothesis file not found", "no_such_file.txt", "--hyp"], ["json", "hyp_out"]),
    Row("bleu-missing-ref", _bleu("--hyp", "two", "--ref", "missing"),
        ["reference file not found", "--ref"], ["json", "hyp_out"]),
    Row("bleu-missing-generate-log", _bleu("--generate", "missing", "--ref", "two"),
        ["generate log not found", "--generate"], ["json", "hyp_out"]),
    Row("spm-train-missing-input", _spm("train", "--input", "two", "missing", "--model-prefix", "spm_prefix",
                                        "--vocab-size", "20"),
        ["input file not found", "no_such_file.txt", "fix --input"], ["spm_model"]),
    Row("spm-train-empty-input", _spm("train", "--input", "empty", "--model-prefix", "spm_prefix",
                                      "--vocab-size", "20"),
        ["input file is empty", "fix --input"], ["spm_model"]),
    Row("evaluate-missing-checkpoint",
        lambda f: [sys.executable, "-m", "lskd_fairseq.cli.evaluate", f["res"], "--ref", f["two"], "--results-dir",
                   f["res"], "--gen-dir", f["gen"], "--model", f"a={f['missing']}"],
        ["checkpoint not found for 1 model(s): a (", "no_such_file.txt", "train them first"], ["eval_json", "gen"]),
    Row("spm-encode-missing-model", _spm("encode", "--model", "spm_model", "--input", "two", "--output", "encoded"),
        ["sentencepiece model not found", "spm train"], ["encoded"]),
]


@pytest.mark.parametrize("row", TOOL_ROWS, ids=[r.id for r in TOOL_ROWS])
def test_tool_refuses(row, files):
    res = _run(row.cmd(files), timeout=300)
    err = res.stderr
    assert res.returncode != 0, (row.id, res.stdout, err)
    for s in row.says:
        assert s in err, (row.id, s, err)
    assert "Traceback" not in err, (row.id, err)
    assert len(err.strip().splitlines()) == 1, (row.id, err)  # one line
    for key in row.absent:
        assert not files[key].exists(), (row.id, key)


def test_spm_encode_missing_input_leaves_no_output(files, tmp_path):
    """A real model, a missing input: nothing is encoded, not even the inputs that exist."""
    model = _run(_spm("train", "--input", "three", "--model-prefix", "spm_prefix", "--vocab-size", "40")(files))
    assert model.returncode == 0, model.stderr
    ok_out = tmp_path / "ok.enc"
    res = _run(_spm("encode", "--model", "spm_model", "--input", "two", "missing",
                    "--output", str(ok_out), "encoded")(files))
    assert res.returncode != 0 and "input file not found" in res.stderr and "Traceback" not in res.stderr
    assert not ok_out.exists() and not files["encoded"].exists()


# ------------------------------------------------------------------ the recipe on a partial run
def _recipe(work, *args, timeout=600):
    return _run(["bash", RECIPE, "--scale", "smoke", "--work", work, *args], timeout=timeout)


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory):
    """Data, sentencepiece and binarized data, and only the LS teacher (a few updates)."""
    require_data("multi30k", "Multi30k task 1 en-de: train/val/test_2016_flickr .en.gz/.de.gz")
    work = tmp_path_factory.mktemp("partial") / "work"
    # validated by BLEU with patience, as at cpu scale: its checkpoint then holds numpy metrics
    # (the BLEU counts) that the evaluation must read
    res = _recipe(work, "--stop-stage", "teacher_ls", "--max-update-teacher", "3", "--stop-metric-teacher", "bleu",
                  "--patience-teacher", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    return work


RECIPE_ROWS = [
    # (id, stage, message parts, paths under WORK that must not exist afterwards)
    ("evaluate", "evaluate",
     ["en-de.evaluate: 6 of 7 models not trained yet", "teacher_nols (run --stage teacher_nols)",
      "student_nokd (run --stage student_nokd)", "student_wordkd_ls (run --stage student_wordkd)",
      "student_seqkd_nols (run --stage student_seqkd)", "then this one again"],
     ["en-de/results/table.md", "table.md", ".done/en-de.evaluate"]),
    ("student_wordkd", "student_wordkd",
     ["en-de.student_wordkd_nols needs en-de.teacher_nols", "run --stage teacher_nols first"],
     ["en-de/models/student_wordkd_ls", "en-de/models/student_wordkd_nols", ".done/en-de.student_wordkd_ls"]),
    ("distill", "distill", ["needs en-de.teacher_nols", "run --stage teacher_nols first"],
     ["en-de/distill_teacher_ls", ".done/en-de.distill_teacher_ls"]),
    ("student_seqkd", "student_seqkd", ["needs en-de.distill_teacher_ls", "run --stage distill first"],
     ["en-de/models/student_seqkd_ls"]),
]


@pytest.mark.parametrize("row", RECIPE_ROWS, ids=[r[0] for r in RECIPE_ROWS])
def test_recipe_stage_on_a_partial_run(row, partial_run):
    _, stage, says, absent = row
    res = _recipe(partial_run, "--stage", stage, "--stop-stage", stage, timeout=600)
    assert res.returncode != 0, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    for s in says:
        assert s in last, (s, last)
    assert "Traceback" not in res.stderr
    for rel in absent:
        assert not (partial_run / rel).exists(), rel


def test_recipe_evaluate_scores_what_exists(partial_run):
    """The partial evaluation still scores the model that is there (its result is exact)."""
    import json

    res = _recipe(partial_run, "--stage", "evaluate", "--stop-stage", "evaluate", timeout=600)
    assert res.returncode != 0
    r = json.loads((partial_run / "en-de" / "results" / "teacher_ls.json").read_text())
    assert r["name"] == "teacher_ls" and r["n_sentences"] == 60 and 0 <= r["bleu"] <= 100
    assert "scored so far: 1" in res.stderr
    # exact: the sacrebleu command line on the same files, with the tokenisation and case of the signature
    sig = dict(part.split(":", 1) for part in r["bleu_signature"].split("|"))
    cmd = [os.path.join(BIN, "sacrebleu"), r["ref_file"], "-i", r["hyp_file"], "-m", "bleu", "-b", "-w", "4",
           "--tokenize", sig["tok"]] + (["--lowercase"] if sig["case"] == "lc" else [])
    cli = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert len(open(r["hyp_file"], encoding="utf-8").read().splitlines()) == 60
    assert abs(r["bleu"] - float(cli.stdout.strip())) <= 0.01, (r["bleu"], cli.stdout, r["bleu_signature"])


def test_recipe_stage_before_its_data(tmp_path):
    res = _recipe(tmp_path / "w", "--stage", "spm", "--stop-stage", "spm", timeout=300)
    assert res.returncode != 0
    assert "spm needs prepare, which has not finished" in res.stderr and "run --stage prepare first" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "w" / "spm").exists()
