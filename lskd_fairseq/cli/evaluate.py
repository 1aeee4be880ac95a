"""Translate a test set with several fairseq checkpoints and score each with sacreBLEU,
in one process (the recipes' evaluate stage; fairseq's start-up costs more than a
small test set's decoding).

    python -m lskd_fairseq.cli.evaluate DATA_BIN --ref raw/test.de --spm spm.model \\
        --results-dir results --gen-dir gen \\
        --model teacher_ls=models/teacher_ls/checkpoint_best.pt ... \\
        --meta scale=cpu --model-meta teacher_ls:order=1 ... \\
        -- --beam 5 --lenpen 1 --max-tokens 8000 --cpu      (fairseq-generate options)

For every model: ``fairseq-generate`` output to GEN_DIR/<name>.<subset>.gen, the
ordered, desegmented hypotheses to GEN_DIR/<name>.<subset>.hyp, and the result
(``lskd_fairseq.cli.bleu.evaluate`` + parameters, updates, training time) to
RESULTS_DIR/<name>.json, written last and atomically. A model whose JSON exists
is skipped unless ``--force``, or unless that JSON was scored with another
checkpoint file or before the checkpoint was last written.
"""

import argparse
import json
import os
import sys
from typing import List, Optional

from lskd_fairseq.atomic import atomic_path, atomic_write_json
from lskd_fairseq.cli import bleu
from lskd_fairseq import console, integrity


def _stale_reason(out_json: str, ckpt: str):
    """Why an existing result no longer describes ``ckpt`` (another checkpoint file, or one
    written after the result), or None when it still does or there is no result."""
    try:
        with open(out_json, encoding="utf-8") as f:
            old = json.load(f)
    except (OSError, ValueError):
        return None
    if old.get("checkpoint") and old["checkpoint"] != os.path.abspath(ckpt):
        return f"it was scored with {old['checkpoint']}"
    if os.path.isfile(ckpt) and os.path.getmtime(ckpt) > os.path.getmtime(out_json):
        return f"{ckpt} is newer than {out_json}"
    return None


def generate(data: str, checkpoint: str, subset: str, out: str, user_dir: str, extra: List[str]) -> None:
    """fairseq-generate, in this process, into ``out`` (written atomically)."""
    from fairseq import options, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import generate as fairseq_generate

    from lskd_fairseq import fairseq_compat

    fairseq_compat.apply()  # checkpoint loading under torch >= 2.6

    argv = [data, "--user-dir", user_dir, "--path", checkpoint, "--gen-subset", subset] + list(extra)
    parser = options.get_generation_parser()
    args = options.parse_args_and_arch(parser, input_args=argv)
    cfg = convert_namespace_to_omegaconf(args)
    utils.import_user_module(cfg.common)
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", buffering=1) as fh:
        fairseq_generate._main(cfg, fh)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    gen_args: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, gen_args = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="python -m lskd_fairseq.cli.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--subset", default="test")
    p.add_argument("--ref", required=True, help="raw reference text of the subset")
    p.add_argument("--spm", help="sentencepiece model to remove subwords with")
    p.add_argument("--results-dir", required=True)
    p.add_argument("--gen-dir", required=True)
    p.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT")
    p.add_argument("--meta", nargs="*", default=[], metavar="KEY=VALUE", help="fields for every JSON")
    p.add_argument("--model-meta", action="append", default=[], metavar="NAME:KEY=VALUE",
                   help="a field for one model's JSON")
    p.add_argument("--user-dir", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p.add_argument("--force", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true", help="only the scores and errors")
    args = p.parse_args(argv)
    console.configure(quiet=args.quiet)
    for path, flag in ((args.results_dir, "--results-dir"), (args.gen_dir, "--gen-dir")):
        try:
            integrity.check_output_dir(path, flag)
        except integrity.OutputError as e:
            console.error(p.prog, str(e))
            return 2

    specs = []
    for spec in args.model:
        if "=" not in spec:
            p.error(f"--model wants NAME=CHECKPOINT, got {spec!r}")
        specs.append(spec.split("=", 1))
    missing = [f"{name} ({ckpt})" for name, ckpt in specs if not os.path.isfile(ckpt)]
    if missing:  # before anything is generated: say every missing model at once
        console.error(p.prog, f"checkpoint not found for {len(missing)} model(s): {', '.join(missing)}; "
                      f"train them first (or leave them out)")
        return 2
    for path, what in ((args.ref, "--ref"), (args.spm, "--spm")):
        if path and not os.path.isfile(path):
            console.error(p.prog, f"{what} file not found: {path}")
            return 2
    common = bleu._parse_meta(args.meta)
    per_model = {}
    for item in args.model_meta:
        name, kv = item.split(":", 1)
        per_model.setdefault(name, []).append(kv)
    os.makedirs(args.gen_dir, exist_ok=True)
    os.makedirs(args.results_dir, exist_ok=True)
    for name, ckpt in specs:
        out_json = os.path.join(args.results_dir, f"{name}.json")
        stale = _stale_reason(out_json, ckpt)
        if os.path.exists(out_json) and not args.force and stale is None:
            console.say(f"evaluate: skip {name} ({out_json} exists)")
            continue
        if stale and os.path.exists(out_json):
            console.say(f"evaluate: {name}: scoring again: {stale}")
        gen = os.path.join(args.gen_dir, f"{name}.{args.subset}.gen")
        hyp = os.path.join(args.gen_dir, f"{name}.{args.subset}.hyp")
        console.say(f"evaluate: {name}: generating with {ckpt}")
        generate(args.data, ckpt, args.subset, gen, args.user_dir, gen_args)
        res = bleu.evaluate(args.ref, generate=gen, spm_model=args.spm, hyp_out=hyp)
        res["name"] = name
        res["checkpoint"] = os.path.abspath(ckpt)
        res.update(bleu.checkpoint_info(ckpt))
        secs = os.path.join(os.path.dirname(ckpt), "train_seconds")
        if os.path.isfile(secs):
            with open(secs, encoding="utf-8") as f:
                res["train_seconds"] = float(f.read().split()[0])
        res["generate_args"] = " ".join(gen_args)
        res.update(common)
        res.update(bleu._parse_meta(per_model.get(name, [])))
        atomic_write_json(out_json, res)
        console.result(f"evaluate: {name}: {res['bleu_string']}")
        console.result(f"evaluate: {name}: {res['chrf_string']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
