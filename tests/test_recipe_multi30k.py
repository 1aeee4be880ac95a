"""The Multi30k recipe end to end at smoke scale: every stage, both teachers, all students,
then the table it writes; a second run skips everything that is done."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import require_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO, "recipes", "multi30k", "run.sh")
MODELS = [
    "teacher_ls",
    "teacher_nols",
    "student_nokd",
    "student_wordkd_ls",
    "student_wordkd_nols",
    "student_seqkd_ls",
    "student_seqkd_nols",
]


def _env():
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _run(work, *extra, timeout=900):
    return subprocess.run(
        ["bash", RECIPE, "--scale", "smoke", "--work", str(work), *extra],
        capture_output=True, text=True, env=_env(), timeout=timeout, cwd=REPO,
    )


def _rows(table_md):
    rows = {}
    for line in table_md.splitlines():
        if not line.startswith("| ") or line.startswith("| model") or line.startswith("| ---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


# students long enough to learn something the test can see (the smoke default, 8 updates, is a
# plumbing check: it leaves a student's test NLL at its untrained twin's; measured 6 Dec 2026:
# 6.37 vs 6.26 nats at 8 updates, 5.27 vs 6.26 at 40 updates with lr 3e-3)
STUDENTS_LEARN = ["--max-update-student", "40", "--lr", "3e-3"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    require_data("multi30k", "Multi30k task 1 en-de: train/val/test_2016_flickr .en.gz/.de.gz")
    work = tmp_path_factory.mktemp("m30k") / "work"
    res = _run(work, *STUDENTS_LEARN)
    assert res.returncode == 0, res.stderr[-5000:]
    return work, res


def test_every_stage_ran_and_table_has_every_model(smoke_run):
    work, res = smoke_run
    for step in ["prepare", "spm", "en-de.binarize", "en-de.distill_teacher_ls", "en-de.distill_teacher_nols",
                 "en-de.evaluate"] + [f"en-de.{m}" for m in MODELS]:
        assert (work / ".done" / step).is_file(), f"stage marker missing: {step}"
    table = (work / "table.md").read_text(encoding="utf-8")
    assert table == (work / "en-de" / "results" / "table.md").read_text(encoding="utf-8") + "\n"
    rows = _rows(table)
    assert list(rows) == MODELS
    header = [c.strip() for c in table.split("\n| model")[1].split("\n")[0].strip().strip("|").split("|")]
    assert header == ["teacher", "KD", "LS", "BLEU", "chrF", "params", "updates", "train time"]
    for name, cells in rows.items():
        bleu, chrf = float(cells[4]), float(cells[5])
        assert 0.0 <= bleu <= 100.0 and 0.0 <= chrf <= 100.0, (name, cells)
        assert re.fullmatch(r"\d+(\.\d+)?[kM]?", cells[6]), (name, cells)
        assert int(cells[7]) > 0, (name, cells)
        assert re.fullmatch(r"\d+(\.\d+)? (s|min|h)", cells[8]), (name, cells)
    assert rows["teacher_ls"][3] == "0.1" and rows["teacher_nols"][3] == "0"
    assert rows["student_wordkd_ls"][1] == "teacher_ls" and rows["student_seqkd_nols"][1] == "teacher_nols"
    # students are smaller than teachers
    assert rows["student_nokd"][6] != rows["teacher_ls"][6]
    assert "sacreBLEU signature: `nrefs:1|case:mixed|eff:no|tok:13a" in table


def test_per_model_json_matches_its_hypotheses(smoke_run):
    work, _ = smoke_run
    from lskd_fairseq.cli import bleu

    refs = bleu.read_lines(str(work / "raw" / "test.de"))
    assert len(refs) == 60
    for name in MODELS:
        r = json.loads((work / "en-de" / "results" / f"{name}.json").read_text())
        assert r["name"] == name and r["n_sentences"] == 60 and r["spm_decoded"]
        hyps = bleu.read_lines(r["hyp_file"])
        assert len(hyps) == 60 and not any("\u2581" in h for h in hyps)
        again = bleu.score(hyps, refs)
        assert again["bleu"] == r["bleu"] and again["chrf"] == r["chrf"]
        assert r["bleu_signature"].startswith("nrefs:1|") and r["params"] > 0 and r["train_seconds"] >= 0
        # Seq-KD students are scored at their last checkpoint, every other model at its best
        want = "checkpoint_last.pt" if name.startswith("student_seqkd") else "checkpoint_best.pt"
        assert r["checkpoint"] == str(work / "en-de" / "models" / name / want), (name, r["checkpoint"])


def test_seqkd_students_trained_on_teacher_outputs(smoke_run):
    work, _ = smoke_run
    for t in ("teacher_ls", "teacher_nols"):
        d = work / "en-de" / f"distill_{t}"
        assert (d / "train.distill.json").is_file()
    log = (work / "logs" / "en-de.student_seqkd_ls.log").read_text(encoding="utf-8", errors="replace")
    assert "distilled_data" in log and "sequence_distillation" in log


def test_rerun_skips_finished_stages(smoke_run):
    work, _ = smoke_run
    before = (work / "table.md").read_text()
    res = _run(work, *STUDENTS_LEARN, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "run  en-de.teacher_ls" not in res.stderr
    assert "skip en-de.teacher_ls" in res.stderr and "skip en-de.student_seqkd_nols" in res.stderr
    assert (work / "table.md").read_text() == before


def test_bad_option_is_refused(tmp_path):
    res = _run(tmp_path / "w", "--no-such-option", "1", timeout=60)
    assert res.returncode != 0 and "unknown option --no-such-option" in res.stderr


def test_temperature_sweep_trains_and_scores_a_student_per_teacher_and_t(smoke_run):
    """--kd-sweep-temperatures '1 2': T=1 is the student_wordkd_* models already there;
    T=2 adds one word-KD student per teacher, trained at T=2 and in the table."""
    work, _ = smoke_run
    res = _run(work, *STUDENTS_LEARN, "--stage", "temperature_sweep", "--kd-sweep-temperatures", "1 2", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "run  en-de.teacher_ls" not in res.stderr
    rows = _rows((work / "table.md").read_text())
    assert list(rows) == MODELS + ["student_wordkd_ls_T2", "student_wordkd_nols_T2"]
    assert rows["student_wordkd_ls_T2"][1] == "teacher_ls" and rows["student_wordkd_nols_T2"][1] == "teacher_nols"
    assert rows["student_wordkd_ls_T2"][2].endswith("T=2")
    log = (work / "logs" / "en-de.student_wordkd_nols_T2.log").read_text(encoding="utf-8", errors="replace")
    assert "'kd_temperature': 2.0" in log and "'kd_temperature': 1.0" not in log
    r = json.loads((work / "en-de" / "results" / "student_wordkd_ls_T2.json").read_text())
    assert r["kd"] == "word top-4 T=2" and 0.0 <= r["bleu"] <= 100.0
    assert not (work / "en-de" / "models" / "student_wordkd_ls_T1").exists()


def test_temperature_sweep_refuses_a_non_number(smoke_run):
    work, _ = smoke_run
    res = _run(work, "--stage", "temperature_sweep", "--kd-sweep-temperatures", "2 hot", timeout=120)
    assert res.returncode != 0 and "KD_SWEEP_TEMPERATURES: 'hot' is not a positive number" in res.stderr


def test_a_rewritten_checkpoint_is_scored_again(smoke_run):
    """The evaluation skips models already scored, unless their checkpoint was written since."""
    work, _ = smoke_run
    ck = work / "en-de" / "models" / "student_nokd" / "checkpoint_best.pt"
    res_json = work / "en-de" / "results" / "student_nokd.json"
    later = res_json.stat().st_mtime + 10
    os.utime(ck, (later, later))
    res = _run(work, *STUDENTS_LEARN, "--stage", "evaluate", "--stop-stage", "evaluate", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    log = (work / "logs" / "en-de.evaluate.log").read_text()
    last = log[log.rfind("skip teacher_ls"):]
    assert "student_nokd: scoring again" in last and "skip student_nokd" not in last
    assert "skip student_seqkd_ls" in last
    assert res_json.stat().st_mtime >= later


def test_bad_sweep_temperatures_are_refused_before_any_work(tmp_path):
    res = _run(tmp_path / "w", "--kd-sweep-temperatures", "2 -1", "--stop-stage", "prepare", timeout=120)
    assert res.returncode != 0 and "KD_SWEEP_TEMPERATURES: '-1' is not a positive number" in res.stderr
    assert not (tmp_path / "w" / "raw").exists()


def test_teachers_beat_an_untrained_model_of_their_shape(smoke_run, tmp_path):
    """A real expectation at smoke scale: each teacher's test BLEU and chrF exceed those of
    the same architecture with its initial weights (scored the same way)."""
    from nmt_baselines import score, untrained_twin

    work, _ = smoke_run
    d = work / "en-de"
    twin = untrained_twin(d / "models" / "teacher_ls" / "checkpoint_best.pt", tmp_path / "untrained.pt")
    base = score(d / "bin", twin, work / "raw" / "test.de", tmp_path, spm=work / "spm" / "spm.model")
    for name in ("teacher_ls", "teacher_nols"):
        r = json.loads((d / "results" / f"{name}.json").read_text())
        # measured: untrained 0.00 BLEU / 5.0 chrF; the LS smoke teacher (100 updates) 0.92 / 7.6
        assert r["bleu"] > base["bleu"] + 0.3, (name, r["bleu"], base["bleu"])
        assert r["chrf"] > base["chrf"] + 1, (name, r["chrf"], base["chrf"])


def test_students_beat_an_untrained_model_of_their_shape(smoke_run, tmp_path):
    """Every trained student's teacher-forced NLL on the test set is below that of the same
    architecture with its initial weights. No-KD and word-KD students are scored on the gold
    references; Seq-KD students on their teacher's greedy translations of the test sources,
    which is what Seq-KD teaches them (a smoke teacher, 0.9 BLEU, is far from the references;
    on them a Seq-KD student stays at its twin's NLL: 6.21 vs 6.26). Measured 6 Dec 2026, 40
    updates: no-KD 5.27 vs 6.26, word-KD 5.34 vs 6.26, Seq-KD 2.54 vs 4.70 nats per token."""
    from nmt_baselines import test_nll, untrained_twin

    work, _ = smoke_run
    d = work / "en-de"
    for teacher in ("teacher_ls", "teacher_nols"):  # the teacher's translations of the test set
        proc = subprocess.run(
            ["lskd-distill-data", str(d / "bin"), "--out", str(tmp_path / teacher), "--split", "test", "--beam", "1",
             "--teacher-path", str(d / "models" / teacher / "checkpoint_best.pt"), "-s", "en", "-t", "de",
             "--source-text", str(work / "spm" / "test.en"), "--target-text", str(work / "spm" / "test.de"),
             "--max-len-a", "1.2", "--max-len-b", "10", "--cpu", "--no-progress-bar"],
            capture_output=True, text=True, env=_env(), timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    students = [m for m in MODELS + ["student_wordkd_ls_T2", "student_wordkd_nols_T2"] if m.startswith("student")
                and (d / "models" / m).is_dir()]
    assert len(students) >= 5, students
    for name in students:
        seqkd = name.startswith("student_seqkd")
        ck = d / "models" / name / ("checkpoint_last.pt" if seqkd else "checkpoint_best.pt")
        data = tmp_path / ("teacher_" + name.rsplit("_", 1)[-1]) if seqkd else d / "bin"
        twin = untrained_twin(ck, tmp_path / f"untrained_{name}.pt")
        trained, untrained = test_nll(data, ck), test_nll(data, twin)
        assert trained < untrained - (0.5 if seqkd else 0.3), (name, trained, untrained)


def _partial_copy(work, dest, models):
    """A copy of the smoke run's data and of some trained models only, as a run that
    stopped early would leave it (markers included)."""
    dest.mkdir()
    for rel in ("raw", "spm", "en-de/bin", *[f"en-de/models/{m}" for m in models]):
        shutil.copytree(work / rel, dest / rel)
    (dest / ".done").mkdir()
    for step in ("prepare", "spm", "en-de.binarize", *[f"en-de.{m}" for m in models]):
        shutil.copy(work / ".done" / step, dest / ".done" / step)
    return dest


def test_evaluate_after_only_one_teacher_scores_it_and_names_the_rest(smoke_run, tmp_path):
    """--stage evaluate when only teacher_ls was trained: teacher_ls is scored, every missing
    model is named with the stage that makes it, no table is written, no traceback."""
    work = _partial_copy(smoke_run[0], tmp_path / "w", ["teacher_ls"])
    res = _run(work, *STUDENTS_LEARN, "--stage", "evaluate", "--stop-stage", "evaluate", timeout=600)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr and "OSError" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "6 of 7 models not trained yet" in last
    for name, stage in (("teacher_nols", "teacher_nols"), ("student_nokd", "student_nokd"),
                        ("student_wordkd_ls", "student_wordkd"), ("student_wordkd_nols", "student_wordkd"),
                        ("student_seqkd_ls", "student_seqkd"), ("student_seqkd_nols", "student_seqkd")):
        assert f"{name} (run --stage {stage})" in last, (name, last)
    r = json.loads((work / "en-de" / "results" / "teacher_ls.json").read_text())
    assert r["name"] == "teacher_ls" and r["n_sentences"] == 60
    assert not (work / "en-de" / "results" / "table.md").exists() and not (work / "table.md").exists()
    assert not (work / ".done" / "en-de.evaluate").exists()


def test_students_of_another_seed_are_paired_and_named_by_seed(smoke_run, tmp_path):
    """--seed 2: the word-KD students of both teachers train with seed 2 under their own
    names beside the seed-1 ones; evaluate_s2 then names the seed-2 students still missing."""
    src = smoke_run[0]
    work = _partial_copy(src, tmp_path / "w", ["teacher_ls", "teacher_nols", "student_wordkd_ls"])
    res = _run(work, "--seed", "2", "--stage", "student_wordkd", "--stop-stage", "student_wordkd", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    models = work / "en-de" / "models"
    for t in ("ls", "nols"):
        log = (work / "logs" / f"en-de.student_wordkd_{t}_s2.log").read_text(encoding="utf-8", errors="replace")
        assert "'seed': 2" in log and "'seed': 1" not in log, t
        assert (models / f"student_wordkd_{t}_s2" / "checkpoint_best.pt").is_file()
    # the seed-1 student is untouched, and seed 2 trained other weights
    import torch

    from lskd_fairseq.fairseq_compat import allow_fairseq_checkpoint_globals

    allow_fairseq_checkpoint_globals()
    s1 = torch.load(models / "student_wordkd_ls" / "checkpoint_last.pt", weights_only=True)["model"]
    s2 = torch.load(models / "student_wordkd_ls_s2" / "checkpoint_last.pt", weights_only=True)["model"]
    assert any(not torch.equal(s1[k], s2[k]) for k in s1 if k.endswith("weight"))
    assert (models / "student_wordkd_ls" / "checkpoint_last.pt").stat().st_mtime == \
        (src / "en-de" / "models" / "student_wordkd_ls" / "checkpoint_last.pt").stat().st_mtime
    res = _run(work, "--seed", "2", "--stage", "evaluate", "--stop-stage", "evaluate", timeout=900)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.split("ERROR: ")[1].startswith("en-de.evaluate_s2: 3 of 7 models not trained yet")
    assert "student_nokd_s2 (run --stage student_nokd --seed 2)" in last
    assert "student_seqkd_ls_s2 (run --stage student_seqkd --seed 2)" in last
    r = json.loads((work / "en-de" / "results" / "student_wordkd_nols_s2.json").read_text())
    assert r["seed"] == 2 and r["teacher"] == "teacher_nols"
    assert json.loads((work / "en-de" / "results" / "teacher_ls.json").read_text())["seed"] == 1


def _first_train_loss(log_path):
    m = re.search(r"\| train \| epoch 001 \| loss ([\d.]+)", log_path.read_text(encoding="utf-8", errors="replace"))
    assert m, log_path
    return float(m.group(1))


def test_teacher_cache_students_match_online_students(smoke_run, tmp_path):
    """--teacher-cache 1: the word-KD students of a seed read each teacher's top-k cache (made once,
    on demand, by the teacher_cache steps) and run no teacher; with the same seed they get the
    training loss of students that run the teacher online, up to the cache's float16 rounding."""
    work, _ = smoke_run
    online = tmp_path / "online"
    shutil.copytree(work, online, symlinks=True)
    cached = _run(work, "--stage", "student_wordkd", "--stop-stage", "student_wordkd", "--seed", "3",
                  "--teacher-cache", "1", timeout=600)
    assert cached.returncode == 0, cached.stderr[-3000:]
    assert "run  en-de.teacher_cache_ls" in cached.stderr and "run  en-de.teacher_cache_nols" in cached.stderr
    plain = _run(online, "--stage", "student_wordkd", "--stop-stage", "student_wordkd", "--seed", "3", timeout=600)
    assert plain.returncode == 0, plain.stderr[-3000:]
    for name in ("student_wordkd_ls_s3", "student_wordkd_nols_s3"):
        log = (work / "logs" / f"en-de.{name}.log").read_text(encoding="utf-8", errors="replace")
        assert "teacher cache: split 'train'" in log and "'teacher_path': ''" in log, name
        assert "'teacher_cache': ''" in (online / "logs" / f"en-de.{name}.log").read_text(encoding="utf-8", errors="replace")
        a = _first_train_loss(work / "logs" / f"en-de.{name}.log")
        b = _first_train_loss(online / "logs" / f"en-de.{name}.log")
        assert abs(a - b) <= 0.01 * max(1.0, abs(b)), (name, a, b)
    # made once: a second seed reuses the caches
    again = _run(work, "--stage", "student_wordkd", "--stop-stage", "student_wordkd", "--seed", "4",
                 "--teacher-cache", "1", timeout=600)
    assert again.returncode == 0 and "skip en-de.teacher_cache_ls" in again.stderr, again.stderr[-3000:]


def test_bad_teacher_cache_value_is_refused(tmp_path):
    res = _run(tmp_path / "w", "--teacher-cache", "yes", "--stop-stage", "prepare", timeout=120)
    assert res.returncode != 0 and "TEACHER_CACHE: 'yes' is not 0 or 1" in res.stderr
    assert not (tmp_path / "w" / "raw").exists()
