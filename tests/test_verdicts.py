"""The study's statistics and verdicts on synthetic per-seed results whose right answer is known:
the Student-t quantile and interval against published values, each of the four verdicts
(reproduced, contradicted, equivalent within ±m, inconclusive) from the claim code, a
non-significant difference with a wide interval that must stay inconclusive, the study's
accounts of time, and a report that is not written when no model finished."""

import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from lskd_study import stats, study_plan
from lskd_study.stats import CONTRADICTED, INCONCLUSIVE, REPRODUCED

# Student-t quantiles from standard tables (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2)
T_TABLE = [
    (0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 3, 3.182), (0.975, 4, 2.776), (0.975, 9, 2.262),
    (0.975, 29, 2.045), (0.95, 1, 6.314), (0.95, 2, 2.920), (0.95, 4, 2.132), (0.95, 10, 1.812),
    (0.99, 5, 3.365), (0.975, 100, 1.984),
]


@pytest.mark.parametrize("q,df,want", T_TABLE)
def test_t_quantile_matches_the_table(q, df, want):
    assert stats.t_ppf(q, df) == pytest.approx(want, abs=6e-4)
    assert stats.t_ppf(1 - q, df) == pytest.approx(-want, abs=6e-4)
    assert stats.t_cdf(stats.t_ppf(q, df), df) == pytest.approx(q, abs=1e-9)


def test_t_quantile_against_closed_forms_and_the_normal_limit():
    # df = 1 is the Cauchy distribution: quantile tan(pi (q - 1/2)); df = 2: (2q-1) sqrt(2 / (4q(1-q)))
    for q in (0.6, 0.9, 0.975, 0.995):
        assert stats.t_ppf(q, 1) == pytest.approx(math.tan(math.pi * (q - 0.5)), rel=1e-8)
        assert stats.t_ppf(q, 2) == pytest.approx((2 * q - 1) * math.sqrt(2 / (4 * q * (1 - q))), rel=1e-8)
    assert stats.t_ppf(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    assert stats.t_ppf(0.5, 3) == 0.0
    with pytest.raises(ValueError):
        stats.t_ppf(1.0, 3)


def test_t_interval_of_known_values():
    iv = stats.t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, se 1/sqrt(3)
    se = 1 / math.sqrt(3)
    assert (iv.n, iv.mean, iv.sd) == (3, 2.0, pytest.approx(1.0))
    assert iv.lo95 == pytest.approx(2 - 4.302653 * se, abs=1e-5)
    assert iv.hi95 == pytest.approx(2 + 4.302653 * se, abs=1e-5)
    assert iv.lo_one == pytest.approx(2 - 2.919986 * se, abs=1e-5)
    one = stats.t_interval([0.7])
    assert not one.has_interval and one.mean == 0.7 and one.lo95 is None


def test_tests_give_each_verdict():
    m = 0.5
    ni = stats.noninferiority
    assert ni(stats.t_interval([0.3, 0.5, 0.4]), m) == REPRODUCED
    assert ni(stats.t_interval([-0.1, -0.2, -0.15]), m) == REPRODUCED  # worse, but by less than the margin
    assert ni(stats.t_interval([-2.0, -2.2, -1.9]), m) == CONTRADICTED
    wide = stats.t_interval([1.0, -2.0, 0.5])  # not significant either way, wide interval
    assert wide.lo95 < 0 < wide.hi95
    assert ni(wide, m) == INCONCLUSIVE
    sup = stats.superiority
    assert sup(stats.t_interval([1.0, 1.2, 0.9]), m) == REPRODUCED
    assert sup(stats.t_interval([-1.0, -1.2, -0.9]), m) == CONTRADICTED
    assert sup(stats.t_interval([0.05, -0.05, 0.02, -0.03, 0.01]), m) == stats.equivalent(m)
    assert sup(wide, m) == INCONCLUSIVE  # no significant difference is not equivalence
    assert sup(stats.t_interval([0.4]), m) == INCONCLUSIVE  # one seed: no interval, no verdict


def test_seeds_needed_is_the_smallest_n_that_clears_the_bound():
    iv = stats.t_interval([0.4, -0.6, 0.2, -0.1])  # mean -0.025
    n = stats.seeds_needed(iv, -0.5, one_sided=True)
    gap = iv.mean + 0.5

    def clears(k):
        return stats.t_ppf(0.95, k - 1) * iv.sd / math.sqrt(k) < gap

    assert n is not None and clears(n) and not clears(n - 1)
    assert stats.seeds_needed(stats.t_interval([0.5]), 0.0) is None


def test_sign_test():
    assert stats.sign_test(10, 10) == pytest.approx(1 / 1024)
    assert stats.sign_test(0, 10) == 1.0
    assert stats.sign_test(8, 10) == pytest.approx(56 / 1024)


# ------------------------------------------------------------------ claims on synthetic results
SEEDS = [1, 2, 3]


def _vm(top1, n=10000, loss=1.0):
    return {"test": {"top1": top1, "top5": 99.0, "num_images": n}, "train_last_epoch": {"train_loss": loss},
            "config": {"num_classes": 10}}


def _study(scale="cpu", seeds=SEEDS):
    return SimpleNamespace(scale_name=scale, scale=study_plan.SCALE_DEFS[scale], seeds=list(seeds))


def _data(ls_t1=(80.3, 79.8, 80.6), nols_t1=(80.0, 79.6, 80.2), ls_t4=None, nols_t4=None,
          word_ls=(32.0, 31.8, 32.3), word_nols=(31.0, 31.1, 31.2)):
    vm = {"teacher_ls": _vm(85.0), "teacher_nols": _vm(85.0)}
    nm = {"teacher_ls": {"bleu": 35.0}, "teacher_nols": {"bleu": 34.0}}
    ls_t4 = ls_t4 or nols_t1
    nols_t4 = nols_t4 or nols_t1
    for i, s in enumerate(SEEDS):
        sn = study_plan.seed_name
        vm[sn("student_ls_T1", s)] = _vm(ls_t1[i], loss=0.9)
        vm[sn("student_nols_T1", s)] = _vm(nols_t1[i], loss=0.3)
        vm[sn("student_ls_T2", s)] = _vm(nols_t1[i])
        vm[sn("student_nols_T2", s)] = _vm(nols_t1[i])
        vm[sn("student_ls_T4", s)] = _vm(ls_t4[i])
        vm[sn("student_nols_T4", s)] = _vm(nols_t4[i])
        nm[sn("student_wordkd_ls", s)] = {"bleu": word_ls[i]}
        nm[sn("student_wordkd_nols", s)] = {"bleu": word_nols[i]}
        nm[sn("student_nokd", s)] = {"bleu": 30.0 + 0.1 * i}
        nm[sn("student_seqkd_ls", s)] = {"bleu": 31.0 + 0.1 * i}
        nm[sn("student_seqkd_nols", s)] = {"bleu": 31.2 + 0.1 * i}
    vs = {"teacher_ls": {"one_minus_S": 0.10, "per_class": [0.10] * 10, "calibration": {"ece": 0.02},
                         "mean_entropy": 0.6},
          "teacher_nols": {"one_minus_S": 0.12, "per_class": [0.12] * 10, "calibration": {"ece": 0.06},
                           "mean_entropy": 0.2}}
    return {"vision": vm, "vstab": vs, "nmt": nm, "nstab": {}, "seeds": list(SEEDS)}


def _verdicts(d, scale="cpu"):
    from lskd_study.verdicts import claims

    return {r.key: r for r in claims(_study(scale), d)}


def test_every_row_shows_its_interval_n_and_test():
    rows = _verdicts(_data())
    r = rows["kd_t1"]
    assert r.verdict == REPRODUCED  # +0.23 points, lower bound above -0.5
    assert r.n == "3 seeds" and "lower bound" in r.interval and "non-inferiority" in r.test
    assert "± " in r.measured and "(n = 3)" in r.measured  # mean ± std over seeds, n
    for row in rows.values():
        assert row.verdict and row.test and row.n


def test_kd_t1_verdicts():
    assert _verdicts(_data(ls_t1=(77.8, 77.5, 78.0)))["kd_t1"].verdict == CONTRADICTED  # ~2.2 points worse
    # a non-significant difference with a wide interval: never "as good"
    r = _verdicts(_data(ls_t1=(81.0, 77.6, 80.7)))["kd_t1"]
    assert r.verdict == INCONCLUSIVE
    assert "seeds" in r.change and "margin" in r.change  # what would change the verdict


def test_nmt_word_kd_gives_all_four_verdicts():
    assert _verdicts(_data())["nmt_word_kd"].verdict == REPRODUCED  # +0.93 BLEU, tight
    assert _verdicts(_data(word_ls=(30.0, 30.1, 30.2)))["nmt_word_kd"].verdict == CONTRADICTED
    eq = _verdicts(_data(word_ls=(31.02, 31.08, 31.21)))["nmt_word_kd"]
    assert eq.verdict == "equivalent within ±0.5"
    wide = _verdicts(_data(word_ls=(33.0, 29.5, 31.5)))["nmt_word_kd"]
    assert wide.verdict == INCONCLUSIVE and "exclude 0" in wide.change


def test_temperature_needs_a_significant_fall_behind_at_the_largest_t():
    behind = _verdicts(_data(ls_t4=(78.0, 77.7, 78.1)))
    assert behind["temperature"].verdict in (REPRODUCED,)
    level = _verdicts(_data(ls_t4=(80.02, 79.58, 80.21)))
    assert level["temperature"].verdict.startswith("equivalent within")
    ahead = _verdicts(_data(ls_t4=(81.5, 81.0, 81.6)))
    assert ahead["temperature"].verdict == CONTRADICTED


def test_long_tail_is_paired_by_seed(monkeypatch):
    import dataclasses

    d = _data()
    sn = study_plan.seed_name
    d["vision"].update({"lt_teacher_ls": _vm(60.0), "lt_teacher_nols": _vm(63.0)})
    for i, s in enumerate(SEEDS):  # balanced gain ~ +0.3; long-tailed gain ~ -2: LS helps less
        d["vision"][sn("lt_student_ls_T1", s)] = _vm(55.0 + 0.1 * i)
        d["vision"][sn("lt_student_nols_T1", s)] = _vm(57.0 + 0.15 * i)
    # scales with the long-tailed arm
    assert _verdicts(d, "full")["long_tail"].verdict == REPRODUCED
    assert _verdicts(d, "cpu")["long_tail"].verdict == REPRODUCED
    assert _verdicts(_data(), "full")["long_tail"].verdict == INCONCLUSIVE  # long-tailed runs missing
    # a scale without it
    cpu = study_plan.SCALE_DEFS["cpu"]
    no_arm = dataclasses.replace(cpu, vision=dataclasses.replace(cpu.vision, long_tail_imbalance=0))
    monkeypatch.setitem(study_plan.SCALE_DEFS, "no_arm", no_arm)
    assert _verdicts(d, "no_arm")["long_tail"].verdict == "not tested by this study"


def test_seq_kd_and_erasure_and_smoke():
    rows = _verdicts(_data())
    assert rows["nmt_seq_kd"].verdict == REPRODUCED  # +1.0 and +1.2 BLEU over the no-KD student, every seed
    assert rows["erasure"].verdict == REPRODUCED  # lower 1-S with LS in 10 of 10 classes (sign test)
    assert rows["fig5"].verdict == REPRODUCED
    smoke = _verdicts(_data(), scale="smoke")
    assert {r.verdict for k, r in smoke.items() if k != "long_tail"} == {INCONCLUSIVE}


# every claim about students, by the teachers it depends on (study/verdicts.py: vision_trained, nmt_trained)
VISION_STUDENT_CLAIMS = ("kd_t1", "fig5", "temperature", "long_tail")
NMT_STUDENT_CLAIMS = ("nmt_word_kd", "nmt_seq_kd", "temperature")


def _decided_data():
    """Data on which every student claim is decided (none inconclusive): the vision temperature
    track is switched off (students at T=2 and 4 missing) so that temperature is decided by NMT
    alone, and the long-tailed arm is there (full scale)."""
    d = _data()
    sn = study_plan.seed_name
    for i, s in enumerate(SEEDS):
        for t in ("T2", "T4"):
            del d["vision"][sn(f"student_ls_{t}", s)], d["vision"][sn(f"student_nols_{t}", s)]
            # NMT sweep: the LS teacher's student falls behind at the largest T
            d["nmt"][sn(f"student_wordkd_ls_{t}", s)] = {"bleu": (31.5 if t == "T2" else 29.0) + 0.1 * i}
            d["nmt"][sn(f"student_wordkd_nols_{t}", s)] = {"bleu": 31.0 + 0.12 * i}
        d["vision"][sn("lt_student_ls_T1", s)] = _vm(55.0 + 0.1 * i)
        d["vision"][sn("lt_student_nols_T1", s)] = _vm(57.0 + 0.15 * i)
    d["vision"].update({"lt_teacher_ls": _vm(60.0), "lt_teacher_nols": _vm(63.0)})
    return d


def _vision_decided_temperature(d):
    """The vision temperature track back (LS-teacher student behind at T=4), the NMT sweep gone."""
    sn = study_plan.seed_name
    for i, s in enumerate(SEEDS):
        for t in ("T2", "T4"):
            del d["nmt"][sn(f"student_wordkd_ls_{t}", s)], d["nmt"][sn(f"student_wordkd_nols_{t}", s)]
            d["vision"][sn(f"student_ls_{t}", s)] = _vm((80.0 if t == "T2" else 78.0) + 0.1 * i)
            d["vision"][sn(f"student_nols_{t}", s)] = _vm(80.0 + 0.1 * i)
    return d


def test_weak_teachers_make_every_student_claim_inconclusive():
    # healthy teachers: every student claim is decided, so an inconclusive verdict below is the guard's
    ok = _verdicts(_decided_data(), "full")
    for key in set(VISION_STUDENT_CLAIMS + NMT_STUDENT_CLAIMS):
        assert ok[key].verdict != INCONCLUSIVE, (key, ok[key].verdict, ok[key].measured)
    assert _verdicts(_vision_decided_temperature(_decided_data()), "full")["temperature"].verdict != INCONCLUSIVE
    # a barely trained CIFAR-10 teacher (20% top-1; chance 10%): every vision student claim
    for weak in ("teacher_ls", "teacher_nols"):
        d = _vision_decided_temperature(_decided_data())
        d["vision"][weak] = _vm(20.0)
        rows = _verdicts(d, "full")
        for key in VISION_STUDENT_CLAIMS:
            assert rows[key].verdict == INCONCLUSIVE, (weak, key, rows[key].verdict)
        assert "teachers barely trained" in rows["kd_t1"].measured and weak in rows["kd_t1"].measured
        for key in ("nmt_word_kd", "nmt_seq_kd"):  # the NMT claims do not depend on the vision teachers
            assert rows[key].verdict == ok[key].verdict, key
    # a barely trained long-tailed teacher: the long-tail claim only
    d = _decided_data()
    d["vision"]["lt_teacher_nols"] = _vm(15.0)
    rows = _verdicts(d, "full")
    assert rows["long_tail"].verdict == INCONCLUSIVE and rows["kd_t1"].verdict == ok["kd_t1"].verdict
    # the NMT weak-teacher guard: a teacher under MIN_NMT_TEACHER_BLEU makes every NMT claim inconclusive
    from lskd_study.verdicts import MIN_NMT_TEACHER_BLEU

    for weak in ("teacher_ls", "teacher_nols"):
        d = _decided_data()
        d["nmt"][weak] = {"bleu": MIN_NMT_TEACHER_BLEU - 0.5}
        rows = _verdicts(d, "full")
        for key in NMT_STUDENT_CLAIMS + ("nmt_teacher",):
            assert rows[key].verdict == INCONCLUSIVE, (weak, key, rows[key].verdict)
        assert "too weak to compare" in rows["nmt_word_kd"].measured, rows["nmt_word_kd"].measured
        assert "too weak to compare" in rows["nmt_seq_kd"].measured, rows["nmt_seq_kd"].measured
        for key in ("kd_t1", "fig5", "long_tail"):  # the vision claims do not depend on the NMT teachers
            assert rows[key].verdict == ok[key].verdict, key
    # at the threshold itself the teachers count as trained
    d = _decided_data()
    d["nmt"]["teacher_nols"] = {"bleu": MIN_NMT_TEACHER_BLEU}
    assert _verdicts(d, "full")["nmt_word_kd"].verdict == ok["nmt_word_kd"].verdict


def test_no_private_sacrebleu_api_in_the_study():
    root = os.path.dirname(study_plan.__file__)
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                text = open(os.path.join(dirpath, f), encoding="utf-8").read()
                for private in ("_extract_corpus_statistics", "_compute_score_from_stats", "_aggregate_and_compute"):
                    assert private not in text, (f, private)


# ------------------------------------------------------------------ accounts and an empty study
def _marker(study, rid, start, end, invocation):
    path = study.marker(rid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"run": rid, "seconds": end - start, "start": start, "end": end, "invocation": invocation}, f)


def test_accounts_sum_makespan_and_one_go(tmp_path):
    from lskd_study.collect import accounts
    from lskd_study.runner import Study

    st = Study("smoke", str(tmp_path / "out"), tracks=("vision",), seeds=1)
    assert not (tmp_path / "out").exists()  # the constructor writes nothing
    ids = [r.id for r in st.runs]
    # two slots: runs overlap; invocation 100 ran everything from t=100 to t=160
    for k, rid in enumerate(ids):
        _marker(st, rid, 100 + 5 * (k // 2), 110 + 5 * (k // 2), 100.0)
    last_end = 110 + 5 * ((len(ids) - 1) // 2)
    with open(st.invocations_path(), "w") as f:
        json.dump([{"start": 100.0, "end": last_end + 3}], f)
    a = accounts(st)
    assert a["sum_s"] == pytest.approx(10 * len(ids))
    assert a["makespan_s"] == pytest.approx(last_end - 100)
    assert a["one_go_s"] == pytest.approx(last_end + 3 - 100)
    # resumed: a second invocation ran the last run later; the gap between them is not counted
    _marker(st, ids[-1], 1000, 1010, 1000.0)
    a = accounts(st)
    assert a["invocations"] == 2 and a["one_go_s"] is None
    assert a["makespan_s"] == pytest.approx((110 + 5 * ((len(ids) - 2) // 2) - 100) + 10)


def test_no_report_and_no_figures_when_no_model_finished(tmp_path):
    from lskd_study.report import write_report
    from lskd_study.runner import Study

    st = Study("smoke", str(tmp_path / "out"), tracks=("vision",), seeds=1)
    st.make_dirs()
    stale = tmp_path / "out" / "fig4_mean_softmax.png"
    stale.write_bytes(b"\x89PNG old")
    (tmp_path / "out" / "report.md").write_text("old report")
    assert write_report(st) is None
    assert not stale.exists() and not (tmp_path / "out" / "report.md").exists()


def test_report_from_synthetic_runs(tmp_path):
    """A vision-only study whose runs left synthetic results: the claims table holds verdict,
    numbers, interval, n and test; students are mean ± std over seeds; the seeds figure and the
    teachers' curves are drawn; a figure without data is named, not drawn."""
    from lskd_study.report import write_report
    from lskd_study.runner import Study

    st = Study("smoke", str(tmp_path / "out"), tracks=("vision",), seeds=2)
    st.make_dirs()
    top1 = {"teacher_ls": 60.0, "teacher_nols": 59.0, "lt_teacher_ls": 50.0, "lt_teacher_nols": 51.0}
    for k, r in enumerate(st.runs):
        if r.kind != "vision_train":
            continue
        name = r.id.split("/", 1)[1]
        base, seed = study_plan.split_seed_name(name)
        run = tmp_path / "out" / "vision" / name
        run.mkdir(parents=True)
        acc = top1.get(name, 40.0 + (1.0 if "_ls_" in base else 0.0) + 0.3 * (seed or 0))
        m = _vm(acc)
        m.update({"best_epoch": 2, "epochs": 2, "selected_on": "val top1",
                  "config": {"num_classes": 10, "ls_convention": "uniform", "arch": "resnet8", "epochs": 2}})
        (run / "metrics.json").write_text(json.dumps(m))
        (run / "metrics.csv").write_text("epoch,train_loss,val_top1\n1,2.0,30\n2,1.5,40\n")
        _marker(st, r.id, 100 + k, 101 + k, 100.0)
    report = write_report(st)
    text = open(report).read()
    claims = text.split("## Claims")[1].split("## Time")[0]
    assert "| claim (paper) | verdict | measured here | interval | n | test |" in claims
    assert "2 seeds" in claims and "non-inferiority" in claims
    assert "Margins: 0.5 points of top-1" in claims
    assert "± 0.00 (n = 2)" in text.split("paper Table 2")[1]  # mean ± std over seeds, with n
    assert "Sum of the runs' own wall times" in text and "Makespan on the 2 job slot(s)" in text
    assert "## Teachers' training: where each stopped and why" in text
    assert (tmp_path / "out" / "fig_seeds.png").is_file() and "](fig_seeds.png)" in text
    assert (tmp_path / "out" / "fig_teacher_curves.png").is_file()
    # no stability results: Fig. 4 is named as not drawn, and there is no picture of it
    assert "Not drawn: a vision teacher's stability result is missing" in text
    assert not (tmp_path / "out" / "fig4_mean_softmax.png").exists()
    assert "| uniform |" in text.split("## Runs")[1]  # the LS convention of each run


def test_students_of_one_seed_are_paired_and_teachers_trained_once(tmp_path):
    """The two teachers' students of a seed get the same --seed and differ only in their teacher;
    teachers are trained once; the NMT students of every seed use the recipe's own --seed."""
    from lskd_study.runner import Study

    st = Study("cpu", str(tmp_path / "out"), seeds=3)
    by = {r.id: r for r in st.runs}
    a, b = st.vision_cmd(by["vision/student_ls_T4_seed3"]), st.vision_cmd(by["vision/student_nols_T4_seed3"])
    diff = [(x, y) for x, y in zip(a, b) if x != y]
    assert len(diff) == 2 and all(y.replace("nols", "ls") == x for x, y in diff)  # --output and the cache only
    assert any(x.endswith("cache_teacher_ls_seed3") for x, _ in diff) and "--teacher" not in a
    assert a[a.index("--seed") + 1] == "3"
    # the cache holds exactly the views of that seed's students: their seed, epochs and data options
    cache = st.vision_cache_cmd(by["vision/cache_teacher_ls_seed3"])
    for opt in ("--seed", "--epochs", "--train-per-class", "--val-fraction"):
        assert cache[cache.index(opt) + 1] == a[a.index(opt) + 1], opt
    assert cache[cache.index("--teacher") + 1].endswith("teacher_ls/checkpoint_best.pt")
    assert by["vision/student_ls_T1_seed3"].deps == by["vision/student_ls_T4_seed3"].deps == ["vision/cache_teacher_ls_seed3"]
    teacher = st.vision_cmd(by["vision/teacher_ls"])
    assert teacher[teacher.index("--train-per-class") + 1] == "0" and "--nesterov" in teacher  # the whole training set
    assert teacher[teacher.index("--epochs") + 1] == str(st.scale.vision.teacher_epochs)
    teachers = sorted(r.id for r in st.runs if "teacher" in r.id and r.kind == "vision_train")
    assert teachers == ["vision/lt_teacher_ls", "vision/lt_teacher_nols", "vision/teacher_ls",
                        "vision/teacher_nols"]  # once per setting and data arm
    # the T=1 pair gets the seeds its verdict needs at the measured seed variance; the other arms keep 3
    from lskd_study import stats, verdicts

    n_t1 = st.scale.t1_seeds
    assert study_plan.T1_MARGIN == verdicts.VISION_MARGIN
    assert stats.t_ppf(0.975, n_t1 - 1) * study_plan.T1_PAIRED_SD / n_t1 ** 0.5 < study_plan.T1_MARGIN
    assert stats.t_ppf(0.975, n_t1 - 2) * study_plan.T1_PAIRED_SD / (n_t1 - 1) ** 0.5 >= study_plan.T1_MARGIN
    assert st.seeds == list(range(1, n_t1 + 1)) and st.base_seeds == 3 and n_t1 > 3
    for name in ("student_ls_T1", "student_nols_T1", "cache_teacher_ls", "cache_teacher_nols"):
        assert [s for s in st.seeds if f"vision/{name}_seed{s}" in by] == st.seeds, name
    for name in ("student_nokd", "student_ls_T4", "lt_student_ls_T1", "cache_lt_teacher_ls"):
        assert [s for s in st.seeds if f"vision/{name}_seed{s}" in by] == [1, 2, 3], name
    extra = by[f"vision/student_nols_T1_seed{n_t1}"]
    assert extra.deps == [f"vision/cache_teacher_nols_seed{n_t1}"] and extra.args["seed"] == n_t1
    full = Study("full", str(tmp_path / "full"), seeds=3)  # a scale with the long-tailed arm
    fby = {r.id: r for r in full.runs}
    lt = full.vision_cmd(fby["vision/lt_teacher_ls"])
    assert lt[lt.index("--val-fraction") + 1] == "0" and lt[lt.index("--imbalance-factor") + 1] == "100"
    lt_cache = full.vision_cache_cmd(fby["vision/cache_lt_teacher_ls_seed2"])
    assert lt_cache[lt_cache.index("--imbalance-factor") + 1] == "100" and lt_cache[lt_cache.index("--train-per-class") + 1] == "0"
    assert sum(1 for r in full.runs if "teacher" in r.id and r.kind == "vision_train") == 4

    # NMT: the recipe's own --seed, one work folder: seed N's students are <name>_s<N> beside the teachers
    main = str(tmp_path / "out" / "nmt")
    for seed in (1, 2):
        cmd = st.recipe_cmd(by[f"nmt/student_wordkd_seed{seed}"])
        assert cmd[cmd.index("--work") + 1] == main and cmd[cmd.index("--seed") + 1] == str(seed)
    assert "--seed" not in st.recipe_cmd(by["nmt/teacher_ls"]) and "--seed" not in st.recipe_cmd(by["nmt/distill"])
    assert by["nmt/student_wordkd_seed2"].args["steps"] == ["student_wordkd_ls_s2", "student_wordkd_nols_s2"]
    assert by["nmt/student_wordkd_seed1"].args["steps"] == ["student_wordkd_ls", "student_wordkd_nols"]
    assert "nmt/evaluate_seed1" in by["nmt/evaluate_seed2"].deps  # the teachers are scored once
    # the NMT track trains the students of the first nmt_seeds seeds only (the vision track all)
    nmt_seeds = st.scale.nmt_seed_list(st.seeds)
    assert nmt_seeds == [1, 2] and "nmt/evaluate_seed3" not in by and "vision/student_nokd_seed3" in by
    # word-KD students read the teachers' caches (made once, before any of them)
    cmd = st.recipe_cmd(by["nmt/student_wordkd_seed2"])
    assert cmd[cmd.index("--teacher-cache") + 1] == "1"
    assert "nmt/teacher_cache" in by["nmt/student_wordkd_seed2"].deps
    assert st.recipe_cmd(by["nmt/teacher_cache"])[st.recipe_cmd(by["nmt/teacher_cache"]).index("--stage") + 1] == "teacher_cache"
    assert study_plan.recipe_name("student_nokd", 3) == "student_nokd_s3"


def test_cpu_plan_fits_its_budget_in_bf16_and_says_so_in_float32():
    """The cpu scale is sized from measured speeds to finish within study_plan.BUDGET_S on 2 slots in
    bfloat16; at float32 speeds the plan says before it starts that it will take longer. A long-tailed
    student or cache is estimated from its own training images (the whole long-tailed copy, ~12,400,
    against 10,000 for a balanced student), not from the teacher's share."""
    code = ("from lskd_study import study_plan as sp\n"
            "r = sp.plan('cpu', '/nonexistent', seeds=3)\n"
            "by = {x.id: x for x in r}\n"
            "lt = sp.long_tail_images(sp.SCALE_DEFS['cpu'])\n"
            "ratio = by['vision/lt_student_ls_T1_seed1'].est_s / by['vision/student_ls_T1_seed1'].est_s\n"
            "assert abs(ratio - lt / 10000) < 1e-9, ratio\n"
            "ratio = by['vision/cache_lt_teacher_ls_seed1'].est_s / by['vision/cache_teacher_ls_seed1'].est_s\n"
            "assert abs(ratio - lt / 10000) < 1e-9, ratio\n"
            "print(sp.estimate_makespan(r, 2), sp.BUDGET_S)\n"
            "print(sp.plan_time_line('cpu', r, 2))\n")
    out = {}
    for prec in ("bfloat16", "float32"):
        env = dict(os.environ, LSKD_STUDY_PRECISION=prec)
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        span, budget = map(float, res.stdout.splitlines()[0].split())
        out[prec] = (span, budget, res.stdout.splitlines()[1])
    span, budget, line = out["bfloat16"]
    assert span <= budget and "LONGER" not in line, line
    span, budget, line = out["float32"]
    assert span > budget and "LONGER than the 2 h" in line and "this CPU runs float32" in line, line
