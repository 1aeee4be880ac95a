"""scripts/archive_study.py keeps a study's report and run records, and nothing large."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "archive_study.py")


def _write(path, text="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_archive_keeps_records_not_checkpoints(tmp_path):
    src = tmp_path / "study"
    for rel in ("report.md", "fig_seeds.png", "invocations.json", ".done/vision__teacher_ls.json",
                "vision/teacher_ls/metrics.json", "vision/teacher_ls/config.json", "vision/teacher_ls/metrics.csv",
                "vision/teacher_ls/checkpoint_best.pt", "vision/cache_teacher_ls_seed1/cache.json",
                "vision/cache_teacher_ls_seed1/epoch_0000.logits.npy", "analysis/vision_teacher_ls.json",
                "analysis/vision_teacher_ls_features.npz", "nmt/en-de/results/teacher_ls.json",
                "nmt/en-de/results/table.md", "nmt/en-de/models/teacher_ls/checkpoint_best.pt",
                "logs/study.log", "logs/nmt__teacher_ls.log"):
        _write(str(src / rel))
    dest = tmp_path / "docs" / "2026-12-06"
    res = subprocess.run([sys.executable, SCRIPT, str(src), str(dest)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    got = sorted(os.path.relpath(os.path.join(r, f), dest) for r, _, fs in os.walk(dest) for f in fs)
    assert got == sorted(["report.md", "fig_seeds.png", "invocations.json", "done/vision__teacher_ls.json",
                          "vision/teacher_ls/metrics.json", "vision/teacher_ls/config.json",
                          "vision/teacher_ls/metrics.csv", "vision/cache_teacher_ls_seed1/cache.json",
                          "analysis/vision_teacher_ls.json", "nmt/en-de/results/teacher_ls.json",
                          "nmt/en-de/results/table.md", "logs/study.log"])
    # a second archive into the same folder is refused, and a folder without a report too
    again = subprocess.run([sys.executable, SCRIPT, str(src), str(dest)], capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr
    empty = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "nothing"), str(tmp_path / "x")],
                           capture_output=True, text=True)
    assert empty.returncode == 2 and "no report.md" in empty.stderr and not (tmp_path / "x").exists()
