"""``lskd-teacher-cache``: store the teacher's top-k tokens and logits per target token.

The teacher (one checkpoint or an ensemble, as in ``translation_kd``) runs with
teacher forcing over a binarized split -- the gold data, or a distilled data-bin
made by ``lskd-distill-data`` -- and for every target token (EOS included) its k
most likely token ids and their logits (float16) are written to a memory-mapped
file indexed by sample id. The layout and header are described in
``lskd_fairseq.artifacts``. Train with it::

    fairseq-train DATA --user-dir lskd_fairseq --task translation_kd --teacher-cache DIR \\
        --criterion label_smoothed_kd --kd-topk K ...      # K <= k

The cache is written under temporary names and its header, which marks it
complete, last; an interrupted run leaves no usable cache, and a rerun starts over.
"""

import argparse
import shlex
import sys
import time

import torch

from lskd_fairseq import artifacts, integrity
from lskd_fairseq.artifacts import ArtifactError
from lskd_fairseq.errors import run_tool
from lskd_fairseq.teacher import add_teacher_args
from lskd_fairseq import console

def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lskd-teacher-cache", description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="data-bin to score (gold, or a distilled data-bin)")
    p.add_argument("--out", required=True, help="cache directory (one cache per split)")
    p.add_argument("--split", default="train", help="split to score (default: train)")
    add_teacher_args(p)
    p.add_argument("-k", "--k", type=int, default=8, help="tokens kept per position")
    p.add_argument("-s", "--source-lang", default=None)
    p.add_argument("-t", "--target-lang", default=None)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--cpu", action="store_true", help="run on CPU even when CUDA is available")
    p.add_argument("--fp16", action="store_true", help="half-precision teacher (CUDA only)")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 teacher (CPU with bf16 hardware, or CUDA); log-probabilities in float32")
    p.add_argument("--no-progress-bar", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true", help="only the result line and errors")
    return p


def run(args) -> dict:
    from tqdm import tqdm

    from lskd_fairseq.teacher import Teacher, split_paths

    if args.k < 1:
        raise ArtifactError(f"--k must be >= 1, got {args.k}")
    integrity.check_output_dir(args.out, "--out")
    if args.fp16 and (args.cpu or not torch.cuda.is_available()):
        raise ArtifactError("--fp16 needs a CUDA device (drop --fp16 on CPU)")
    if args.fp16 and args.bf16:
        raise ArtifactError("--fp16 and --bf16 exclude each other: pick one")
    task = artifacts.setup_translation_task(args.data, args.source_lang, args.target_lang)
    src, tgt = task.cfg.source_lang, task.cfg.target_lang
    task.load_dataset(args.split)
    ds = task.dataset(args.split)
    if ds.tgt is None:
        raise ArtifactError(f"split {args.split!r} of {args.data} has no target side to score")
    vocab = len(task.tgt_dict)
    if args.k > vocab:
        raise ArtifactError(f"--k {args.k} is larger than the target vocabulary ({vocab})")
    tpaths = split_paths(args.teacher_path)
    teacher = Teacher.load(tpaths, task, teacher_data=args.teacher_data, dict_check=args.teacher_dict_check)
    use_cuda = torch.cuda.is_available() and not args.cpu
    for m in teacher.models:
        if args.fp16:
            m.half()
        elif args.bf16:
            m.to(dtype=torch.bfloat16)
        if use_cuda:
            m.cuda()
    header = {
        "teacher": artifacts.teacher_fingerprint(tpaths),
        "data": artifacts.data_fingerprint(args.data, args.split, src, tgt),
        **{f"{side}_dict_{key}": value for side, d in (("src", task.src_dict), ("tgt", task.tgt_dict))
           for key, value in artifacts.dictionary_fingerprint(d).items()},
        "teacher_dict_check": args.teacher_dict_check,
        "source_lang": src, "target_lang": tgt, "vocab_size": vocab, "fp16_teacher": bool(args.fp16),
        "bf16_teacher": bool(args.bf16),
        "command": rebuild_command(args),
    }
    writer = artifacts.TopKCacheWriter(args.out, args.split, ds.tgt_sizes, args.k, vocab)
    indices = ds.ordered_indices()
    batches = ds.batch_by_size(indices, max_tokens=args.max_tokens, max_sentences=args.batch_size,
                               required_batch_size_multiple=1)
    pad = task.tgt_dict.pad()
    bar = tqdm(total=len(ds), unit="sent", desc=f"teacher cache {args.split}", disable=args.no_progress_bar or console.is_quiet(),
               file=sys.stderr, dynamic_ncols=True)
    t0 = time.time()
    from fairseq import utils

    try:
        for batch in batches:
            sample = ds.collater([ds[int(i)] for i in batch])
            if use_cuda:
                sample = utils.move_to_cuda(sample)
            out = teacher.score(sample["net_input"], sample["target"], pad, topk=args.k)
            idx, vals = out.dist
            writer.write(sample["id"].tolist(), idx, vals, sample["target"].ne(pad))
            bar.update(len(batch))
        bar.close()
        seconds = time.time() - t0
        header["seconds"] = seconds
        header = writer.finish(header)
    except BaseException:
        writer.abort()
        raise
    console.say(
        f"lskd-teacher-cache: split {args.split!r}: {header['n_samples']} sentences, {header['n_tokens']} "
        f"tokens, k={header['k']} ({header['id_dtype']} ids + float16 logits): "
        f"{header['total_bytes'] / 2**20:.2f} MiB, {header['bytes_per_token']:.2f} bytes/token "
        f"({header['bytes_per_token'] / header['k']:.2f} bytes per token per k) in {seconds:.1f}s"
    )
    console.result(f"lskd-teacher-cache: wrote {artifacts.cache_paths(args.out, args.split)['header']}")
    return header


def rebuild_command(args) -> str:
    """The command that makes this cache again (recorded in its header, quoted by its reader)."""
    cmd = ["lskd-teacher-cache", args.data, "--split", args.split, "--teacher-path", args.teacher_path,
           "--k", str(args.k), "--out", args.out]
    if args.source_lang:
        cmd += ["-s", args.source_lang, "-t", args.target_lang]
    return shlex.join(cmd + (["--bf16"] if args.bf16 else []) + (["--fp16"] if args.fp16 else []))


def main(argv=None) -> int:
    return run_tool("lskd-teacher-cache", get_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
