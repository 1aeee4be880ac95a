"""lskd-bleu: exactly the sacrebleu command line's scores; generate-output handling; tables."""

import json
import os
import random
import subprocess
import sys

import pytest

from conftest import SHARED_DATA, require_data

from lskd_fairseq.atomic import atomic_write_json
from lskd_fairseq.cli import bleu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WMT14 = str(SHARED_DATA / "wmt14")
REF_DE = os.path.join(WMT14, "newstest2014.de.gz")
SRC_EN = os.path.join(WMT14, "newstest2014.en.gz")
BIN = os.path.dirname(sys.executable)


def perturbed(lines):
    """A deterministic, imperfect "system output" derived from the references."""
    out = []
    for i, line in enumerate(lines):
        words = line.split()
        if i % 7 == 0:
            words = words[::-1]
        elif i % 5 == 0:
            words = [w.upper() for w in words]
        else:
            words = [w for j, w in enumerate(words) if j % 4 != 3]
        if i % 11 == 0 and words:
            words[0] = words[0] + "x"
        out.append(" ".join(words))
    return out


def sacrebleu_cli(ref, hyp):
    cmd = [os.path.join(BIN, "sacrebleu"), ref, "-i", hyp, "-m", "bleu", "chrf", "-w", "6", "--format", "json"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return {d["name"]: d for d in json.loads(res.stdout)}


@pytest.fixture(scope="module")
def hyp_file(tmp_path_factory):
    require_data("wmt14/newstest2014.de.gz", "WMT14 newstest2014, German side (3,003 lines, gzipped)")
    path = tmp_path_factory.mktemp("hyp") / "newstest2014.hyp.de"
    path.write_text("".join(l + "\n" for l in perturbed(bleu.read_lines(REF_DE))), encoding="utf-8")
    return str(path)


def test_matches_sacrebleu_command_line_on_newstest2014(hyp_file, tmp_path):
    cli = sacrebleu_cli(REF_DE, hyp_file)
    res = bleu.evaluate(REF_DE, hyp=hyp_file)
    assert res["n_sentences"] == 3003
    assert 5 < res["bleu"] < 95  # a real, imperfect score, not a degenerate one
    assert round(res["bleu"], 6) == cli["BLEU"]["score"]
    assert round(res["chrf"], 6) == cli["chrF2"]["score"]
    assert res["bleu_signature"] == cli["BLEU"]["signature"]
    assert res["chrf_signature"] == cli["chrF2"]["signature"]
    # and through the console script, into JSON
    out = tmp_path / "res.json"
    subprocess.run(
        [os.path.join(BIN, "lskd-bleu"), "score", "--hyp", hyp_file, "--ref", REF_DE, "--json", str(out)],
        check=True, capture_output=True, text=True,
    )
    js = json.loads(out.read_text())
    assert round(js["bleu"], 6) == cli["BLEU"]["score"]
    assert round(js["chrf"], 6) == cli["chrF2"]["score"]


def test_english_side_scores_low_and_uncompressed_reference_agrees(hyp_file, tmp_path):
    # the plain-text reference reads the same as the gzipped one
    plain = tmp_path / "ref.de"
    plain.write_text("".join(l + "\n" for l in bleu.read_lines(REF_DE)), encoding="utf-8")
    assert bleu.evaluate(str(plain), hyp=hyp_file)["bleu"] == bleu.evaluate(REF_DE, hyp=hyp_file)["bleu"]
    # the source side as "translation" is a poor system
    assert bleu.evaluate(REF_DE, hyp=SRC_EN)["bleu"] < 10


def _spm(tmp_path, lines):
    from lskd_fairseq.cli import spm as spm_tool

    raw = tmp_path / "train.txt"
    raw.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    spm_tool.train([str(raw)], str(tmp_path / "spm"), vocab_size=2000)
    import sentencepiece as spm

    return str(tmp_path / "spm.model"), spm.SentencePieceProcessor(model_file=str(tmp_path / "spm.model"))


def _generate_log(piece_lines, order):
    out = ["INFO:fairseq_cli.generate:some log line"]
    for i in order:
        out += [
            f"S-{i}\tsource pieces",
            f"T-{i}\ttarget pieces",
            f"H-{i}\t-0.{i % 9}1\t{piece_lines[i]}",
            f"D-{i}\t-0.{i % 9}1\t{piece_lines[i]}",
            f"P-{i}\t-0.1 -0.2",
        ]
    out.append("Generate test with beam=5: BLEU4 = 1.00")
    return "\n".join(out) + "\n"


def test_generate_output_is_reordered_and_desegmented(tmp_path):
    refs = bleu.read_lines(str(require_data("wmt14/newstest2014.de.gz", "WMT14 newstest2014, German side")))[:400]
    model, sp = _spm(tmp_path, refs)
    pieces = [" ".join(sp.encode(r, out_type=str)) for r in refs]
    assert any(bleu.SPM_SPACE in p for p in pieces)
    order = list(range(len(refs)))
    random.Random(0).shuffle(order)
    gen = tmp_path / "gen.out"
    gen.write_text(_generate_log(pieces, order), encoding="utf-8")
    ref = tmp_path / "ref.de"
    ref.write_text("".join(r + "\n" for r in refs), encoding="utf-8")

    res = bleu.evaluate(str(ref), generate=str(gen), spm_model=model, hyp_out=str(tmp_path / "hyp"))
    assert res["spm_decoded"]
    assert res["bleu"] == pytest.approx(100.0)
    assert res["chrf"] == pytest.approx(100.0)
    assert bleu.read_lines(str(tmp_path / "hyp")) == refs

    # without the sentencepiece model the pieces stay and the score drops
    assert bleu.evaluate(str(ref), generate=str(gen))["bleu"] < 50
    # taken in file order instead of id order, the score collapses
    in_file_order = [bleu.parse_generate(str(gen))[i] for i in order]
    assert bleu.score(bleu.spm_decode(in_file_order, model), refs)["bleu"] < 10


def test_missing_ids_are_refused_and_empty_hypotheses_kept(tmp_path):
    gen = tmp_path / "gen.out"
    gen.write_text("H-0\t-0.5\ta b\nH-2\t-0.1\tc\nH-1\t-1.0\t\n", encoding="utf-8")
    hyps = bleu.parse_generate(str(gen))
    assert hyps == {0: "a b", 1: "", 2: "c"}
    assert bleu.ordered_hypotheses(hyps, 3) == ["a b", "", "c"]
    with pytest.raises(ValueError, match="missing"):
        bleu.ordered_hypotheses(hyps, 4)
    ref = tmp_path / "ref"
    ref.write_text("a b\nx\nc\nd\n", encoding="utf-8")
    with pytest.raises(ValueError):
        bleu.evaluate(str(ref), generate=str(gen))


def test_table_lists_every_model_with_numbers(tmp_path):
    for order, name, b in ((2, "student", 20.5), (1, "teacher", 30.25)):
        atomic_write_json(
            str(tmp_path / f"{name}.json"),
            {"name": name, "order": order, "bleu": b, "chrf": 50.0, "params": 1234567, "train_seconds": 125,
             "bleu_signature": "nrefs:1|sig", "teacher": "teacher" if name == "student" else "–"},
        )
    (tmp_path / "other.json").write_text("[1, 2]")  # not a result: ignored
    rows = bleu.load_results(str(tmp_path))
    assert [r["name"] for r in rows] == ["teacher", "student"]
    table = bleu.markdown_table(rows)
    lines = [l for l in table.splitlines() if l.startswith("| ")]
    assert len(lines) == 4
    assert "| teacher | – | – | – | 30.25 | 50.00 | 1.23M | – | 2.1 min |" in table
    assert "`nrefs:1|sig`" in table
    assert bleu.main(["table", str(tmp_path), "--out", str(tmp_path / "t.md")]) == 0
    assert (tmp_path / "t.md").read_text() == table
