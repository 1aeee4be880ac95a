"""torchrun DDP with 2 CPU processes (gloo) matches one process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from lskd_vision.synthetic import make_image_folder
from lskd_vision.train import main

# mlp: no batch norm, so per-process batch statistics cannot differ from the
# single-process ones (SyncBatchNorm needs CUDA); no augmentation, so both runs
# see the same pixels. Sampler order, gradient averaging, loss normalisation and
# the sharded evaluation are what is compared.
COMMON = ["--model", "mlp", "--epochs", "2", "--lr", "0.1", "--no-augment", "--workers", "0", "--no-progress",
          "--label-smoothing", "0.1", "--cache-images", "yes"]


def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    data = make_image_folder(str(tmp_path / "d"), num_classes=4, per_class=24, test_per_class=9, size=8)
    assert main([data, "--output", str(tmp_path / "single"), "--batch-size", "16", *COMMON]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lskd_vision.train", data, "--output", str(tmp_path / "ddp"), "--batch-size", "8", *COMMON]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    a = torch.load(tmp_path / "single" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "checkpoint_last.pt", weights_only=True)
    assert b["config"]["world_size"] == 2
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    for ra, rb in zip(a["history"], b["history"]):
        for k in ("train_loss", "train_top1", "val_top1", "val_nll_loss", "val_ece"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-5), k
    ma = json.load(open(tmp_path / "single" / "metrics.json"))
    mb = json.load(open(tmp_path / "ddp" / "metrics.json"))
    # 36 test images, sharded 18 + 18 across the processes and reduced
    assert ma["test"]["num_images"] == mb["test"]["num_images"] == 36
    for k in ("top1", "top5", "nll_loss", "ls_loss", "ece"):
        assert ma["test"][k] == pytest.approx(mb["test"][k], rel=1e-4, abs=1e-5), k
