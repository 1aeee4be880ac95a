"""Shared fixtures: a small real corpus (Multi30k from ../shared/data) and tiny
fairseq models trained on it for a few updates. Built once per test session.

Fixtures:
  nmt_data      -> Path of a data-bin (en->de, lowercased, whitespace tokens),
                   with the raw text files beside it (train.en, train.de, ...)
  nmt_teacher   -> Path of a teacher checkpoint trained with LS 0.1 on nmt_data
  run_cli(...)  -> helper to run a console command with a clean environment

Helpers:
  require_data(rel, what) -> the path of shared data under SHARED_DATA; when it is missing the
                   test fails (with CI=true in the environment) or skips naming what to fetch
  assert_png_drawn(path)  -> the PNG is an image with something drawn in colour on it
"""

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "lskd_fairseq"
# as lskd-study finds it: $LSKD_SHARED_DATA, else ../shared/data beside the checkout
SHARED_DATA = Path(os.environ.get("LSKD_SHARED_DATA") or REPO.parent / "shared" / "data")
BIN = Path(sys.executable).parent

# A tiny transformer: fast enough for tests on two CPU cores.
TINY_ARCH = (
    "--arch transformer --encoder-layers 1 --decoder-layers 1 "
    "--encoder-embed-dim 32 --decoder-embed-dim 32 "
    "--encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 "
    "--encoder-attention-heads 2 --decoder-attention-heads 2"
).split()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_data(rel, what: str) -> Path:
    """``SHARED_DATA / rel`` (a file or folder), which must exist.

    Missing, it fails the test under CI (``CI=true``): CI machines have the data, so a missing
    folder is a broken setup, not a reason to pass. Elsewhere the test skips, saying which path
    was looked for and what it should hold."""
    path = SHARED_DATA / rel
    if path.exists():
        return path
    msg = (f"shared data missing: {path} (should hold {what}; see ../shared/data/README.md, "
           f"or point LSKD_SHARED_DATA at a folder that has it)")
    if _in_ci():
        pytest.fail(msg + " [CI=true: missing data fails]", pytrace=False)
    pytest.skip(msg)


def assert_png_drawn(path, min_colours: int = 16, min_coloured: float = 0.0025):
    """``path`` is a PNG on which something was drawn: many distinct colours, and a share of
    chromatic pixels (the data: lines, bars and points are coloured; axes and text are grey).

    Measured with lskd-plot's figures of tests/test_analysis.py: 0.36% to 51% of the pixels are
    coloured; with the data removed (axes, ticks and legend kept) 0.10% to 0.13%, blank 0%."""
    import numpy as np
    from matplotlib import image

    path = Path(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    img = image.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50, (path, img.shape)
    rgb = img[..., :3].reshape(-1, 3)
    colours = len(np.unique((rgb * 255).round().astype(np.uint8), axis=0))
    assert colours >= min_colours, (path, colours)
    assert float(rgb.std()) > 0.02, (path, float(rgb.std()))
    coloured = float(((rgb.max(axis=1) - rgb.min(axis=1)) > 0.15).mean())
    assert coloured >= min_coloured, (path, coloured)
    return {"colours": colours, "coloured": coloured}


def cli_env():
    from lskd_fairseq.warning_filters import subprocess_env

    env = subprocess_env()  # as the recipes and the study run them: library notices by name only
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def run_cli(args, cwd=None, check=True, timeout=600):
    """Run a console script from the venv; return CompletedProcess with text output."""
    args = [str(a) for a in args]
    exe = BIN / args[0]
    cmd = [str(exe) if exe.exists() else args[0]] + args[1:]
    proc = subprocess.run(
        cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n--- stdout ---\n"
            f"{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc


def train_inner(proc):
    """The per-update json records fairseq logs with --log-format json --log-interval 1."""
    out = []
    for line in (proc.stdout + proc.stderr).splitlines():
        if "| train_inner |" in line:
            out.append(json.loads(line.split("| train_inner |", 1)[1]))
    return out


def _tokenize(line: str) -> str:
    line = line.strip().lower()
    return " ".join(re.sub(r"([.,!?;:\"()])", r" \1 ", line).split())


def write_corpus(dest: Path, n_train: int = 1500, n_valid: int = 100, n_test: int = 100):
    """Lowercased, whitespace-tokenized Multi30k subsets: train/valid/test .en/.de."""
    src = require_data("multi30k", "Multi30k task 1 en-de: train/val/test_2016_flickr .en.gz/.de.gz")
    dest.mkdir(parents=True, exist_ok=True)
    for split, name, n in (("train", "train", n_train), ("valid", "val", n_valid), ("test", "test_2016_flickr", n_test)):
        for lang in ("en", "de"):
            with gzip.open(src / f"{name}.{lang}.gz", "rt", encoding="utf-8") as f:
                lines = [_tokenize(next(f)) for _ in range(n)]
            (dest / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def preprocess(text_dir: Path, dest: Path, extra=()):
    run_cli(
        [
            "fairseq-preprocess", "--source-lang", "en", "--target-lang", "de",
            "--trainpref", text_dir / "train", "--validpref", text_dir / "valid",
            "--testpref", text_dir / "test", "--destdir", dest,
            "--thresholdsrc", "2", "--thresholdtgt", "2", "--workers", "1", *extra,
        ]
    )
    return dest


def train_args(data, save_dir, max_update, *extra, seed=1):
    return [
        "fairseq-train", data, "--cpu", *TINY_ARCH,
        "--optimizer", "adam", "--lr", "0.002", "--max-tokens", "1500",
        "--max-update", str(max_update), "--save-dir", save_dir,
        "--no-epoch-checkpoints", "--seed", str(seed),
        "--log-format", "json", "--log-interval", "1", "--dropout", "0.1",
        *extra,
    ]


@pytest.fixture(scope="session")
def nmt_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("nmt")
    text = write_corpus(root / "text")
    return preprocess(text, root / "bin")


@pytest.fixture(scope="session")
def nmt_teacher(nmt_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("teacher")
    run_cli(train_args(nmt_data, save, 40, "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"))
    return save / "checkpoint_last.pt"


def _slurm_answers() -> str:
    """'' when a Slurm with accounting answers here, else why not."""
    import shutil

    if shutil.which("sbatch") is None:
        return "no sbatch on PATH"
    for cmd in (["scontrol", "ping"], ["sinfo", "-h"], ["sacct", "-n", "-X", "--starttime", "now-1minutes"]):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{' '.join(cmd)}: {e}"
        if p.returncode != 0 or (cmd[0] == "scontrol" and "UP" not in p.stdout):
            return f"{' '.join(cmd)}: {(p.stderr or p.stdout).strip()[-200:]}"
    return ""


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real Slurm (slurmctld, slurmd, slurmdbd) answering on this machine, as started by
    ``scripts/slurm_local.sh start`` (.ci/run starts it). Without one the test fails under CI
    (CI=true or LSKD_REQUIRE_SLURM=1) and skips elsewhere, saying how to start it."""
    why = _slurm_answers()
    if why:
        msg = f"no Slurm answers here ({why}); start one: sudo bash scripts/slurm_local.sh start"
        if _in_ci() or os.environ.get("LSKD_REQUIRE_SLURM") == "1":
            pytest.fail(msg + " [CI: a missing Slurm fails]", pytrace=False)
        pytest.skip(msg)
    return True
