"""Paired bootstrap of two systems' corpus BLEU on one test set (Koehn 2004).

A thin wrapper over sacreBLEU's public significance API
(``sacrebleu.significance.PairedTest`` with ``test_type="bs"`` and
``sacrebleu.metrics.BLEU`` at its defaults, as ``lskd-bleu`` scores). It
measures test-set sampling noise only: which sentences happened to be in the
test set. It says nothing about seed-to-seed training noise, which the t-interval
over seeds (``stats.py``) measures.
"""

import os
from typing import Dict, List, Optional

N_RESAMPLES = 1000
SEED = 12345  # sacreBLEU's own default seed (SACREBLEU_SEED)


def _read(path: str) -> List[str]:
    from lskd_fairseq.cli.bleu import read_lines  # the same reading as lskd-bleu / sacrebleu

    return read_lines(path)


def paired_bootstrap(hyp_a: List[str], hyp_b: List[str], refs: List[str], n: int = N_RESAMPLES) -> Dict:
    """BLEU(a) - BLEU(b) with sacreBLEU's paired-bootstrap p-value (two-sided: is the
    difference larger than chance?) and each system's bootstrap mean and 95% half-width."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    if not (len(hyp_a) == len(hyp_b) == len(refs)):
        raise ValueError(f"{len(hyp_a)}, {len(hyp_b)} hypotheses and {len(refs)} references")
    old = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(SEED)
    try:
        test = PairedTest([("b", hyp_b), ("a", hyp_a)], {"BLEU": BLEU()}, [refs], test_type="bs", n_samples=n)
        signatures, scores = test()
    finally:
        if old is None:
            os.environ.pop("SACREBLEU_SEED", None)
        else:
            os.environ["SACREBLEU_SEED"] = old
    key = next(k for k in scores if k != "System")
    base, sys_ = scores[key][0], scores[key][1]
    # sacreBLEU counts resampled differences strictly larger than the observed one, so two identical
    # systems (every difference 0) would get the smallest p-value: no difference is no evidence
    p_value = 1.0 if list(hyp_a) == list(hyp_b) else float(sys_.p_value)
    return {"diff": float(sys_.score - base.score), "p_value": p_value,
            "a": float(sys_.score), "b": float(base.score),
            "a_ci": float(sys_.ci), "b_ci": float(base.ci),
            "n_resamples": n, "n_sentences": len(refs), "signature": str(signatures[key])}


def compare_results(a: Dict, b: Dict, n: int = N_RESAMPLES) -> Optional[Dict]:
    """Paired bootstrap for two lskd-bleu result dicts (their hyp_file and ref_file); None when
    a file is missing (the report then says so)."""
    ha, hb, ref = a.get("hyp_file"), b.get("hyp_file"), a.get("ref_file")
    if not (ha and hb and ref and os.path.isfile(ha) and os.path.isfile(hb) and os.path.isfile(ref)):
        return None
    return paired_bootstrap(_read(ha), _read(hb), _read(ref), n=n)
