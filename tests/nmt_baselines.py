"""An untrained baseline for the NMT tests: a checkpoint of the same architecture as a
trained one, with fairseq's initial weights, so that a test can ask whether training
taught a model anything (its test BLEU above the untrained twin's)."""

import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def untrained_twin(checkpoint: Path, out: Path, seed: int = 0) -> Path:
    """Write to ``out`` the checkpoint ``checkpoint`` with its weights replaced by a freshly
    initialised model of the same configuration (fairseq's own initialisation)."""
    from fairseq import checkpoint_utils, tasks

    import lskd_fairseq.tasks  # noqa: F401 - registers translation_kd (the students' task)
    from lskd_fairseq import fairseq_compat

    fairseq_compat.apply()
    cfg = checkpoint_utils.load_checkpoint_to_cpu(str(checkpoint))["cfg"]  # as an OmegaConf config
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(seed)
    model = task.build_model(cfg.model)
    state = torch.load(checkpoint, weights_only=True)  # the file's own contents, cfg as plain dicts
    assert set(model.state_dict()) == set(state["model"]), "not the same architecture"
    state["model"] = model.state_dict()
    torch.save(state, out)
    return out


def score(data: Path, checkpoint: Path, ref: Path, work: Path, spm=None, beam: int = 2) -> dict:
    """Test-set BLEU/chrF of one checkpoint, through the recipes' evaluation tool."""
    cmd = [sys.executable, "-m", "lskd_fairseq.cli.evaluate", str(data), "--ref", str(ref),
           "--results-dir", str(work / "results"), "--gen-dir", str(work / "gen"), "--model", f"m={checkpoint}",
           "--user-dir", str(REPO / "lskd_fairseq")]
    if spm:
        cmd += ["--spm", str(spm)]
    cmd += ["--", "--beam", str(beam), "--max-tokens", "8000", "--max-len-a", "1.2", "--max-len-b", "10", "--cpu",
            "--required-batch-size-multiple", "1"]
    from lskd_fairseq.warning_filters import subprocess_env

    env = subprocess_env()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((work / "results" / "m.json").read_text(encoding="utf-8"))


def test_nll(data: Path, checkpoint: Path, subset: str = "test") -> float:
    """Per-token NLL (nats) of the gold ``subset`` targets under ``checkpoint``, teacher-forced,
    read as plain translation (whatever lskd task the model was trained with)."""
    from fairseq import checkpoint_utils
    from fairseq.tasks.translation import TranslationTask

    from lskd_fairseq import fairseq_compat

    fairseq_compat.apply()
    state = checkpoint_utils.load_checkpoint_to_cpu(str(checkpoint))
    cfg = state["cfg"]
    cfg.task.data = str(data)
    task = TranslationTask.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    model.load_state_dict(state["model"])
    model.eval()
    task.load_dataset(subset)
    itr = task.get_batch_iterator(dataset=task.dataset(subset), max_tokens=8000,
                                  required_batch_size_multiple=1).next_epoch_itr(shuffle=False)
    total, count = 0.0, 0
    pad = task.target_dictionary.pad()
    with torch.no_grad():
        for sample in itr:
            out = model(**sample["net_input"])
            lprobs = model.get_normalized_probs(out, log_probs=True)
            target = sample["target"]
            nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            mask = target.ne(pad)
            total += float(nll[mask].sum())
            count += int(mask.sum())
    return total / count
