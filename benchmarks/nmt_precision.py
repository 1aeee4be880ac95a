"""bfloat16 training steps for the in-process NMT benchmarks (``--bf16`` of bench_seqkd.py and
bench_kd_criterion.py), set up the way fairseq's ``Trainer`` does under ``fairseq-train --bf16``
(fairseq/trainer.py ``Trainer.__init__``, ``_build_optimizer``, ``_fp_convert_sample``): the
model and criterion are cast to bfloat16, float32 tensors of a batch become bfloat16, and the
optimizer is fairseq's ``FP16Optimizer`` around the configured one (float32 master weights,
no loss scaling for bf16). An online teacher follows the student's dtype by itself
(``lskd_fairseq.teacher``). Losses: the criteria upcast to float32 where they need it.
"""

import itertools

import torch


def bf16_parts(cfg, model, criterion):
    """(model, criterion, optimizer) for bf16 training; ``cfg`` parsed with ``--bf16``."""
    from fairseq import optim

    if not getattr(cfg.common, "bf16", False):
        raise ValueError("parse the options with --bf16 first")
    model = model.to(dtype=torch.bfloat16)
    criterion = criterion.to(dtype=torch.bfloat16)
    params = [p for p in itertools.chain(model.parameters(), criterion.parameters()) if p.requires_grad]
    return model, criterion, optim.FP16Optimizer.build_optimizer(cfg, params)


def bf16_sample(sample):
    """The batch as fairseq's trainer hands it to the criterion under --bf16."""
    from fairseq import utils

    return utils.apply_to_sample(lambda t: t.to(dtype=torch.bfloat16) if t.dtype is torch.float32 else t, sample)


def backward(optimizer, loss):
    """``optimizer.backward`` for fairseq's wrappers, ``loss.backward`` for a torch optimizer."""
    if hasattr(optimizer, "fp32_optimizer") or hasattr(optimizer, "wrapped_optimizer"):
        optimizer.backward(loss)
    else:
        loss.backward()
