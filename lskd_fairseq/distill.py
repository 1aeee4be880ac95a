"""Sequence-level distillation data (Kim & Rush 2016): ``lskd-distill-data``.

The teacher translates a binarized split with beam search; the hypotheses are
placed by *sample id* (line i of the output is sample i of the split), so the
distilled corpus stays aligned with the gold one.

Source side. A data-bin holds token ids only, and ids lose information where the
dictionary maps a word to ``<unk>``. The source side of the distilled corpus is
therefore taken from the text that was binarized, found in this order:

1. ``--source-text PATH`` (plain or ``.gz``), the file given to fairseq-preprocess;
2. ``DATA/<split>.<src>`` (or ``.gz``), a copy of that text kept beside the data-bin;
3. the ids decoded with the dictionary -- only when the split has no ``<unk>``
   on its source side (then decoding is exact); otherwise a clear error asks for 1.

The text is checked: its line count must equal the split's size and every line
must re-encode (``Dictionary.encode_line``) to the binarized ids.

Target side: the teacher's hypotheses as token strings, subword units kept (no
``--post-process``). The data-bin's target side is binarized from the
hypothesis ids themselves with the teacher's (= the data-bin's) dictionary; its
source side is the gold source binary, copied.

Filtering. A selected hypothesis is *filtered* when it is empty, when either
side is longer than ``--filter-max-len`` tokens, when the length ratio exceeds
``--filter-ratio``, or when the source was too long for the teacher to translate.
With ``--on-filtered reference`` (default) the filtered sample keeps the gold
reference as its target, so the output stays aligned by sample id (required by
``--distilled-data``); with ``--on-filtered drop`` it is left out (a corpus for
plain ``fairseq-train``; ``<split>.ids`` lists the kept sample ids).

Interruption. Hypotheses are appended, batch by batch, to
``OUT/.lskd-partial-<split>/hyps.jsonl``; a rerun with the same teacher, data and
generation options resumes from it (other options: it restarts). Outputs are
written to a temporary folder and renamed into place, and the manifest
``OUT/<split>.distill.json`` -- the marker of a complete split -- is written last.
"""

import argparse
import gzip
import json
import os
import shlex
import shutil
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from lskd_fairseq import artifacts, console, integrity
from lskd_fairseq.atomic import atomic_write_json
from lskd_fairseq.errors import run_tool
from lskd_fairseq.teacher import add_teacher_args
from lskd_fairseq.artifacts import (
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    DistillError,
    manifest_path,
    setup_translation_task,
)

logger = console.get_logger("distill")

# --------------------------------------------------------------------------- text


def read_lines(path: str) -> List[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f]


def _find_text(explicit: Optional[str], data: str, split: str, lang: str) -> Optional[str]:
    if explicit:
        if not os.path.isfile(explicit):
            raise DistillError(f"text file not found: {explicit}")
        return explicit
    for cand in (os.path.join(data, f"{split}.{lang}"), os.path.join(data, f"{split}.{lang}.gz")):
        if os.path.isfile(cand):
            return cand
    return None


def original_lines(explicit, data, split, lang, dictionary, ids_dataset, side="source"):
    """The text lines that were binarized into ``ids_dataset`` (see module doc)."""
    n = len(ids_dataset)
    path = _find_text(explicit, data, split, lang)
    if path is None:
        unk = dictionary.unk()
        lines = []
        for i in range(n):
            ids = ids_dataset[i]
            if bool((ids == unk).any()):
                raise DistillError(
                    f"the {side} side of split {split!r} has <unk> (first at sample {i}), so the original "
                    f"text cannot be recovered from the ids; pass the text that was binarized with "
                    f"--{side}-text PATH (line i = sample i) or put it at {os.path.join(data, f'{split}.{lang}')}"
                )
            lines.append(" ".join(dictionary[t] for t in ids.tolist() if t != dictionary.eos()))
        return lines, "decoded from the binarized ids (no <unk>)"
    lines = read_lines(path)
    if len(lines) != n:
        raise DistillError(
            f"{side} text {path} has {len(lines)} lines, but split {split!r} has {n} samples; "
            f"give the exact file that fairseq-preprocess binarized"
        )
    for i, line in enumerate(lines):
        enc = dictionary.encode_line(line, add_if_not_exist=False, append_eos=True).long()
        if not torch.equal(enc, ids_dataset[i].long()):
            raise DistillError(
                f"{side} text {path}, line {i + 1}: re-encoding it with the dictionary does not give "
                f"the binarized ids of sample {i} ({enc.tolist()[:12]} vs {ids_dataset[i].tolist()[:12]}); "
                f"is it the file (and tokenization) that was binarized?"
            )
    return lines, os.path.abspath(path)


# --------------------------------------------------------------------------- selection and filtering


def select_by_bleu(hyps: Sequence[str], reference: str, remove_bpe: Optional[str] = None) -> int:
    """Index of the hypothesis with the highest sentence-BLEU (sacreBLEU) against
    ``reference``; ties go to the earlier (better-scored) one."""
    from sacrebleu.metrics import BLEU

    if not hyps:
        return -1
    bleu = BLEU(effective_order=True)
    if remove_bpe:
        from fairseq.data import data_utils

        hyps = [data_utils.post_process(h, remove_bpe) for h in hyps]
        reference = data_utils.post_process(reference, remove_bpe)
    scores = [bleu.sentence_score(h, [reference]).score for h in hyps]
    return int(np.argmax(scores))


def filter_reason(src_len: int, hyp_len: int, max_len: int, max_ratio: float) -> Optional[str]:
    """Why a (source, hypothesis) pair is filtered, or None. Lengths exclude EOS."""
    if hyp_len <= 0:
        return "empty"
    if src_len > max_len or hyp_len > max_len:
        return "too_long"
    if max_ratio > 0 and max(src_len, hyp_len) / max(1, min(src_len, hyp_len)) > max_ratio:
        return "ratio"
    return None


# --------------------------------------------------------------------------- resumable store


class PartialStore:
    """Hypotheses of an unfinished run, appended batch by batch (JSON lines)."""

    def __init__(self, out: str, split: str, fingerprint: dict):
        self.dir = os.path.join(out, f".lskd-partial-{split}")
        self.hyps_path = os.path.join(self.dir, "hyps.jsonl")
        self.state_path = os.path.join(self.dir, "state.json")
        self.fingerprint = fingerprint
        self.resumed = 0
        state = artifacts.read_json(self.state_path) if os.path.isdir(self.dir) else None
        if state is not None and state.get("fingerprint") != fingerprint:
            logger.warning(f"{self.dir}: left by a run with other teacher/data/generation options; restarting")
            shutil.rmtree(self.dir)
        elif state is None and os.path.isdir(self.dir):
            shutil.rmtree(self.dir)
        os.makedirs(self.dir, exist_ok=True)
        if not os.path.exists(self.state_path):
            atomic_write_json(self.state_path, {"fingerprint": fingerprint})
        self.done: Dict[int, list] = {}
        if os.path.exists(self.hyps_path):
            good = 0
            with open(self.hyps_path, "rb") as f:
                for raw in f:
                    try:
                        rec = json.loads(raw)
                    except ValueError:
                        break  # a line cut by the interruption: drop it and what follows
                    if not raw.endswith(b"\n"):
                        break
                    self.done[int(rec["id"])] = rec["hyps"]
                    good += len(raw)
            with open(self.hyps_path, "r+b") as f:
                f.truncate(good)
            self.resumed = len(self.done)
        self._f = open(self.hyps_path, "ab")

    def add(self, records: List[Tuple[int, list]]) -> None:
        buf = b"".join(json.dumps({"id": i, "hyps": h}).encode() + b"\n" for i, h in records)
        self._f.write(buf)
        self._f.flush()
        for i, h in records:
            self.done[i] = h

    def close(self, remove: bool = False) -> None:
        self._f.close()
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- the tool


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lskd-distill-data",
        description="Translate a binarized split with a teacher (beam search) into a distilled corpus, "
        "in sample-id order, as text and as a data-bin for fairseq-train / --distilled-data.",
    )
    p.add_argument("data", help="data-bin (fairseq-preprocess output) with the teacher's dictionaries")
    p.add_argument("--out", required=True, help="output directory (text + data-bin)")
    p.add_argument("--split", default="train", help="split of the data-bin to translate (default: train)")
    add_teacher_args(p)
    p.add_argument("-s", "--source-lang", default=None)
    p.add_argument("-t", "--target-lang", default=None)
    p.add_argument("--source-text", default=None,
                   help="the source text that was binarized (line i = sample i; .gz ok); default: "
                   "DATA/<split>.<src> if present, else the ids decoded (refused if they contain <unk>)")
    p.add_argument("--target-text", default=None,
                   help="the reference text (for --select bleu and filtered samples); default: "
                   "DATA/<split>.<tgt> if present, else the ids decoded")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--nbest", type=int, default=1)
    p.add_argument("--max-len-a", type=float, default=0.0)
    p.add_argument("--max-len-b", type=int, default=200)
    p.add_argument("--min-len", type=int, default=1)
    p.add_argument("--lenpen", type=float, default=1.0)
    p.add_argument("--unkpen", type=float, default=0.0)
    p.add_argument("--max-tokens", type=int, default=4096, help="batch size in source tokens")
    p.add_argument("--batch-size", type=int, default=None, help="at most this many sentences a batch")
    p.add_argument("--select", choices=("score", "bleu"), default="score",
                   help="score: the teacher's best hypothesis; bleu: Seq-Inter, the n-best hypothesis "
                   "with the highest sentence-BLEU against the reference")
    p.add_argument("--bleu-remove-bpe", default=None,
                   help="subword marker to remove before sentence-BLEU (e.g. '@@ ', sentencepiece)")
    p.add_argument("--filter-max-len", type=int, default=250, help="max tokens on either side")
    p.add_argument("--filter-ratio", type=float, default=3.0, help="max length ratio (0: no check)")
    p.add_argument("--on-filtered", choices=("reference", "drop"), default="reference")
    p.add_argument("--write-nbest", action="store_true",
                   help="also write OUT/<split>.nbest.<tgt>: id<TAB>rank<TAB>score<TAB>hypothesis, n-best per sample")
    p.add_argument("--copy-other-splits", action="store_true",
                   help="copy the data-bin's other splits instead of symlinking them")
    p.add_argument("--cpu", action="store_true", help="run on CPU even when CUDA is available")
    p.add_argument("--fp16", action="store_true", help="half-precision teacher (CUDA only)")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 teacher (CPU with bf16 hardware, or CUDA); log-probabilities in float32")
    p.add_argument("--force", action="store_true", help="redo a split that is already complete")
    p.add_argument("--restart", action="store_true", help="ignore the hypotheses of an interrupted run")
    p.add_argument("--no-progress-bar", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true", help="only the result lines and errors")
    return p


def _fmt_counts(c: Dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in c.items())


def run(args) -> dict:
    from fairseq import utils
    from fairseq.data import indexed_dataset
    from fairseq.dataclass.configs import GenerationConfig

    from lskd_fairseq.teacher import Teacher, split_paths

    t_start = time.time()
    integrity.check_output_dir(args.out, "--out")
    if args.nbest > args.beam:
        raise DistillError(f"--nbest {args.nbest} is larger than --beam {args.beam}")
    if args.fp16 and (args.cpu or not torch.cuda.is_available()):
        raise DistillError("--fp16 needs a CUDA device (drop --fp16 on CPU)")
    if args.fp16 and args.bf16:
        raise DistillError("--fp16 and --bf16 exclude each other: pick one")
    task = setup_translation_task(args.data, args.source_lang, args.target_lang)
    src, tgt = task.cfg.source_lang, task.cfg.target_lang
    split = args.split
    os.makedirs(args.out, exist_ok=True)
    task.load_dataset(split)
    ds = task.dataset(split)
    n = len(ds)
    tpaths = split_paths(args.teacher_path)
    teacher_fp = artifacts.teacher_fingerprint(tpaths)
    gold_fp = artifacts.data_fingerprint(args.data, split, src, tgt)
    gen_opts = {k: getattr(args, k) for k in ("beam", "nbest", "max_len_a", "max_len_b", "min_len",
                                              "lenpen", "unkpen", "fp16")}
    if args.bf16:  # only then, so that the fingerprints of float32 and fp16 runs stay as they were
        gen_opts["bf16"] = True
    fingerprint = {"teacher": teacher_fp["ensemble_sha256"], "data": gold_fp["sha256"], "generation": gen_opts}
    out_opts = {"select": args.select, "bleu_remove_bpe": args.bleu_remove_bpe,
                "filter_max_len": args.filter_max_len, "filter_ratio": args.filter_ratio,
                "on_filtered": args.on_filtered, "write_nbest": bool(args.write_nbest)}

    mpath = manifest_path(args.out, split)
    old = artifacts.read_json(mpath)
    if old is not None and old.get("complete") and not args.force and old.get("fingerprint") == fingerprint \
            and old.get("output_options") == out_opts:
        console.result(f"{mpath}: split {split!r} is already complete (use --force to redo it)")
        return old
    if old is not None:
        os.remove(mpath)  # nothing may look complete while files are replaced

    # the original text is checked before any translation work
    src_lines, src_origin = original_lines(args.source_text, args.data, split, src, task.src_dict, ds.src)
    ref_lines, ref_origin = None, None
    if args.select == "bleu" or args.on_filtered == "reference":
        try:
            ref_lines, ref_origin = original_lines(args.target_text, args.data, split, tgt, task.tgt_dict,
                                                   ds.tgt, side="target")
        except DistillError:
            if args.target_text:
                raise
            ref_lines = [" ".join(task.tgt_dict[t] for t in ds.tgt[i].tolist()[:-1]) for i in range(n)]
            ref_origin = "decoded from the binarized ids (with <unk>)"

    if args.restart:
        shutil.rmtree(os.path.join(args.out, f".lskd-partial-{split}"), ignore_errors=True)
    store = PartialStore(args.out, split, fingerprint)
    use_cuda = torch.cuda.is_available() and not args.cpu
    todo = np.ones(n, dtype=bool)
    for i in store.done:
        todo[i] = False
    n_todo = int(todo.sum())
    gen_seconds = 0.0
    if n_todo > 0:
        teacher = Teacher.load(tpaths, task, teacher_data=args.teacher_data, dict_check=args.teacher_dict_check)
        models = teacher.models
        for m in models:
            if args.fp16:
                m.half()
            elif args.bf16:
                m.to(dtype=torch.bfloat16)
            if use_cuda:
                m.cuda()
            m.make_generation_fast_(beamable_mm_beam_size=args.beam, need_attn=False)
        gen_cfg = GenerationConfig(beam=args.beam, nbest=args.nbest, max_len_a=args.max_len_a,
                                   max_len_b=args.max_len_b, min_len=args.min_len, lenpen=args.lenpen,
                                   unkpen=args.unkpen)
        generator = task.build_generator(models, gen_cfg)
        max_pos = utils.resolve_max_positions(task.max_positions(), *[m.max_positions() for m in models])
        indices = ds.ordered_indices()
        indices = indices[todo[indices]]
        indices, ignored = ds.filter_indices_by_size(indices, max_pos)
        if len(ignored) > 0:
            logger.warning(f"{len(ignored)} samples are too long for the teacher ({max_pos}); they are filtered")
            store.add([(int(i), []) for i in ignored])
        batches = ds.batch_by_size(indices, max_tokens=args.max_tokens, max_sentences=args.batch_size,
                                   required_batch_size_multiple=1)
        from tqdm import tqdm

        bar = tqdm(total=n, initial=n - n_todo + len(ignored), unit="sent", desc=f"distill {split}",
                   disable=args.no_progress_bar or console.is_quiet(), file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
        t0 = time.time()
        for batch in batches:
            sample = ds.collater([ds[int(i)] for i in batch])
            if use_cuda:
                sample = utils.move_to_cuda(sample)
            hypos = task.inference_step(generator, models, sample)
            recs = []
            for b, sid in enumerate(sample["id"].tolist()):
                hs = []
                for h in hypos[b][: args.nbest]:
                    toks = h["tokens"].int().cpu().tolist()
                    if toks and toks[-1] == task.tgt_dict.eos():
                        toks = toks[:-1]
                    hs.append([toks, float(h["score"])])
                recs.append((sid, hs))
            store.add(recs)
            bar.update(len(recs))
        gen_seconds = time.time() - t0
        bar.close()
    gen_sent = n_todo
    throughput = gen_sent / gen_seconds if gen_seconds > 0 else float("nan")

    # ---- selection, filtering, outputs
    tdict = task.tgt_dict
    counts = {"total": n, "kept": 0, "empty": 0, "too_long": 0, "ratio": 0, "no_hypothesis": 0}
    filtered_ids, selected_rank = [], [0, 0]
    out_tgt_ids: List[Optional[List[int]]] = []
    out_tgt_text: List[Optional[str]] = []
    for i in range(n):
        hs = store.done.get(i, [])
        src_len = len(ds.src[i]) - 1
        if not hs:
            reason, toks = "no_hypothesis", None
        else:
            k = 0
            if args.select == "bleu" and len(hs) > 1:
                strings = [" ".join(tdict[t] for t in h[0]) for h in hs]
                k = select_by_bleu(strings, ref_lines[i], args.bleu_remove_bpe)
            selected_rank[0 if k == 0 else 1] += 1
            toks = hs[k][0]
            reason = filter_reason(src_len, len(toks), args.filter_max_len, args.filter_ratio)
        if reason is None:
            counts["kept"] += 1
            out_tgt_ids.append(toks)
            out_tgt_text.append(" ".join(tdict[t] for t in toks))
        else:
            counts[reason] += 1
            filtered_ids.append(i)
            if args.on_filtered == "reference":
                out_tgt_ids.append(ds.tgt[i].tolist()[:-1])
                out_tgt_text.append(ref_lines[i])
            else:
                out_tgt_ids.append(None)
                out_tgt_text.append(None)
    keep = [i for i in range(n) if out_tgt_ids[i] is not None]

    tmp = os.path.join(args.out, f".lskd-tmp-{split}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with open(os.path.join(tmp, f"{split}.{src}"), "w", encoding="utf-8") as fs, \
            open(os.path.join(tmp, f"{split}.{tgt}"), "w", encoding="utf-8") as ft, \
            open(os.path.join(tmp, f"{split}.ids"), "w", encoding="utf-8") as fi:
        for i in keep:
            fs.write(src_lines[i] + "\n")
            ft.write(out_tgt_text[i] + "\n")
            fi.write(f"{i}\n")
    if args.write_nbest:
        with open(os.path.join(tmp, f"{split}.nbest.{tgt}"), "w", encoding="utf-8") as fn:
            for i in range(n):
                for r, (toks, score) in enumerate(store.done.get(i, [])):
                    fn.write(f"{i}\t{r}\t{score:.6f}\t{' '.join(tdict[t] for t in toks)}\n")
    gprefix = artifacts.find_split_prefix(args.data, split, src, tgt)
    oprefix = os.path.join(tmp, f"{split}.{src}-{tgt}.")
    if len(keep) == n:
        for ext in ("bin", "idx"):
            shutil.copyfile(f"{gprefix}{src}.{ext}", f"{oprefix}{src}.{ext}")
    else:
        b = indexed_dataset.make_builder(oprefix + src + ".bin", impl="mmap", vocab_size=len(task.src_dict))
        for i in keep:
            b.add_item(ds.src[i].int())
        b.finalize(oprefix + src + ".idx")
    b = indexed_dataset.make_builder(oprefix + tgt + ".bin", impl="mmap", vocab_size=len(tdict))
    for i in keep:
        b.add_item(torch.IntTensor(out_tgt_ids[i] + [tdict.eos()]))
    b.finalize(oprefix + tgt + ".idx")
    for lang in (src, tgt):
        shutil.copyfile(os.path.join(args.data, f"dict.{lang}.txt"), os.path.join(tmp, f"dict.{lang}.txt"))
    written = sorted(os.listdir(tmp))
    for name in written:
        os.replace(os.path.join(tmp, name), os.path.join(args.out, name))
    os.rmdir(tmp)
    total = sum(os.path.getsize(os.path.join(args.out, name)) for name in written)
    files = {name: integrity.file_record(os.path.join(args.out, name), sha256=total <= integrity.HASH_LIMIT_BYTES)
             for name in written}
    # the other splits, so that the output is a complete data-bin
    linked = []
    for name in sorted(os.listdir(args.data)):
        parts = name.split(".")
        if len(parts) == 4 and parts[-1] in ("bin", "idx") and parts[0] != split \
                and parts[1] in (f"{src}-{tgt}", f"{tgt}-{src}"):
            dst = os.path.join(args.out, name)
            if os.path.exists(dst) or os.path.islink(dst):
                continue
            srcpath = os.path.abspath(os.path.join(args.data, name))
            if args.copy_other_splits:
                shutil.copyfile(srcpath, dst)
            else:
                os.symlink(srcpath, dst)
            linked.append(name)

    manifest = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "split": split,
        "source_lang": src, "target_lang": tgt, "gold_data": gold_fp, "teacher": teacher_fp,
        "fingerprint": fingerprint, "output_options": out_opts,
        "src_dict_sha256": artifacts.dictionary_sha256(task.src_dict),
        "tgt_dict_sha256": artifacts.dictionary_sha256(tdict),
        "source_text": src_origin, "reference_text": ref_origin,
        "on_filtered": args.on_filtered, "n_samples": n, "n_output": len(keep),
        "counts": counts, "filtered_ids": filtered_ids,
        "selected_not_top_beam": selected_rank[1],
        "resumed_from_partial": store.resumed, "generated_now": gen_sent,
        "generation_seconds": gen_seconds, "sentences_per_second": throughput,
        "other_splits": "copied" if args.copy_other_splits else "symlinked", "other_split_files": linked,
        "elapsed_seconds": time.time() - t_start, "files": files, "command": _rebuild_command(args),
        "complete": True,
    }
    atomic_write_json(mpath, manifest)  # last: marks the split complete
    store.close(remove=True)
    filt = {k: v for k, v in counts.items() if k not in ("total", "kept")}
    console.say(
        f"lskd-distill-data: split {split!r}: {n} samples, {counts['kept']} kept, "
        f"{len(filtered_ids)} filtered ({_fmt_counts(filt)}) -> "
        f"{'reference kept' if args.on_filtered == 'reference' else 'dropped'}; "
        f"Seq-Inter picked a non-top hypothesis for {selected_rank[1]}; "
        f"generated {gen_sent} sentences in {gen_seconds:.1f}s ({throughput:.2f} sentences/s)"
        + (f", resumed {store.resumed}" if store.resumed else "")
    )
    console.result(f"lskd-distill-data: wrote {args.out} (manifest {mpath})")
    return manifest


def _rebuild_command(args) -> str:
    """The command that makes this split again (recorded in the manifest, quoted by its reader)."""
    cmd = ["lskd-distill-data", args.data, "--teacher-path", args.teacher_path, "--out", args.out,
           "--split", args.split, "--beam", str(args.beam), "--force"]
    return shlex.join(cmd + (["--bf16"] if args.bf16 else []) + (["--fp16"] if args.fp16 else []))


def main(argv=None) -> int:
    return run_tool("lskd-distill-data", get_parser(), run, argv)
