"""Offline teacher artifacts: fingerprints, atomic files and the top-k teacher cache.

Two tools write artifacts that training reads later:

* ``lskd-distill-data`` writes a distilled data-bin (see ``lskd_fairseq.distill``)
  with a manifest ``<split>.distill.json``;
* ``lskd-teacher-cache`` writes a top-k cache (this module's ``TopKCacheWriter``).

Both record *fingerprints* of what they were made from (teacher checkpoint
bytes, dictionaries, binarized data) so that training can refuse an artifact
made for something else, with a clear message, before the first update.

Top-k cache layout, for one split, in a directory ``DIR``::

    DIR/<split>.topk.json      header (written last; "complete": true)
    DIR/<split>.topk.ids       (n_tokens, k) token ids, uint16 (vocab <= 65536) else int32
    DIR/<split>.topk.logits    (n_tokens, k) teacher logits, float16, descending per row
    DIR/<split>.topk.offsets   (n_samples + 1,) int64 row offsets, indexed by sample id

Rows ``offsets[i]:offsets[i+1]`` hold the target tokens of sample ``i`` (EOS
included, as in fairseq's targets). With uint16 ids a token costs ``4 * k``
bytes (plus 8 bytes per sentence for the offsets).
"""

import hashlib
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from lskd_fairseq.atomic import atomic_path, atomic_write_json
from lskd_fairseq import integrity
from lskd_fairseq.integrity import ArtifactError, sha256_file  # noqa: F401 (re-exported)

CACHE_FORMAT = "lskd-topk-cache"
CACHE_VERSION = 1


# --------------------------------------------------------------------------- hashes


def teacher_fingerprint(paths: Sequence[str]) -> Dict[str, object]:
    """SHA-256 of each teacher checkpoint's bytes and of the ensemble as a whole."""
    files = [sha256_file(p) for p in paths]
    return {"paths": [os.path.abspath(p) for p in paths], "sha256": files,
            "ensemble_sha256": hashlib.sha256(":".join(files).encode()).hexdigest()}


def dictionary_sha256(dictionary) -> str:
    """Hash of a fairseq Dictionary's symbols (or a list of symbols), in order, specials included."""
    symbols = getattr(dictionary, "symbols", dictionary)
    return hashlib.sha256("\n".join(symbols).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- dictionaries


def dictionary_fingerprint(dictionary) -> Dict[str, object]:
    """What an artifact header records of a dictionary: its size and ``dictionary_sha256``."""
    return {"size": len(dictionary.symbols), "sha256": dictionary_sha256(dictionary)}


def dictionary_difference(expected, actual, size_only: bool = False) -> Optional[str]:
    """THE dictionary comparison (teacher check, distilled-corpus check, cache check).

    ``expected`` and ``actual`` are fairseq Dictionaries (or lists of symbols), or a
    fingerprint ``{"size", "sha256"}`` read from an artifact's header. Returns None
    when they are the same symbols in the same order, else what differs: the sizes
    and the first differing symbol, or the hashes when one side is a fingerprint.
    ``size_only`` compares the sizes only (an explicit opt-out; ``expected`` may then
    be a plain size).
    """

    def symbols(d):
        return None if isinstance(d, (dict, int)) else list(getattr(d, "symbols", d))

    def size(d):
        if isinstance(d, int):
            return d
        return d.get("size") if isinstance(d, dict) else len(symbols(d))

    n_exp, n_act = size(expected), size(actual)
    if size_only:
        return None if n_exp == n_act else f"{n_exp} vs {n_act} symbols"
    sym_exp, sym_act = symbols(expected), symbols(actual)
    if sym_exp is None or sym_act is None:
        sha_exp = expected.get("sha256") if sym_exp is None else dictionary_sha256(sym_exp)
        sha_act = actual.get("sha256") if sym_act is None else dictionary_sha256(sym_act)
        if sha_exp == sha_act and (n_exp is None or n_act is None or n_exp == n_act):
            return None
        return (f"{n_exp if n_exp is not None else '?'} vs {n_act} symbols, other symbols "
                f"(SHA-256 {str(sha_exp)[:12]} vs {str(sha_act)[:12]})")
    if sym_exp == sym_act:
        return None
    n = min(len(sym_exp), len(sym_act))
    first = next((i for i in range(n) if sym_exp[i] != sym_act[i]), n)
    at = (f"{sym_exp[first]!r} vs {sym_act[first]!r}" if first < n
          else f"the longer one continues with {(sym_exp if len(sym_exp) > n else sym_act)[n]!r}")
    n_diff = sum(a != b for a, b in zip(sym_exp, sym_act)) + abs(len(sym_exp) - len(sym_act))
    return f"{len(sym_exp)} vs {len(sym_act)} symbols, {n_diff} differ, first at index {first}: {at}"


def check_same_dictionary(expected, actual, what: str, fix: str, error=ArtifactError,
                          size_only: bool = False) -> None:
    """Raise ``error`` naming ``what`` differs (``expected`` vs ``actual``) and the ``fix``."""
    diff = dictionary_difference(expected, actual, size_only=size_only)
    if diff is not None:
        raise error(f"{what} ({diff}); {fix}")


def find_split_prefix(data: str, split: str, src: str, tgt: str) -> str:
    """The file prefix fairseq uses for ``split`` (``data/split.src-tgt.``, either order)."""
    for a, b in ((src, tgt), (tgt, src)):
        prefix = os.path.join(data, f"{split}.{a}-{b}.")
        if os.path.exists(prefix + src + ".bin") and os.path.exists(prefix + src + ".idx"):
            return prefix
    raise ArtifactError(
        f"no binarized split {split!r} for {src}-{tgt} in {data} "
        f"(expected {split}.{src}-{tgt}.{src}.bin/.idx, as fairseq-preprocess writes)"
    )


def data_fingerprint(data: str, split: str, src: str, tgt: str) -> Dict[str, object]:
    """SHA-256 of a binarized split's files (source and target, .bin and .idx)."""
    prefix = find_split_prefix(data, split, src, tgt)
    h = hashlib.sha256()
    for lang in (src, tgt):
        for ext in ("idx", "bin"):
            path = prefix + lang + "." + ext
            if not os.path.exists(path):
                raise ArtifactError(f"missing {path}")
            h.update(sha256_file(path).encode())
    return {"data": os.path.abspath(data), "split": split, "sha256": h.hexdigest()}


# --------------------------------------------------------------------------- atomic files


def read_json(path: str) -> Optional[dict]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------- top-k cache


def cache_paths(cache_dir: str, split: str) -> Dict[str, str]:
    base = os.path.join(cache_dir, f"{split}.topk")
    return {"header": base + ".json", "ids": base + ".ids", "logits": base + ".logits",
            "offsets": base + ".offsets"}


def id_dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.int32)


class TopKCacheWriter:
    """Writes a split's cache to temporary files, renamed into place by ``finish``."""

    def __init__(self, cache_dir: str, split: str, target_sizes: np.ndarray, k: int, vocab_size: int):
        os.makedirs(cache_dir, exist_ok=True)
        self.paths = cache_paths(cache_dir, split)
        # an older complete header must not describe the half-written files
        if os.path.exists(self.paths["header"]):
            os.remove(self.paths["header"])
        sizes = np.asarray(target_sizes, dtype=np.int64)
        self.offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        self.n_tokens = int(self.offsets[-1])
        self.k = k
        self.id_dtype = id_dtype_for(vocab_size)
        shape = (max(1, self.n_tokens), k)
        self._tmps = [self.paths["ids"] + ".tmp", self.paths["logits"] + ".tmp"]
        try:  # the whole maps reserved now: a full disk fails here, not as a SIGBUS mid-way
            for tmp, dtype in zip(self._tmps, (self.id_dtype, np.dtype(np.float16))):
                with open(tmp, "wb"):
                    pass
                integrity.preallocate(tmp, shape[0] * shape[1] * dtype.itemsize)
            self._ids = np.memmap(self._tmps[0], dtype=self.id_dtype, mode="r+", shape=shape)
            self._logits = np.memmap(self._tmps[1], dtype=np.float16, mode="r+", shape=shape)
        except OSError as e:
            self.abort()
            if integrity.is_out_of_space(e):
                raise integrity.out_of_space(self.paths["logits"], e) from None
            raise
        self._written = np.zeros(len(sizes), dtype=bool)

    def abort(self) -> None:
        """Remove the temporary files (a failed or interrupted run leaves no partial cache)."""
        self._ids = self._logits = None
        for tmp in self._tmps:
            if os.path.exists(tmp):
                os.remove(tmp)

    def write(self, ids: Sequence[int], idx: torch.Tensor, vals: torch.Tensor, target_mask: torch.Tensor) -> None:
        """Store a batch: ``idx``/``vals`` (B, T, k); ``target_mask`` (B, T) True on real tokens."""
        idx = idx.detach().cpu()
        vals = vals.detach().cpu()
        target_mask = target_mask.cpu()
        for b, sid in enumerate(ids):
            m = target_mask[b]
            lo, hi = self.offsets[sid], self.offsets[sid + 1]
            if int(m.sum()) != hi - lo:
                raise ArtifactError(
                    f"sample {sid}: {int(m.sum())} target tokens, but the dataset's sizes say {hi - lo}"
                )
            self._ids[lo:hi] = idx[b][m].numpy().astype(self.id_dtype)
            self._logits[lo:hi] = vals[b][m].float().numpy().astype(np.float16)
            self._written[sid] = True

    def finish(self, header: dict) -> dict:
        if not self._written.all():
            missing = np.flatnonzero(~self._written)
            raise ArtifactError(f"{len(missing)} samples were not scored (first: {missing[:5].tolist()})")
        self._ids.flush()
        self._logits.flush()
        del self._ids, self._logits
        with atomic_path(self.paths["offsets"], suffix=".npy") as tmp:
            np.save(tmp, self.offsets)
        os.replace(self.paths["ids"] + ".tmp", self.paths["ids"])
        os.replace(self.paths["logits"] + ".tmp", self.paths["logits"])
        total = sum(os.path.getsize(self.paths[p]) for p in ("ids", "logits", "offsets"))
        header = dict(header)
        hash_files = total <= integrity.HASH_LIMIT_BYTES
        header["files"] = {p: integrity.file_record(self.paths[p], sha256=hash_files)
                           for p in ("ids", "logits", "offsets")}
        header.update(
            format=CACHE_FORMAT, version=CACHE_VERSION, k=self.k, id_dtype=self.id_dtype.name,
            logit_dtype="float16", n_samples=len(self.offsets) - 1, n_tokens=self.n_tokens,
            total_bytes=total, bytes_per_token=total / max(1, self.n_tokens), complete=True,
        )
        atomic_write_json(self.paths["header"], header)  # last: marks the cache complete
        return header


class TopKCache:
    """Read side of a split's cache; memory-mapped, opened lazily (safe across fork)."""

    def __init__(self, cache_dir: str, split: str):
        self.cache_dir = cache_dir
        self.split = split
        self.paths = cache_paths(cache_dir, split)
        generic = f"lskd-teacher-cache DATA --split {split} --teacher-path T.pt --out {cache_dir}"
        header = integrity.load_json(self.paths["header"], "teacher cache header", required=False, rebuild=generic)
        if header is None:
            raise ArtifactError(
                f"teacher cache {cache_dir} has no complete cache for split {split!r} "
                f"({self.paths['header']} missing); make one with `{generic}`"
            )
        if header.get("format") != CACHE_FORMAT or not header.get("complete"):
            raise ArtifactError(f"{self.paths['header']} is not a complete lskd top-k cache header")
        if header.get("version") != CACHE_VERSION:
            raise ArtifactError(f"{self.paths['header']}: cache version {header.get('version')}, "
                                f"this lskd reads version {CACHE_VERSION}; remake the cache")
        self.header = header
        self.k = int(header["k"])
        self._check_files(header.get("command") or generic)
        self._mm = None

    def _check_files(self, rebuild: str) -> None:
        """Every file complete: the sizes its header implies (and records), the hashes it records."""
        h = self.header
        rows = max(1, int(h["n_tokens"])) * self.k
        integrity.check_raw(self.paths["ids"], rows * np.dtype(h["id_dtype"]).itemsize, rebuild)
        integrity.check_raw(self.paths["logits"], rows * 2, rebuild)
        integrity.check_npy(self.paths["offsets"], (int(h["n_samples"]) + 1,), np.int64, rebuild)
        for name, record in (h.get("files") or {}).items():
            integrity.check_file_record(self.paths[name], record, rebuild)

    def _open(self):
        if self._mm is None:
            h = self.header
            shape = (max(1, int(h["n_tokens"])), self.k)
            ids = np.memmap(self.paths["ids"], dtype=np.dtype(h["id_dtype"]), mode="r", shape=shape)
            logits = np.memmap(self.paths["logits"], dtype=np.float16, mode="r", shape=shape)
            offsets = np.load(self.paths["offsets"], allow_pickle=False)
            if len(offsets) != int(h["n_samples"]) + 1 or int(offsets[-1]) != int(h["n_tokens"]):
                raise ArtifactError(f"teacher cache {self.cache_dir}/{self.split}: offsets disagree with header")
            self._mm = (ids, logits, offsets)
        return self._mm

    def sizes(self) -> np.ndarray:
        return np.diff(self._open()[2])

    def lookup(self, ids: Sequence[int], target: torch.Tensor, pad: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Top-k ``(indices int64, logits float16)`` of shape (B, T, k) for a collated target."""
        id_mm, logit_mm, offsets = self._open()
        mask = target.ne(pad)
        lens = mask.sum(1).tolist()
        chunks = []
        for b, sid in enumerate(ids):
            lo, hi = int(offsets[sid]), int(offsets[sid + 1])
            if hi - lo != lens[b]:
                raise ArtifactError(
                    f"teacher cache {self.cache_dir}/{self.split}: sample {sid} has {hi - lo} cached "
                    f"tokens but its target has {lens[b]}; the cache was made for other data"
                )
            chunks.append(np.arange(lo, hi))
        rows = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        bsz, tlen = target.shape
        out_idx = torch.full((bsz, tlen, self.k), pad, dtype=torch.long)
        out_val = torch.zeros((bsz, tlen, self.k), dtype=torch.float16)
        out_idx[mask] = torch.from_numpy(id_mm[rows].astype(np.int64))
        out_val[mask] = torch.from_numpy(np.ascontiguousarray(logit_mm[rows]))
        return out_idx, out_val

    def dictionary_fingerprints(self) -> Tuple[Dict[str, object], Dict[str, object]]:
        """The (source, target) dictionary fingerprints the cache was made with."""
        h = self.header
        return tuple({"size": h.get(f"{side}_dict_size"), "sha256": h.get(f"{side}_dict_sha256")}
                     for side in ("src", "tgt"))

    def check(self, *, topk: int, data_fp: Dict[str, object], src_dict, tgt_dict,
              n_samples: int, teacher_fp: Optional[Dict[str, object]] = None, what: str = "") -> None:
        """Refuse the cache, with a clear message, if it does not fit the training run."""
        h = self.header
        where = f"teacher cache {self.cache_dir} (split {self.split!r})"
        if topk <= 0:
            raise ArtifactError(
                f"{where} holds the teacher's top-{self.k} tokens only; --kd-topk 0 (full vocabulary) "
                f"cannot be served from it: use --kd-topk K with 1 <= K <= {self.k}"
            )
        if topk > self.k:
            raise ArtifactError(
                f"{where} was made with k={self.k}, smaller than the requested --kd-topk {topk}; "
                f"use --kd-topk <= {self.k} or remake the cache with lskd-teacher-cache --k {topk}"
            )
        for side, theirs, ours in zip(("source", "target"), self.dictionary_fingerprints(), (src_dict, tgt_dict)):
            check_same_dictionary(
                theirs, ours, f"{where} was made with other dictionaries than this task's: its {side} "
                f"dictionary (from {h.get('data', {}).get('data')}) differs", "remake it for this data-bin")
        if int(h["n_samples"]) != n_samples or h.get("data", {}).get("sha256") != data_fp["sha256"]:
            raise ArtifactError(
                f"{where} was made for other data: cache {h.get('data', {}).get('data')} split "
                f"{h.get('data', {}).get('split')!r} with {h['n_samples']} samples / {h['n_tokens']} tokens, "
                f"but {what or 'the training data'} is {data_fp['data']} split {data_fp['split']!r} with "
                f"{n_samples} samples (content hashes differ); remake the cache for this data"
            )
        if teacher_fp is not None:
            cached = h.get("teacher", {}).get("ensemble_sha256")
            if cached != teacher_fp["ensemble_sha256"]:
                raise ArtifactError(
                    f"{where} was made by another teacher ({h.get('teacher', {}).get('paths')}) than "
                    f"--teacher-path {teacher_fp['paths']} (checkpoint hashes differ); remake the cache with "
                    f"lskd-teacher-cache --teacher-path of this teacher, or train with the teacher it was made with"
                )


# --------------------------------------------------------------------------- distilled corpora

MANIFEST_FORMAT = "lskd-distilled-data"
MANIFEST_VERSION = 1


class DistillError(ArtifactError):
    """Inputs that cannot give a faithful distilled corpus."""


def manifest_path(out: str, split: str) -> str:
    return os.path.join(out, f"{split}.distill.json")



def check_distilled_against_gold(ddir, split, src, tgt, gold_dir, n_gold, src_dict, tgt_dict, required=True):
    """Load the distilled targets of ``split`` from ``ddir``, refusing a mismatch with
    the gold data (size, source sentences, dictionaries). Returns None when the split
    is absent and not ``required``."""
    from fairseq.data import Dictionary, data_utils

    if not os.path.isdir(ddir):
        raise DistillError(f"--distilled-data: no such directory: {ddir}")
    generic = f"lskd-distill-data GOLD --teacher-path T.pt --out {ddir} --split {split} --force"
    man = integrity.load_json(manifest_path(ddir, split), "distilled-data manifest", required=False, rebuild=generic)
    if man is None:
        if not required:
            return None
        raise DistillError(
            f"--distilled-data {ddir}: no complete distilled split {split!r} ({manifest_path(ddir, split)} "
            f"missing: not made by lskd-distill-data, or the run was interrupted; rerun it)"
        )
    if man.get("format") != MANIFEST_FORMAT or not man.get("complete"):
        raise DistillError(f"{manifest_path(ddir, split)} is not a complete lskd-distill-data manifest")
    where = f"--distilled-data {ddir} (split {split!r})"
    rebuild = man.get("command") or generic
    try:
        for name, record in (man.get("files") or {}).items():  # complete, as written (sizes, hashes)
            integrity.check_file_record(os.path.join(ddir, name), record, rebuild)
    except ArtifactError as e:
        raise DistillError(str(e)) from None
    for lang, d in ((src, src_dict), (tgt, tgt_dict)):
        path = os.path.join(ddir, f"dict.{lang}.txt")
        if not os.path.isfile(path):
            raise DistillError(f"{where}: missing dictionary {path}")
        check_same_dictionary(
            Dictionary.load(path), d, f"{where}: its {lang} dictionary differs from the gold data's",
            "distil from this data-bin with its teacher", error=DistillError)
    if man.get("n_output") != n_gold or man.get("on_filtered") == "drop":
        raise DistillError(
            f"{where} has {man.get('n_output')} samples, the gold split has {n_gold}"
            + (" (it was made with --on-filtered drop, which is not aligned by sample id; remake it "
               "with --on-filtered reference)" if man.get("on_filtered") == "drop" else "")
        )
    dprefix = find_split_prefix(ddir, split, src, tgt)
    gprefix = find_split_prefix(gold_dir, split, src, tgt)
    dsrc = data_utils.load_indexed_dataset(dprefix + src, src_dict)
    dtgt = data_utils.load_indexed_dataset(dprefix + tgt, tgt_dict)
    gsrc = data_utils.load_indexed_dataset(gprefix + src, src_dict)
    if dsrc is None or dtgt is None or gsrc is None:
        raise DistillError(f"{where}: could not open the binarized files ({dprefix}*)")
    if len(dsrc) != n_gold or len(dtgt) != n_gold or len(gsrc) != n_gold:
        raise DistillError(
            f"{where}: {len(dsrc)} source / {len(dtgt)} target samples, the gold split has {n_gold}"
        )
    same = np.array_equal(np.asarray(dsrc.sizes), np.asarray(gsrc.sizes))
    if same:
        same = sha256_file(dprefix + src + ".bin") == sha256_file(gprefix + src + ".bin")
    if not same:
        first = next(i for i in range(n_gold) if not torch.equal(dsrc[i], gsrc[i]))
        raise DistillError(
            f"{where}: its source sentences differ from the gold data's, first at sample {first}; "
            f"it was distilled from other data (or in another order)"
        )
    return dtgt



def setup_translation_task(data, src, tgt, max_src=1024, max_tgt=1024):
    """A plain fairseq ``TranslationTask`` over ``data`` (for the tools that read a data-bin)."""
    from lskd_fairseq import fairseq_compat

    fairseq_compat.apply()  # checkpoint loading under torch >= 2.6
    from fairseq.tasks.translation import TranslationConfig, TranslationTask

    cfg = TranslationConfig(data=data, source_lang=src, target_lang=tgt,
                            max_source_positions=max_src, max_target_positions=max_tgt,
                            train_subset="train", dataset_impl=None, required_seq_len_multiple=1)
    task = TranslationTask.setup_task(cfg)
    return task



__all__: List[str] = [
    "ArtifactError", "DistillError", "check_same_dictionary", "dictionary_difference", "dictionary_fingerprint", "MANIFEST_FORMAT", "MANIFEST_VERSION", "TopKCache", "TopKCacheWriter",
    "cache_paths", "check_distilled_against_gold", "data_fingerprint", "dictionary_sha256",
    "find_split_prefix", "manifest_path", "read_json", "setup_translation_task", "sha256_file",
    "teacher_fingerprint",
]
