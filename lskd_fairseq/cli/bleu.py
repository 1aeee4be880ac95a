"""``lskd-bleu``: sacreBLEU scoring of fairseq-generate output, and result tables.

Reusable pieces (imported by the recipes and by ``lskd-study``):

* :func:`read_lines` reads a text file (``.gz`` too) exactly as the ``sacrebleu``
  command line does, so scores here equal the command line's on the same files;
* :func:`parse_generate` collects the hypotheses of a ``fairseq-generate`` log
  (``H-<id>`` lines) and :func:`ordered_hypotheses` puts them in sample-id order;
* :func:`spm_decode` removes sentencepiece subwords with the model;
* :func:`score` computes BLEU and chrF with their sacreBLEU signatures;
* :func:`evaluate` does all of that and returns the per-model result dict,
  :func:`write_json` writes it atomically, :func:`load_results` and
  :func:`markdown_table` build a recipe's table.

Command line::

    lskd-bleu score --generate gen.out --spm spm.model --ref test.de [--json res.json]
    lskd-bleu score --hyp hyp.txt --ref newstest2014.de.gz
    lskd-bleu table RESULTS_DIR [--out table.md]
"""

import argparse
import glob
import gzip
import json
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

from lskd_fairseq.atomic import atomic_write_json, atomic_write_lines, atomic_write_text
from lskd_fairseq import console

SPM_SPACE = "\u2581"  # sentencepiece's word-boundary marker

_GEN_LINE = re.compile(r"^([A-Z])-(\d+)\t(.*)$")


# --------------------------------------------------------------------------- io
def _open_text(path: str, mode: str = "rt"):
    # the same as sacrebleu.utils.smart_open: only "\n" ends a line
    if path.endswith(".gz"):
        return gzip.open(path, mode=mode, encoding="utf-8", newline="\n")
    return open(path, mode=mode, encoding="utf-8", newline="\n")


def read_lines(path: str) -> List[str]:
    """Lines of a (possibly gzipped) text file, right-stripped, as ``sacrebleu`` reads them."""
    with _open_text(path) as f:
        return [line.rstrip() for line in f]


def _read_input(path: str, what: str, option: str) -> List[str]:
    """:func:`read_lines` of a file the user named, with a one-line error when it is not there."""
    if not os.path.isfile(path):
        raise ValueError(f"{what} file not found: {path} (check the path given to {option})")
    return read_lines(path)


def check_pair(hyps: Sequence[str], refs: Sequence[str], hyp_name: str = "hypotheses",
               ref_name: str = "references") -> None:
    """Refuse what sacreBLEU cannot score meaningfully: no sentences, or unequal numbers of lines."""
    if not refs:
        raise ValueError(f"the reference file {ref_name} is empty: give the raw reference text of the test set, "
                         f"one sentence per line")
    if not hyps:
        raise ValueError(f"no hypotheses in {hyp_name}: give the system's output, one line per reference line")
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses ({hyp_name}) but {len(refs)} references ({ref_name}): "
                         f"give the output for exactly the reference file's sentences, one per line")


# ------------------------------------------------------------- generate output
def parse_generate(source, prefix: str = "H") -> Dict[int, str]:
    """Hypotheses of a fairseq-generate log: ``{sample_id: text}``.

    ``source`` is a path or an iterable of lines. ``prefix`` is ``H`` (the
    hypothesis as the model's tokens, or post-processed with ``--post-process``)
    or ``D`` (detokenized). With ``--nbest > 1`` the first (best) one is kept.
    """
    if isinstance(source, str):
        with _open_text(source) as f:
            lines = f.read().split("\n")
    else:
        lines = list(source)
    hyps: Dict[int, str] = {}
    for line in lines:
        m = _GEN_LINE.match(line.rstrip("\n"))
        if not m or m.group(1) != prefix:
            continue
        sid = int(m.group(2))
        rest = m.group(3)
        # "<score>\t<text>"; an empty hypothesis leaves "<score>\t" or just "<score>"
        text = rest.split("\t", 1)[1] if "\t" in rest else ""
        if sid not in hyps:
            hyps[sid] = text.strip()
    return hyps


def ordered_hypotheses(hyps: Dict[int, str], n: Optional[int] = None) -> List[str]:
    """Hypotheses in sample-id order ``0..n-1``; refuses missing or extra ids."""
    if n is None:
        n = max(hyps) + 1 if hyps else 0
    missing = [i for i in range(n) if i not in hyps]
    extra = sorted(i for i in hyps if not 0 <= i < n)
    if missing or extra:
        raise ValueError(
            f"generate output does not cover sample ids 0..{n - 1}: "
            f"{len(missing)} missing (first {missing[:5]}), {len(extra)} out of range (first {extra[:5]}); "
            f"was it generated on the same test set, without --max-sentences limits or "
            f"--skip-invalid-size-inputs-valid-test dropping sentences?"
        )
    return [hyps[i] for i in range(n)]


def spm_decode(lines: Sequence[str], model: str) -> List[str]:
    """Join sentencepiece pieces (space-separated, as fairseq writes them) back into text."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model)
    return [sp.decode_pieces(line.split()) if line else "" for line in lines]


def looks_like_pieces(lines: Sequence[str]) -> bool:
    return any(SPM_SPACE in line for line in lines)


# --------------------------------------------------------------------- scoring
def score(
    hyps: Sequence[str],
    refs: Sequence[str],
    metrics: Sequence[str] = ("bleu", "chrf"),
    tokenize: Optional[str] = None,
    lowercase: bool = False,
) -> dict:
    """Corpus BLEU/chrF with sacreBLEU's defaults (as its command line), and signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    check_pair(hyps, refs)
    out = {"n_sentences": len(hyps)}
    for name in metrics:
        if name == "bleu":
            kw = {"lowercase": lowercase}
            if tokenize is not None:
                kw["tokenize"] = tokenize
            metric = BLEU(**kw)
        elif name == "chrf":
            metric = CHRF(lowercase=lowercase)
        else:
            raise ValueError(f"unknown metric {name!r} (bleu, chrf)")
        s = metric.corpus_score(list(hyps), [list(refs)])
        out[name] = s.score
        out[f"{name}_string"] = s.format(signature=str(metric.get_signature()))
        out[f"{name}_signature"] = str(metric.get_signature())
    return out


def checkpoint_info(checkpoint: str) -> dict:
    """``params`` (tied tensors counted once), ``num_updates`` and ``epoch`` of a fairseq checkpoint."""
    from lskd_fairseq.teacher import load_checkpoint_state

    state = load_checkpoint_state(checkpoint)
    info = {"params": _count_parameters(state)}
    hist = state.get("optimizer_history") or []
    if hist and "num_updates" in hist[-1]:
        info["num_updates"] = int(hist[-1]["num_updates"])
    epoch = (state.get("extra_state") or {}).get("train_iterator", {}).get("epoch")
    if epoch is not None:
        info["epoch"] = int(epoch)
    return info


def _count_parameters(state: dict) -> int:
    seen = set()
    n = 0
    for key, t in state["model"].items():
        if key.endswith("version") or key.endswith("_float_tensor") or not hasattr(t, "numel"):
            continue
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if ptr in seen:
            continue
        seen.add(ptr)
        n += t.numel()
    return n


def evaluate(
    refs: str,
    generate: Optional[str] = None,
    hyp: Optional[str] = None,
    spm_model: Optional[str] = None,
    prefix: str = "H",
    hyp_out: Optional[str] = None,
    tokenize: Optional[str] = None,
    lowercase: bool = False,
) -> dict:
    """Score one system: a fairseq-generate log (``generate``) or a plain hypothesis file (``hyp``)."""
    if (generate is None) == (hyp is None):
        raise ValueError("give exactly one of generate= and hyp=")
    ref_lines = _read_input(refs, "reference", "--ref")
    if generate is not None:
        if not os.path.isfile(generate):
            raise ValueError(f"generate log not found: {generate} (check the path given to --generate)")
        hyp_lines = ordered_hypotheses(parse_generate(generate, prefix=prefix), len(ref_lines))
    else:
        hyp_lines = _read_input(hyp, "hypothesis", "--hyp")
    # before anything is written (--hyp-out): a refused pair leaves no file behind
    check_pair(hyp_lines, ref_lines, generate or hyp, refs)
    decoded = False
    if spm_model:
        # --spm says the hypotheses are pieces: decode them even when none carries the
        # word-boundary marker (a degenerate model may output only word-internal pieces)
        if not looks_like_pieces(hyp_lines):
            console.warn(
                f"lskd-bleu: warning: no sentencepiece word boundary ({SPM_SPACE}) in any hypothesis; "
                f"decoding them with {spm_model} anyway (drop --spm if they are already plain text)"
            )
        hyp_lines = spm_decode(hyp_lines, spm_model)
        decoded = True
    if hyp_out:
        atomic_write_lines(hyp_out, hyp_lines)
    res = score(hyp_lines, ref_lines, tokenize=tokenize, lowercase=lowercase)
    res.update(
        {
            "ref_file": os.path.abspath(refs),
            "generate_file": os.path.abspath(generate) if generate else None,
            "hyp_file": os.path.abspath(hyp_out or hyp) if (hyp_out or hyp) else None,
            "spm_model": os.path.abspath(spm_model) if spm_model else None,
            "spm_decoded": decoded,
        }
    )
    return res


# ---------------------------------------------------------------------- tables
TABLE_COLUMNS = (
    ("model", "model"),
    ("teacher", "teacher"),
    ("kd", "KD"),
    ("label_smoothing", "LS"),
    ("bleu", "BLEU"),
    ("chrf", "chrF"),
    ("params", "params"),
    ("num_updates", "updates"),
    ("train_seconds", "train time"),
)


def load_results(results_dir: str) -> List[dict]:
    """Every ``*.json`` result in ``results_dir``, ordered by their ``order`` field, then name."""
    out = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        with open(path, encoding="utf-8") as f:
            r = json.load(f)
        if not isinstance(r, dict) or "bleu" not in r:
            continue
        r.setdefault("name", os.path.splitext(os.path.basename(path))[0])
        out.append(r)
    out.sort(key=lambda r: (float(r.get("order", 1e9)), r["name"]))
    return out


def _fmt_seconds(s) -> str:
    if s is None or s == "":
        return "–"
    s = float(s)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _fmt_params(n) -> str:
    if n is None or n == "":
        return "–"
    n = int(n)
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def _cell(key: str, r: dict) -> str:
    v = r.get(key)
    if key == "model":
        return str(r.get("name"))
    if key in ("bleu", "chrf"):
        return "–" if v is None else f"{float(v):.2f}"
    if key == "params":
        return _fmt_params(v)
    if key == "train_seconds":
        return _fmt_seconds(v)
    if v is None or v == "":
        return "–"
    return str(v)


def markdown_table(results: Sequence[dict], title: Optional[str] = None) -> str:
    """One markdown table for a recipe's results, with the sacreBLEU signatures below it."""
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines.append("| " + " | ".join(h for _, h in TABLE_COLUMNS) + " |")
    lines.append("| " + " | ".join("---" for _ in TABLE_COLUMNS) + " |")
    for r in results:
        lines.append("| " + " | ".join(_cell(k, r) for k, _ in TABLE_COLUMNS) + " |")
    sigs = sorted({r.get(f"{m}_signature") for r in results for m in ("bleu", "chrf")} - {None})
    tests = sorted({os.path.basename(r["ref_file"]) for r in results if r.get("ref_file")})
    lines.append("")
    if tests:
        lines.append("Test references: " + ", ".join(f"`{t}`" for t in tests) + ".")
    for s in sigs:
        lines.append(f"sacreBLEU signature: `{s}`")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- cli
def _parse_meta(items: Sequence[str]) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"lskd-bleu: --meta wants KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        for conv in (int, float):
            try:
                v = conv(v)
                break
            except ValueError:
                pass
        out[k] = v
    return out


def _cmd_score(args) -> int:
    res = evaluate(
        args.ref,
        generate=args.generate,
        hyp=args.hyp,
        spm_model=args.spm,
        prefix=args.prefix,
        hyp_out=args.hyp_out,
        tokenize=args.tokenize,
        lowercase=args.lowercase,
    )
    if args.name:
        res["name"] = args.name
    if args.checkpoint:
        res["checkpoint"] = os.path.abspath(args.checkpoint)
        res.update(checkpoint_info(args.checkpoint))
    if args.train_seconds_file:
        with open(args.train_seconds_file, encoding="utf-8") as f:
            res["train_seconds"] = float(f.read().split()[0])
    res.update(_parse_meta(args.meta))
    if args.json:
        atomic_write_json(args.json, res)
    console.result(res["bleu_string"])
    console.result(res["chrf_string"])
    return 0


def _cmd_hyps(args) -> int:
    hyps = parse_generate(args.generate, prefix=args.prefix)
    fill = read_lines(args.fill_from) if args.fill_from else None
    n = args.n if args.n is not None else (len(fill) if fill is not None else None)
    if fill is not None:
        missing = [i for i in range(n) if i not in hyps]
        if missing:
            console.warn(f"lskd-bleu hyps: {len(missing)} of {n} ids missing, filled from {args.fill_from}")
        for i in missing:
            hyps[i] = fill[i]
    lines = ordered_hypotheses(hyps, n)
    if args.spm:
        lines = spm_decode(lines, args.spm)
    atomic_write_lines(args.out, lines)
    return 0


def _cmd_table(args) -> int:
    results = load_results(args.results_dir)
    if not results:
        console.warn(f"lskd-bleu: no result JSON files in {args.results_dir}")
        return 1
    text = markdown_table(results, title=args.title)
    if args.out:
        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lskd-bleu",
        description="sacreBLEU (BLEU + chrF, with signatures) for fairseq-generate output, and result tables",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser(
        "score",
        help="score one system",
        description="Score a fairseq-generate log (hypotheses put back in sample-id order, "
        "sentencepiece removed with --spm) or a plain hypothesis file against raw references.",
    )
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--generate", metavar="LOG", help="fairseq-generate output (its H-/D- lines)")
    src.add_argument("--hyp", metavar="FILE", help="plain hypothesis file, one line per reference line")
    s.add_argument("--ref", required=True, help="raw (detokenized) reference file, .gz allowed")
    s.add_argument("--spm", metavar="MODEL", help="sentencepiece model to decode the hypotheses with")
    s.add_argument("--prefix", default="H", choices=["H", "D"], help="which generate lines to read (default H)")
    s.add_argument("--hyp-out", metavar="FILE", help="write the final (decoded, ordered) hypotheses here")
    s.add_argument("--tokenize", default=None, help="sacreBLEU BLEU tokenizer (default: sacreBLEU's, 13a)")
    s.add_argument("--lowercase", action="store_true", help="case-insensitive BLEU and chrF")
    s.add_argument("--json", metavar="FILE", help="write the result as JSON here (atomically)")
    s.add_argument("--name", help="model name for the JSON/table")
    s.add_argument("--checkpoint", help="fairseq checkpoint: record its parameter count")
    s.add_argument("--train-seconds-file", help="file whose first field is the training wall time in seconds")
    s.add_argument("--meta", nargs="*", default=[], metavar="KEY=VALUE", help="extra fields for the JSON")
    s.set_defaults(func=_cmd_score)
    h = sub.add_parser(
        "hyps",
        help="write a generate log's hypotheses in sample-id order",
        description="Extract the hypotheses of a fairseq-generate log, one per line in sample-id order "
        "(e.g. a teacher's translations of the training set for sequence-level KD).",
    )
    h.add_argument("--generate", required=True, metavar="LOG")
    h.add_argument("--out", required=True)
    h.add_argument("--n", type=int, help="number of sentences (ids 0..n-1); default: from --fill-from or the largest id")
    h.add_argument("--fill-from", metavar="FILE", help="take the lines of missing ids from this file")
    h.add_argument("--prefix", default="H", choices=["H", "D"])
    h.add_argument("--spm", metavar="MODEL", help="decode sentencepiece pieces with this model")
    h.set_defaults(func=_cmd_hyps)
    t = sub.add_parser("table", help="markdown table of the result JSON files in a directory")
    t.add_argument("results_dir")
    t.add_argument("--out", help="write here (atomically) instead of stdout")
    t.add_argument("--title")
    t.set_defaults(func=_cmd_table)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, EOFError) as e:  # unreadable input (a bad .gz is an OSError)
        console.error("lskd-bleu", str(e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
