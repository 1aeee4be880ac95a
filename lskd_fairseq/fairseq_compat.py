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

Each patch goes through ``wrap_once`` (applied once per process, the original kept as
``__wrapped__``) and was checked against ``CHECKED_FAIRSEQ``.

And three hooks through which the plugin explains a user's mistake instead of
failing obscurely:

3. One line, not a traceback, for the errors lskd raises itself
   (``lskd_fairseq.errors.LskdError``: TeacherError, ArtifactError, OptionError):
   ``<command>: error: <message>`` on stderr and exit status 2. Every other
   exception keeps Python's usual report.

4. An option of an lskd task given with another task (``--criterion
   label_smoothed_kd --teacher-path T.pt`` without ``--task translation_kd``) is
   named as such, where argparse would say "unrecognized arguments".

5. ``enable_resume_check()``: before fairseq's trainer restores a checkpoint, it
   lets the task (``check_resume(filename, reset)``) refuse one written under other
   settings. Installed by ``translation_kd`` when it builds a training criterion.

6. ``--bf16`` on CPU and CUDA. fairseq 0.12's ``options.parse_args_and_arch``
   (fairseq/options.py, "if args.bf16: args.tpu = True"; fairseq issue #4696) turns
   ``--bf16`` and ``--memory-efficient-bf16`` into ``--tpu``, so the trainer looks
   for an XLA device and fails on CPU and CUDA. After fairseq's parsing we clear
   that implied ``tpu`` again, only when ``--tpu`` was not on the command line and
   torch_xla is not installed (with torch_xla, ``--bf16`` keeps meaning TPU as in
   fairseq). Nothing else about bf16 is changed: fairseq's trainer then casts the
   model, criterion and float batches to bfloat16 (trainer.py, ``Trainer.__init__``
   and ``_fp_convert_sample``), keeps float32 master weights in ``FP16Optimizer`` /
   ``MemoryEfficientFP16Optimizer`` (unflattened for bf16) and does no loss scaling
   for bf16 (fp16_optimizer.py: ``self.scaler = None``), which all work on CPU.
"""

import argparse
import logging
import os
import sys

import torch

from lskd_fairseq.errors import LskdError, OptionError

# The fairseq these patches were read against and checked with (setup.py pins it).
CHECKED_FAIRSEQ = "fairseq-fixed 0.12.3.1 (fairseq 0.12.3)"


def wrap_once(owner, name: str, make) -> None:
    """Replace ``owner.name`` by ``make(original)``, once per process: the replacement is
    flagged (``_lskd_patched``) and keeps the original as ``__wrapped__``, so a second call
    (the plugin imported twice, ``apply()`` called again) leaves it as it is."""
    original = getattr(owner, name)
    if getattr(original, "_lskd_patched", False):
        return
    replacement = make(original)
    replacement._lskd_patched = True
    replacement.__wrapped__ = original
    setattr(owner, name, replacement)

# What fairseq 0.12 checkpoints pickle besides tensors and plain containers: the legacy
# args, and numpy arrays, which a run trained with --eval-bleu keeps in its saved metrics
# (the BLEU n-gram counts: numpy's array reconstruction, ndarray, dtype and the int/float
# dtype classes, as torch's documentation lists for numpy under weights_only).
def _numpy_globals():
    import numpy

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return (_reconstruct, numpy.ndarray, numpy.dtype,
            *(type(numpy.dtype(t)) for t in (numpy.int64, numpy.int32, numpy.float64, numpy.float32)))


FAIRSEQ_CHECKPOINT_GLOBALS = (argparse.Namespace, *_numpy_globals())

_applied = False


def allow_fairseq_checkpoint_globals() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no allowlist (and loads with weights_only=False)
        add(list(FAIRSEQ_CHECKPOINT_GLOBALS))


def _patch_torchrun_cpu_device_id() -> None:
    """fairseq.distributed.utils._infer_torch_distributed_launch_init: device id
    ``rank % cuda.device_count()`` divides by zero without CUDA; 0 there (docstring, 2.)."""
    from fairseq.distributed import utils as dist_utils

    def make(original):
        def infer_torchrun_init(cfg):
            if torch.cuda.device_count() > 0:
                return original(cfg)
            cfg.distributed_init_method = "env://"
            cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
            cfg.distributed_rank = int(os.environ["RANK"])
            cfg.device_id = 0  # no CUDA device to pick; fairseq would call cuda.set_device for > 0
            cfg.distributed_no_spawn = True  # torchrun already started the workers
        return infer_torchrun_init

    wrap_once(dist_utils, "_infer_torch_distributed_launch_init", make)


def _patch_cpu_ddp_wrapper() -> None:
    """fairseq.models.DistributedFairseqModel: passes ``device_ids=[0]`` to torch's DDP,
    which refuses it for a CPU module; the same wrapper without device ids on CPU (2.)."""
    from fairseq import models
    from fairseq.models.distributed_fairseq_model import ModuleProxyWrapper

    def make(original):
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
        return distributed_model

    wrap_once(models, "DistributedFairseqModel", make)


def _one_line_errors(previous_hook):
    def hook(exc_type, exc, tb):
        if not issubclass(exc_type, LskdError):
            return previous_hook(exc_type, exc, tb)
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "lskd"
        try:
            logging.shutdown()  # the log so far stays complete
            from lskd_fairseq import console

            console.error(prog, str(exc))
            sys.stdout.flush()
            sys.stderr.flush()
            import atexit

            atexit._run_exitfuncs()
        finally:
            os._exit(2)  # the status of a usage error, like argparse's

    return hook


def install_error_hook() -> None:
    """sys.excepthook (Python's, which fairseq's commands keep): ``LskdError`` as one line
    and exit 2, every other exception as before (see the module's docstring, 3.)."""
    wrap_once(sys, "excepthook", _one_line_errors)


def lskd_task_options() -> dict:
    """``{"--option": task name}`` for the options that only an lskd task defines
    (those its config adds to its parent's), e.g. ``--teacher-path``."""
    import dataclasses

    from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY

    out = {}
    for name, task_cls in TASK_REGISTRY.items():
        dc = TASK_DATACLASS_REGISTRY.get(name)
        if dc is None or not task_cls.__module__.startswith("lskd_fairseq."):
            continue
        inherited = {f.name for base in dc.__mro__[1:] if dataclasses.is_dataclass(base)
                     for f in dataclasses.fields(base)}
        for f in dataclasses.fields(dc):
            if f.name not in inherited:
                out["--" + f.name.replace("_", "-")] = name
    return out


def check_task_options(argv, default_task) -> None:
    """Refuse an lskd task's option given with another task (see the module's docstring, 4.)."""
    given = [a.split("=", 1)[0] for a in argv if isinstance(a, str) and a.startswith("--")]
    owned = lskd_task_options()
    mine = [a for a in given if a in owned]
    if not mine:
        return
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--task", default=default_task)
    task = pre.parse_known_args(argv)[0].task
    wrong = [a for a in mine if owned[a] != task]
    if wrong:
        needed = owned[wrong[0]]
        raise OptionError(
            f"{', '.join(dict.fromkeys(wrong))} belong(s) to --task {needed}, but the task is {task}: "
            f"knowledge distillation needs --task {needed} (with --user-dir lskd_fairseq); add --task {needed}"
        )


def _xla_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch_xla") is not None


def undo_bf16_implied_tpu(args, argv) -> None:
    """Clear the ``tpu`` that fairseq's parser sets for ``--bf16`` (docstring, 6.)."""
    if args is None or not getattr(args, "bf16", False) or not getattr(args, "tpu", False):
        return
    if "--tpu" in [a.split("=", 1)[0] for a in argv if isinstance(a, str)] or _xla_installed():
        return  # a TPU run: fairseq's meaning of --bf16 there
    args.tpu = False


def _patch_parse_args_and_arch() -> None:
    """fairseq.options.parse_args_and_arch: an lskd task's option with another task is named
    (4.), and the ``tpu`` it implies for ``--bf16`` is cleared off TPUs (6.)."""
    from fairseq import options

    def make(original):
        def parse_args_and_arch(parser, input_args=None, parse_known=False, suppress_defaults=False,
                                modify_parser=None):
            if not suppress_defaults:  # with it, fairseq calls this again without
                argv = sys.argv[1:] if input_args is None else list(input_args)
                check_task_options(argv, parser.get_default("task"))
            out = original(parser, input_args=input_args, parse_known=parse_known,
                           suppress_defaults=suppress_defaults, modify_parser=modify_parser)
            if not suppress_defaults:  # with it, only the options given are returned
                undo_bf16_implied_tpu(out[0] if parse_known else out,
                                      sys.argv[1:] if input_args is None else list(input_args))
            return out
        return parse_args_and_arch

    wrap_once(options, "parse_args_and_arch", make)


def enable_resume_check() -> None:
    """fairseq.trainer.Trainer.load_checkpoint: the task may refuse a checkpoint written
    under other settings before fairseq restores it (docstring, 5.)."""
    from fairseq.trainer import Trainer

    def make(original):
        def load_checkpoint(self, filename, reset_optimizer=False, reset_lr_scheduler=False,
                            optimizer_overrides=None, reset_meters=False):
            check = getattr(self.task, "check_resume", None)
            if check is not None and os.path.isfile(filename):
                check(filename, reset=reset_optimizer and reset_lr_scheduler and reset_meters)
            return original(self, filename, reset_optimizer=reset_optimizer, reset_lr_scheduler=reset_lr_scheduler,
                            optimizer_overrides=optimizer_overrides, reset_meters=reset_meters)
        return load_checkpoint

    wrap_once(Trainer, "load_checkpoint", make)


def apply() -> None:
    """Apply the fixes once per process."""
    global _applied
    if _applied:
        return
    allow_fairseq_checkpoint_globals()
    _patch_torchrun_cpu_device_id()
    _patch_cpu_ddp_wrapper()
    _patch_parse_args_and_arch()
    install_error_hook()
    _applied = True
