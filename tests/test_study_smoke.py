"""lskd-study at smoke scale, end to end on the real data (Multi30k + CIFAR-10):
every table and figure is written, and a second invocation skips every finished run.

Takes a few minutes on 2 CPU cores (the whole point of the smoke scale)."""

import re
import time

import pytest

from conftest import SHARED_DATA, run_cli

FIGURES = [
    "fig1_projection.png", "fig4_mean_softmax.png", "fig5_curves_vision.png", "fig5_curves_nmt.png",
    "fig_temperature.png", "fig_temperature_nmt.png", "fig_reliability_vision.png", "fig_reliability_nmt.png",
]
TABLE_HEADINGS = [
    "## Claims",
    "## Teachers with and without LS: accuracy and 1-S (compare: paper Table 1)",
    "## Distillation at T = 1, soft labels only (compare: paper Table 2)",
    "## Student accuracy against temperature (compare: Chandrasegaran et al.)",
    "## Long-tailed CIFAR-10, imbalance 10",
    "## Multi30k en-de NMT",
    "## Figures",
    "## Runs",
]


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    if not (SHARED_DATA / "multi30k").is_dir() or not (SHARED_DATA / "cifar10").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    out = tmp_path_factory.mktemp("study") / "smoke"
    t0 = time.time()
    proc = run_cli(["lskd-study", "--scale", "smoke", "--out", out], timeout=1200)
    return out, proc, time.time() - t0


def test_smoke_study_writes_every_table_and_figure(smoke_study):
    out, proc, _ = smoke_study
    log = proc.stdout
    # progress: which run (i/N), which epoch / update, time left
    assert re.search(r"run \d+/\d+ vision/teacher_ls: epoch 1/1 \| elapsed .* study left ~", log)
    assert re.search(r"run \d+/\d+ nmt/\w+: .*done in", log)
    report = (out / "report.md").read_text()
    for h in TABLE_HEADINGS:
        assert h in report, h
    assert "nothing can be concluded" in report
    assert "Incomplete" not in report
    # the paper's numbers sit beside the measured ones
    for paper_value in ("0.3106", "71.816", "68.860", "24.91"):
        assert paper_value in report
    # measured values are present: teachers' 1-S, the NMT BLEU of all seven models
    assert re.search(r"\*\*this study\*\*: CIFAR-10 resnet8 \| \d+\.\d+ / \d+\.\d+ \| 0\.\d{4}", report)
    nmt = report.split("## Multi30k en-de NMT")[1].split("## Figures")[0]
    rows = [ln for ln in nmt.splitlines() if ln.startswith("| teacher_") or ln.startswith("| student_")]
    assert len(rows) == 7
    for ln in rows:
        updates, bleu = ln.split("|")[5].strip(), ln.split("|")[6].strip()
        assert re.fullmatch(r"\d+\.\d\d", bleu) and int(updates) > 0, ln
    # NMT temperature sweep (T=2 at smoke scale) beside T=1
    temp = report.split("## Student accuracy against temperature")[1].split("## Long-tailed")[0]
    assert re.search(r"\| 2 \| \d+\.\d\d \| \d+\.\d\d \| [-+]\d+\.\d\d \(", temp), temp
    assert (out / "nmt" / "en-de" / "results" / "student_wordkd_ls_T2.json").is_file()
    # long-tailed arm: 8 rows with accuracies; the long-tailed runs trained on n_max * 10^(-c/9) images
    lt = report.split("## Long-tailed CIFAR-10")[1].split("## Multi30k")[0]
    lt_rows = [ln for ln in lt.splitlines() if ln.startswith("| balanced") or ln.startswith("| long-tailed")]
    assert len(lt_rows) == 8
    for ln in lt_rows:
        assert re.fullmatch(r"\d+\.\d\d", ln.split("|")[5].strip()), ln
    import json
    m = json.loads((out / "vision" / "lt_teacher_ls" / "metrics.json").read_text())
    counts = m["dataset"]["train_counts"]
    n_max = max(counts)
    assert counts == [int(n_max * 10 ** (-c / 9) + 1e-9) for c in range(10)]
    assert m["config"]["imbalance_factor"] == 10
    # smoke: no claim is called reproduced or not
    claims = report.split("## Claims")[1].split("## Teachers")[0]
    assert "**reproduced**" not in claims and "**not reproduced**" not in claims
    for f in FIGURES:
        p = out / f
        assert p.is_file() and p.read_bytes()[:4] == b"\x89PNG", f
        assert f"]({f})" in report
    # every figure was drawn from data, none is a "not drawn" placeholder
    assert "not drawn" not in report
    for rid in ("vision__teacher_ls", "nmt__evaluate", "analysis__vision_stability", "analysis__nmt_stability"):
        assert (out / ".done" / f"{rid}.json").is_file()


def test_rerun_skips_finished_runs(smoke_study):
    out, first, _ = smoke_study
    n = int(re.search(r"smoke: (\d+) runs into", first.stdout).group(1))
    markers = {p.name: p.stat().st_mtime for p in (out / ".done").glob("*.json")}
    assert len(markers) == n
    t0 = time.time()
    proc = run_cli(["lskd-study", "--scale", "smoke", "--out", out], timeout=600)
    dt = time.time() - t0
    assert len(re.findall(r": skip \(done: ", proc.stdout)) == n
    assert ": start" not in proc.stdout
    assert f"0 run(s) done now, {n} skipped" in proc.stdout
    assert {p.name: p.stat().st_mtime for p in (out / ".done").glob("*.json")} == markers
    assert (out / "report.md").is_file()
    assert dt < 120


def test_analysis_reruns_when_a_model_it_reads_is_newer(smoke_study):
    """A model retrained after the analysis (its marker is newer) makes the analysis run again;
    nothing else reruns."""
    import os

    out, first, _ = smoke_study
    n = int(re.search(r"smoke: (\d+) runs into", first.stdout).group(1))
    marker = out / ".done" / "vision__lt_teacher_ls.json"
    later = (out / ".done" / "analysis__vision_stability.json").stat().st_mtime + 5
    os.utime(marker, (later, later))
    proc = run_cli(["lskd-study", "--scale", "smoke", "--out", out], timeout=600)
    started = re.findall(r"run \d+/\d+ (\S+): start", proc.stdout)
    assert started == ["analysis/vision_stability"]
    assert len(re.findall(r": skip \(done: ", proc.stdout)) == n - 1
