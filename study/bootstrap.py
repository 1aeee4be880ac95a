"""Paired bootstrap of a corpus-BLEU difference between two systems (Koehn 2004).

Uses sacreBLEU's per-sentence sufficient statistics, so every resample's BLEU is
exactly what sacreBLEU's corpus BLEU would give on that resample. This measures
test-set sampling noise only (not seed-to-seed training noise).
"""

from typing import Dict, List, Optional

import numpy as np


def _read(path: str) -> List[str]:
    from lskd_fairseq.cli.bleu import read_lines  # the same reading as lskd-bleu / sacrebleu

    return read_lines(path)


def paired_bootstrap(hyp_a: List[str], hyp_b: List[str], refs: List[str], n: int = 1000,
                     seed: int = 0) -> Dict[str, float]:
    """BLEU(a) - BLEU(b) with a 95% bootstrap interval and the share of resamples where a > b."""
    from sacrebleu.metrics import BLEU

    if not (len(hyp_a) == len(hyp_b) == len(refs)):
        raise ValueError(f"{len(hyp_a)}, {len(hyp_b)} hypotheses and {len(refs)} references")
    bleu = BLEU()
    sa = np.asarray(bleu._extract_corpus_statistics(hyp_a, [refs]), dtype=np.float64)
    sb = np.asarray(bleu._extract_corpus_statistics(hyp_b, [refs]), dtype=np.float64)

    def score(stats):
        return bleu._compute_score_from_stats([int(round(x)) for x in stats]).score

    full = score(sa.sum(0)) - score(sb.sum(0))
    rng = np.random.default_rng(seed)
    m = len(refs)
    diffs = np.empty(n)
    for k in range(n):
        idx = rng.integers(0, m, size=m)
        diffs[k] = score(sa[idx].sum(0)) - score(sb[idx].sum(0))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": float(full), "ci_low": float(lo), "ci_high": float(hi), "p_a_better": float((diffs > 0).mean()),
            "n_resamples": n, "n_sentences": m}


def compare_results(a: Dict, b: Dict, n: int = 1000) -> Optional[Dict[str, float]]:
    """Paired bootstrap for two lskd-bleu result dicts (their hyp_file and ref_file); None if missing."""
    import os

    try:
        ha, hb, ref = a.get("hyp_file"), b.get("hyp_file"), a.get("ref_file")
        if not (ha and hb and ref and os.path.isfile(ha) and os.path.isfile(hb) and os.path.isfile(ref)):
            return None
        return paired_bootstrap(_read(ha), _read(hb), _read(ref), n=n)
    except Exception:  # noqa: BLE001 - the report falls back to the plain difference
        return None
