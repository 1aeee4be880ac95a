"""Sentencepiece helpers for the recipes: ``python -m lskd_fairseq.cli.spm train|encode``.

    python -m lskd_fairseq.cli.spm train --input a.txt b.txt --model-prefix spm/spm --vocab-size 8000
    python -m lskd_fairseq.cli.spm encode --model spm/spm.model --input raw.txt --output pieces.txt

Outputs are written to a temporary name and renamed, so an interrupted run leaves
no half-written model or file behind.
"""

import argparse
import os
import shutil
import sys
import tempfile

from lskd_fairseq.atomic import atomic_path
from lskd_fairseq import console


def train(inputs, model_prefix, vocab_size, model_type="unigram", character_coverage=1.0,
          input_sentence_size=0, seed=None, threads=None):
    import sentencepiece as spm

    d = os.path.dirname(os.path.abspath(model_prefix)) or "."
    os.makedirs(d, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=d, prefix=".tmp-spm-")
    tmp_prefix = os.path.join(tmp, "m")
    kwargs = dict(
        input=",".join(inputs),
        model_prefix=tmp_prefix,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        # fairseq adds its own <s> <pad> </s> <unk>; keep sentencepiece's ids apart
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        pad_id=-1,
        hard_vocab_limit=False,
        minloglevel=1,
    )
    if input_sentence_size:
        kwargs.update(input_sentence_size=input_sentence_size, shuffle_input_sentence=True)
    if threads:
        kwargs["num_threads"] = threads
    try:
        spm.SentencePieceTrainer.train(**kwargs)
        # the vocab first: the .model file is what a rerun checks for
        for ext in ("vocab", "model"):
            with atomic_path(f"{model_prefix}.{ext}") as dst, open(f"{tmp_prefix}.{ext}", "rb") as src, \
                    open(dst, "wb") as out:
                shutil.copyfileobj(src, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def encode_file(model, src, dst):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model)
    with atomic_path(dst) as tmp, open(src, encoding="utf-8", newline="\n") as fin, \
            open(tmp, "w", encoding="utf-8") as fout:
        for line in fin:
            fout.write(" ".join(sp.encode(line.rstrip("\n"), out_type=str)) + "\n")


def _input_problem(args):
    """What is wrong with the files a command was given (one sentence naming the fix), or None."""
    if args.cmd == "encode" and not os.path.isfile(args.model):
        return (f"sentencepiece model not found: {args.model} (train one with "
                f"'python -m lskd_fairseq.cli.spm train', or fix --model)")
    if args.cmd == "encode" and len(args.input) != len(args.output):
        return "--input and --output need the same number of files"
    for path in args.input:
        if not os.path.isfile(path):
            return f"input file not found: {path} (fix --input)"
        if args.cmd == "train" and os.path.getsize(path) == 0:
            return f"input file is empty: {path} (sentencepiece needs training text; fix --input)"
    return None


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lskd_fairseq.cli.spm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a sentencepiece model")
    t.add_argument("--input", nargs="+", required=True)
    t.add_argument("--model-prefix", required=True)
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--model-type", default="unigram", choices=["unigram", "bpe", "char", "word"])
    t.add_argument("--character-coverage", type=float, default=1.0)
    t.add_argument("--input-sentence-size", type=int, default=0, help="sample this many sentences (0 = all)")
    t.add_argument("--threads", type=int, default=None)
    e = sub.add_parser("encode", help="encode raw text files into space-separated pieces")
    e.add_argument("--model", required=True)
    e.add_argument("--input", nargs="+", required=True)
    e.add_argument("--output", nargs="+", required=True)
    args = p.parse_args(argv)
    problem = _input_problem(args)
    if problem:
        console.error(f"{p.prog} {args.cmd}", problem)
        return 2
    try:
        if args.cmd == "train":
            train(args.input, args.model_prefix, args.vocab_size, args.model_type, args.character_coverage,
                  args.input_sentence_size, threads=args.threads)
        else:
            for s, d in zip(args.input, args.output):
                encode_file(args.model, s, d)
    except (RuntimeError, OSError, UnicodeDecodeError) as e:  # sentencepiece reports bad input as RuntimeError
        console.error(f"{p.prog} {args.cmd}", str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
