"""One output convention (issue 20 §3): library code logs under ``lskd.*``; commands speak
through ``lskd_fairseq.console`` (``--quiet`` keeps results and errors only); library warnings
are silenced by name (``lskd_fairseq.warning_filters``), never by an ignore-everything
warnings setting, so every other warning is shown."""

import re
import subprocess
import sys
from pathlib import Path

from lskd_fairseq.warning_filters import subprocess_env
from lskd_vision.synthetic import make_image_folder
from lskd_vision.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
CODE = [p for d in ("lskd_fairseq", "vision", "study") for p in (REPO / d).rglob("*.py")]
SCRIPTS = CODE + list((REPO / "benchmarks").glob("*.py")) + list((REPO / "recipes").rglob("*.sh")) + \
    list((REPO / "scripts").glob("*")) + list((REPO / "tests").glob("*.py")) + [REPO / ".ci" / "run"]


def test_no_blanket_warning_filter_anywhere():
    blanket = re.compile(r"PYTHONWARNINGS\W{0,4}(=|,)\W{0,3}ignore\b|simplefilter\(\s*[\"']ignore")
    found = [str(p.relative_to(REPO)) for p in SCRIPTS if p.is_file() and p.name != Path(__file__).name
             and blanket.search(p.read_text(encoding="utf-8", errors="replace"))]
    assert not found, found


def test_library_code_prints_and_logs_only_through_the_convention():
    prints = [f"{p.relative_to(REPO)}:{i}" for p in CODE if p.name != "console.py"
              for i, line in enumerate(p.read_text().splitlines(), 1) if re.match(r"\s*print\(", line)]
    assert not prints, prints
    loggers = [f"{p.relative_to(REPO)}:{i}" for p in CODE if p.name != "console.py"
               for i, line in enumerate(p.read_text().splitlines(), 1) if "logging.getLogger(" in line
               and "setLevel" not in line]
    assert not loggers, loggers  # console.get_logger: names under lskd.*


def _child(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                          timeout=300, cwd=REPO)


def test_a_child_process_hides_the_named_notices_and_shows_every_other_warning():
    proc = _child("import warnings, lskd_fairseq\n"
                  "warnings.warn('The strict flag in the compose API is deprecated', UserWarning)\n"
                  "warnings.warn('lskd-test: a warning of our own', UserWarning)\n"
                  "warnings.warn('lskd-test: a deprecation of our own', FutureWarning)\n")
    assert proc.returncode == 0, proc.stderr
    assert "strict flag" not in proc.stderr
    assert "a warning of our own" in proc.stderr and "a deprecation of our own" in proc.stderr


def test_fairseq_imports_without_its_known_notices():
    """fairseq's import raises torch's torch.jit.script notice before lskd's code runs; the exact
    PYTHONWARNINGS entry hides it (without it, it is shown: the first assertion checks that)."""
    code = "import fairseq.models.transformer, fairseq.tasks.translation"
    loud = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=300)
    assert "torch.jit.script" in loud.stderr
    quiet = _child(code)
    assert quiet.returncode == 0 and "Warning" not in quiet.stderr, quiet.stderr


def test_quiet_keeps_the_result_and_drops_the_progress(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "data"), num_classes=3, per_class=6, test_per_class=1, size=8)
    common = [data, "--model", "mlp", "--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-progress"]
    assert train_main(common + ["--output", str(tmp_path / "loud")]) == 0
    loud = capsys.readouterr().out
    assert train_main(common + ["--output", str(tmp_path / "quiet"), "--quiet"]) == 0
    quiet = capsys.readouterr().out
    assert "epoch 1/1" in loud and "epoch 1/1" not in quiet
    assert len(quiet.strip().splitlines()) == 1 and quiet.startswith("done in ") and "metrics.json" in quiet
