"""lskd-study's bad inputs: each row gives the arguments, the exit code and the message expected,
and checks that nothing a rerun would trust (an output folder, a report, a figure) is left behind."""

import re

import pytest

from conftest import run_cli

# (id, arguments after lskd-study (OUT and EMPTY are replaced), expected exit code, message regex,
#  whether OUT may exist afterwards)
ROWS = [
    ("data folder missing", ["--scale", "smoke", "--out", "OUT", "--data", "NOWHERE"], 2,
     r"--data .*NOWHERE: no such folder.*cifar10/ and multi30k/", False),
    ("data folder without the data", ["--scale", "smoke", "--out", "OUT", "--data", "EMPTY"], 2,
     r"data not found: .*EMPTY/cifar10/cifar10_jpg\.tar\.gz, .*EMPTY/multi30k\. .*--data DIR or LSKD_SHARED_DATA",
     False),
    ("vision only, no CIFAR-10", ["--scale", "smoke", "--out", "OUT", "--data", "EMPTY", "--only", "vision"], 2,
     r"data not found: .*EMPTY/cifar10/cifar10_jpg\.tar\.gz\.", False),
    ("seeds below one", ["--scale", "smoke", "--out", "OUT", "--seeds", "0"], 2, r"--seeds must be at least 1", False),
    ("dry run writes nothing", ["--scale", "cpu", "--out", "OUT", "--dry-run", "--seeds", "2"], 0,
     r"vision/student_ls_T1_seed2.*--seed 2.*estimated: .* on 2 job slot", False),
    ("report of a study that never ran", ["--scale", "smoke", "--out", "OUT", "--report-only"], 1,
     r"nothing to report: .*OUT does not exist", False),
    # where the runs go (lskd_study.launchers): refused before anything starts or is submitted
    ("--gpus on a machine without CUDA", ["--scale", "smoke", "--out", "OUT", "--gpus", "0,1"], 2,
     r"--gpus 0,1: this machine has no CUDA device .*leave --gpus out to run on the CPU", False),
    ("--gpus listing one GPU twice", ["--scale", "smoke", "--out", "OUT", "--gpus", "0,1,1"], 2,
     r"--gpus 0,1,1: GPU 1 listed twice; runs must not share a GPU", False),
    ("--gpus that is not a list", ["--scale", "smoke", "--out", "OUT", "--gpus", "a,b"], 2,
     r"--gpus a,b: not a GPU id list", False),
    ("--gpus with the Slurm launcher", ["--scale", "smoke", "--out", "OUT", "--launcher", "slurm", "--gpus", "2"], 2,
     r"--gpus is for the local launcher.*use --slurm-gpus-per-run", False),
    ("a Slurm option without the Slurm launcher", ["--scale", "smoke", "--out", "OUT", "--slurm-partition", "gpu"], 2,
     r"--slurm-partition needs --launcher slurm", False),
    ("an sbatch option lskd-study sets itself", ["--scale", "smoke", "--out", "OUT", "--launcher", "slurm",
                                                 "--slurm-sbatch-args", "--qos=high --time=10"], 2,
     r"--slurm-sbatch-args: --time is set by lskd-study from --slurm-time; use that instead", False),
    ("--runs matching no run", ["--scale", "smoke", "--out", "OUT", "--runs", "vision/nosuch*"], 2,
     r"--runs vision/nosuch\*: no run of this plan matches \(lskd-study --dry-run lists them\)", False),
]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_study_refuses_bad_input(tmp_path, row):
    _, args, rc, pattern, out_may_exist = row
    if "--gpus" in args and "0,1" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA: the no-CUDA refusal cannot show here")
    out, empty = tmp_path / "OUT", tmp_path / "EMPTY"
    empty.mkdir()
    sub = {"OUT": str(out), "EMPTY": str(empty), "NOWHERE": str(tmp_path / "NOWHERE")}
    proc = run_cli(["lskd-study"] + [sub.get(a, a) for a in args], check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == rc, text
    assert re.search(pattern.replace("OUT", re.escape(str(out))).replace("EMPTY", re.escape(str(empty)))
                     .replace("NOWHERE", re.escape(str(tmp_path / "NOWHERE"))), text, re.S), text
    assert "Traceback" not in text
    assert out_may_exist or not out.exists()


def test_report_only_without_finished_models_exits_non_zero_and_writes_no_report(tmp_path):
    """A study folder whose runs all failed: --report-only says so and leaves no report or figure
    (an empty figure must not look like a result)."""
    out = tmp_path / "OUT"
    (out / "logs").mkdir(parents=True)
    (out / "fig1_projection.png").write_bytes(b"\x89PNG stale")
    proc = run_cli(["lskd-study", "--scale", "smoke", "--out", out, "--report-only"], check=False, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no report written: no model has finished" in proc.stdout
    assert not (out / "report.md").exists() and not list(out.glob("*.png"))


def test_help_documents_the_data_options():
    text = run_cli(["lskd-study", "--help"]).stdout
    assert "--data DIR" in text and "LSKD_SHARED_DATA" in text and "--seeds" in text
