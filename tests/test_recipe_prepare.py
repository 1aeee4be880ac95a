"""The prepare stages of the IWSLT14 and WMT14 recipes on files shaped like the real
releases (their training data cannot be downloaded here), and option handling."""

import os
import subprocess
import sys

from conftest import SHARED_DATA, require_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WMT14 = str(SHARED_DATA / "wmt14" / "newstest2014")


def _run(recipe, *args, timeout=300):
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["DEVICE"] = "cpu"  # no torch import needed for the prepare stage
    return subprocess.run(["bash", os.path.join(REPO, "recipes", recipe, "run.sh"), *args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def _lines(p):
    with open(p, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def _fake_iwslt(d, n_train=100):
    d.mkdir()
    for lang, word in (("de", "Hallo"), ("en", "Hello")):
        rows = ["<url>http://www.ted.com/talks/x.html</url>", "<keywords>talks</keywords>",
                "<talkid>1</talkid>", f"<title>{word} title</title>", f"<description>{word} desc</description>"]
        rows += [f"{word} number {i} ." for i in range(n_train)]
        (d / f"train.tags.de-en.{lang}").write_text("\n".join(rows) + "\n", encoding="utf-8")
        for t in ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011",
                  "IWSLT14.TED.tst2012"):
            segs = "\n".join(f'<seg id="{i}"> {word} {t} {i} </seg>' for i in range(1, 4))
            (d / f"{t}.de-en.{lang}.xml").write_text(
                f'<?xml version="1.0"?>\n<mteval>\n<doc docid="1">\n<talkid>1</talkid>\n{segs}\n</doc>\n</mteval>\n',
                encoding="utf-8")


def test_iwslt14_prepare_splits_like_fairseq(tmp_path):
    data = tmp_path / "de-en"
    _fake_iwslt(data)
    work = tmp_path / "work"
    res = _run("iwslt14_de_en", "--data-dir", str(data), "--work", str(work), "--stop-stage", "prepare")
    assert res.returncode == 0, res.stderr
    raw = work / "raw"
    # 102 text lines (title + description + 100 sentences); every 23rd is validation
    train, valid = _lines(raw / "train.de"), _lines(raw / "valid.de")
    assert len(train) + len(valid) == 102 and len(valid) == 102 // 23
    assert train[0] == "Hallo title" and train[1] == "Hallo desc"
    assert not any("<" in l for l in train + valid)
    assert [l.split()[1:] for l in _lines(raw / "train.en")] == [l.split()[1:] for l in train]
    test = _lines(raw / "test.en")
    assert len(test) == 15 and test[0] == "Hello IWSLT14.TED.dev2010 1" and test[-1] == "Hello IWSLT14.TED.tst2012 3"
    assert (work / ".done" / "prepare").is_file()


def test_iwslt14_without_data_says_what_to_get(tmp_path):
    res = _run("iwslt14_de_en", "--work", str(tmp_path / "w"), "--stop-stage", "prepare")
    assert res.returncode != 0
    assert "train.tags.de-en.de" in res.stderr and "--data-tgz" in res.stderr


def test_wmt14_prepare_cleans_subsets_and_keeps_pairs(tmp_path):
    require_data("wmt14/newstest2014.en.gz", "WMT14 newstest2014, English and German sides (.en.gz, .de.gz)")
    require_data("wmt14/newstest2014.de.gz", "WMT14 newstest2014, English and German sides (.en.gz, .de.gz)")
    corpus = tmp_path / "corpus.de-en"
    en = ["a b c", "", "x " * 300, "one two", "short", "w " * 20]
    de = ["a b c d", "leer", "y", "eins zwei", "lang " * 10, "v " * 21]
    (tmp_path / "corpus.de-en.en").write_text("\n".join(en) + "\n", encoding="utf-8")
    (tmp_path / "corpus.de-en.de").write_text("\n".join(de) + "\n", encoding="utf-8")
    work = tmp_path / "work"
    res = _run("wmt14_en_de", "--work", str(work), "--train-corpora", f"{corpus} {WMT14}",
               "--valid-prefix", WMT14, "--train-lines", "0", "--stop-stage", "prepare")
    assert res.returncode == 0, res.stderr
    raw = work / "raw"
    tr_en, tr_de = _lines(raw / "train.en"), _lines(raw / "train.de")
    # empty, too long and too unbalanced pairs are dropped; the rest keep their partner
    assert tr_en[:3] == ["a b c", "one two", ("w " * 20).strip()]
    assert tr_de[:3] == ["a b c d", "eins zwei", ("v " * 21).strip()]
    assert len(tr_en) == len(tr_de) > 2500
    assert len(_lines(raw / "test.de")) == 3003
    res = _run("wmt14_en_de", "--work", str(tmp_path / "w2"), "--train-corpora", str(corpus),
               "--valid-prefix", WMT14, "--train-lines", "2", "--stop-stage", "prepare")
    assert res.returncode == 0, res.stderr
    sub_en, sub_de = _lines(tmp_path / "w2" / "raw" / "train.en"), _lines(tmp_path / "w2" / "raw" / "train.de")
    assert len(sub_en) == 2 and all(tr_de[tr_en.index(e)] == d for e, d in zip(sub_en, sub_de))


def test_wmt14_missing_corpora_named(tmp_path):
    res = _run("wmt14_en_de", "--data-dir", str(tmp_path / "nothing"), "--work", str(tmp_path / "w"),
               "--stop-stage", "prepare")
    assert res.returncode != 0 and "europarl-v7.de-en.en" in res.stderr


def test_help_lists_options_and_stages():
    for recipe in ("multi30k", "iwslt14_de_en", "wmt14_en_de"):
        res = _run(recipe, "--help", timeout=60)
        assert res.returncode == 0
        for word in ("Stages", "MAX_UPDATE_TEACHER", "TEACHER_LS", "KD_TOPK", "SEQKD_BEAM", "DEVICE"):
            assert word in res.stdout, (recipe, word)
