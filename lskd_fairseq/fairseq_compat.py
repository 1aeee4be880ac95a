"""Small, targeted fixes that let fairseq 0.12 run on current torch. Applied when the
plugin is loaded (``--user-dir lskd_fairseq`` or ``import lskd_fairseq.tasks``).

1. Checkpoint loading under torch >= 2.6. ``torch.load`` defaults to
   ``weights_only=True`` there, and fairseq checkpoints pickle an
   ``argparse.Namespace`` (the legacy ``args`` entry), so fairseq cannot resume
   from or generate with its own checkpoints. We add exactly the classes such
   checkpoints need to torch's allowlist of safe globals. ``weights_only`` stays
   on: anything else in a pickle is still refused.

2. ``torchrun`` on CPU. fairseq derives the device id of a torchrun worker as
   ``rank % torch.cuda.device_count()``, which divides by zero on a machine
   without GPUs. We wrap that one function so that, only when no CUDA device is
   present, the device id is 0 instead (it names no device on CPU; fairseq would
   call ``torch.cuda.set_device`` for any other value).
   fairseq's default DDP wrapper (``--ddp-backend c10d``) then passes
   ``device_ids=[0]`` to torch's DistributedDataParallel, which torch refuses for a
   CPU module; for CPU modules only, we build the same wrapper without device ids.
   Everything else about fairseq's distributed set-up is left as it is.
"""

import argparse
import logging
import os

import torch

logger = logging.getLogger(__name__)

# What fairseq 0.12 checkpoints pickle besides tensors and plain containers.
FAIRSEQ_CHECKPOINT_GLOBALS = (argparse.Namespace,)

_applied = False


def allow_fairseq_checkpoint_globals() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no allowlist (and loads with weights_only=False)
        add(list(FAIRSEQ_CHECKPOINT_GLOBALS))


def _patch_torchrun_cpu_device_id() -> None:
    from fairseq.distributed import utils as dist_utils

    original = dist_utils._infer_torch_distributed_launch_init
    if getattr(original, "_lskd_cpu_safe", False):
        return

    def infer_torchrun_init(cfg):
        if torch.cuda.device_count() > 0:
            return original(cfg)
        cfg.distributed_init_method = "env://"
        cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
        cfg.distributed_rank = int(os.environ["RANK"])
        cfg.device_id = 0  # no CUDA device to pick; fairseq would call cuda.set_device for > 0
        cfg.distributed_no_spawn = True  # torchrun already started the workers

    infer_torchrun_init._lskd_cpu_safe = True
    dist_utils._infer_torch_distributed_launch_init = infer_torchrun_init


def _patch_cpu_ddp_wrapper() -> None:
    from fairseq import models
    from fairseq.models.distributed_fairseq_model import ModuleProxyWrapper

    original = models.DistributedFairseqModel
    if getattr(original, "_lskd_cpu_safe", False):
        return

    def distributed_model(args, model, process_group, device):
        if torch.device(device).type != "cpu" or args.tpu or args.ddp_backend not in {"c10d", "pytorch_ddp"}:
            return original(args, model, process_group, device)
        wrapped = torch.nn.parallel.DistributedDataParallel(
            module=model.to(device),
            broadcast_buffers=args.broadcast_buffers,
            bucket_cap_mb=args.bucket_cap_mb,
            process_group=process_group,
            find_unused_parameters=args.find_unused_parameters,
            gradient_as_bucket_view=args.gradient_as_bucket_view,
        )
        return ModuleProxyWrapper(wrapped)

    distributed_model._lskd_cpu_safe = True
    models.DistributedFairseqModel = distributed_model


def apply() -> None:
    """Apply the fixes once per process."""
    global _applied
    if _applied:
        return
    allow_fairseq_checkpoint_globals()
    _patch_torchrun_cpu_device_id()
    _patch_cpu_ddp_wrapper()
    _applied = True
