"""benchmarks/run_all.py (`make bench`): RATIO lines are parsed and judged against their
targets, and a missing, failing, silent or hanging benchmark shows in the summary instead
of stopping the run. Fake benchmark scripts stand in for the real (slow) ones."""

import importlib.util
import os
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", os.path.join(REPO, "benchmarks", "run_all.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_format_and_parse_round_trip(run_all):
    line = run_all.format_ratio("step_time_kd_top8/ls", 1.2, "<=", 1.35)
    assert line == "RATIO name=step_time_kd_top8/ls value=1.2000 target=<=1.35 ok=True"
    (q,) = run_all.parse_ratios("noise\n" + line + "\nmore noise\n")
    assert (q.name, q.value, q.op, q.target, q.ok, q.problem) == ("step_time_kd_top8/ls", 1.2, "<=", 1.35, True, "")
    assert not run_all.parse_ratios(run_all.format_ratio("x", 0.8, ">=", 0.9))[0].ok
    with pytest.raises(ValueError):
        run_all.format_ratio("has space", 1.0, "<=", 1.0)
    with pytest.raises(ValueError):
        run_all.format_ratio("x", 1.0, "<", 1.0)


def test_verdict_is_recomputed_and_bad_lines_are_flagged(run_all):
    text = "\n".join([
        "RATIO name=a value=1.50 target=<=1.35 ok=True",   # the benchmark's own verdict is wrong
        "RATIO name=b value=0.95 target=>=0.9 ok=True",
        "RATIO name=c value=nan target=>=0.9 ok=False",     # nothing measured
        "RATIO name=d value=1.0 target=about1",             # unreadable target
        "RATIO name=e value=0.3 target=none ok=True",       # a figure without a target
    ])
    a, b, c, d, e = run_all.parse_ratios(text)
    assert not a.ok and "ok=True" in a.problem
    assert b.ok and not b.problem
    assert not c.ok and c.problem and not d.ok and d.problem
    assert e.ok and not e.problem and e.op == ""
    table = run_all.summary([run_all.Result("x.py", "ran", ratios=[a, b, c, d, e])])
    verdicts = {line.split()[1]: line.split("  ")[-1].strip() for line in table.splitlines()[2:]}
    assert verdicts["a"].startswith("CHECK") and verdicts["b"] == "ok" and verdicts["e"] == "info"
    assert verdicts["c"].startswith("CHECK") and verdicts["d"].startswith("CHECK")


def _script(d, name, body):
    (d / name).write_text(textwrap.dedent(body), encoding="utf-8")


def test_summary_shows_every_benchmark_whatever_happened(run_all, tmp_path, monkeypatch, capsys):
    _script(tmp_path, "good.py", """
        print("measuring")
        print("RATIO name=speed value=1.10 target=<=1.35 ok=True")
        print("RATIO name=memory value=1.60 target=<=1.5 ok=False")
    """)
    _script(tmp_path, "crash.py", "raise SystemExit('crash: no data found')\n")
    _script(tmp_path, "silent.py", "print('done, but no ratio')\n")
    _script(tmp_path, "hang.py", "import time\nprint('RATIO name=early value=1 target=<=2 ok=True', flush=True)\n"
                                 "time.sleep(60)\n")
    monkeypatch.setattr(run_all, "HERE", str(tmp_path))
    monkeypatch.setattr(run_all, "BENCHMARKS", [("good.py", []), ("crash.py", []), ("silent.py", []),
                                                 ("absent.py", []), ("hang.py", [])])
    rc = run_all.main(["--timeout", "5"])
    out = capsys.readouterr().out
    table = out[out.index("=== summary"):]
    rows = {tuple(line.split()[:2]): line for line in table.splitlines()[3:]}
    assert rc == 1
    assert rows[("good.py", "speed")].rstrip().endswith("ok")
    assert rows[("good.py", "memory")].rstrip().endswith("MISSED")
    assert "FAILED: exit 1: crash: no data found" in rows[("crash.py", "–")]
    assert "FAILED: printed no RATIO line" in rows[("silent.py", "–")]
    assert "MISSING" in rows[("absent.py", "–")]
    assert "TIMEOUT" in rows[("hang.py", "–")] and ("hang.py", "early") in rows


def test_all_ok_only_when_every_ratio_meets_its_target(run_all, tmp_path, monkeypatch, capsys):
    _script(tmp_path, "good.py", "print('RATIO name=speed value=1.10 target=<=1.35 ok=True')\n")
    monkeypatch.setattr(run_all, "HERE", str(tmp_path))
    monkeypatch.setattr(run_all, "BENCHMARKS", [("good.py", [])])
    assert run_all.main([]) == 0
    assert run_all.main(["--only", "good.py"]) == 0
    with pytest.raises(SystemExit):
        run_all.main(["--only", "nope.py"])
