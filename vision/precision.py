"""Numeric precision and memory format of lskd-vision-train and lskd-vision-cache.

timm's options: ``--amp`` (autocast), ``--amp-dtype {float16,bfloat16}`` and
``--channels-last``. On CUDA float16 autocast runs with a ``GradScaler``,
bfloat16 without one. On CPU autocast is bfloat16 only: ``--amp`` alone means
bfloat16 there, and an explicit ``--amp-dtype float16`` is refused. Where the
CPU has no bfloat16 hardware (AMX or AVX512-BF16) it is emulated: one warning.

Losses and metrics are always float32: the model's (and teacher's) logits are
upcast and ``ls_kd_loss`` runs outside autocast (see ``lskd_vision.engine``).

What a run records (``config.json``, ``metrics.json``, the epoch log line):
``precision`` is ``"float32"``, ``"bfloat16-autocast"`` or ``"float16-autocast"``;
``memory_format`` is ``"contiguous"`` or ``"channels_last"``.
"""

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
FLOAT32 = "float32"


def cpu_amx_tiles() -> bool:
    """True when torch reports AMX tiles on this CPU (False on a torch without the check)."""
    check = getattr(getattr(torch, "cpu", None), "_is_amx_tile_supported", None)
    try:
        return bool(check()) if check is not None else False
    except Exception:  # an older torch without the check compiled in
        return False


def cpu_flags() -> frozenset:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """True when this CPU runs bfloat16 in hardware (AMX tiles, or AVX512-BF16 / AMX-BF16 flags)."""
    return cpu_amx_tiles() or bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_bf16_description() -> str:
    """One line on this CPU's bfloat16 support, for logs and reports."""
    cap = torch.backends.cpu.get_cpu_capability()
    if cpu_amx_tiles():
        return f"this CPU has AMX bf16 tiles (torch CPU capability {cap})"
    if cpu_has_bf16():
        return f"this CPU has AVX512-BF16 but no AMX (torch CPU capability {cap})"
    return f"this CPU has no bfloat16 hardware (torch CPU capability {cap}): float32"


def precision_name(dtype: Optional[torch.dtype]) -> str:
    if dtype is None:
        return FLOAT32
    return {torch.float16: "float16-autocast", torch.bfloat16: "bfloat16-autocast"}[dtype]


def memory_format_name(channels_last: bool) -> str:
    return "channels_last" if channels_last else "contiguous"


def autocast(device, dtype: Optional[torch.dtype]):
    """``torch.autocast(device.type, dtype=dtype)``, or a null context for float32 (``dtype`` None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def float32_region(device):
    """A region that runs in float32 even inside autocast (losses and metrics)."""
    return torch.autocast(torch.device(device).type, enabled=False)


@dataclass
class Precision:
    """What the model runs in: ``dtype`` None = float32; ``channels_last`` memory format."""

    dtype: Optional[torch.dtype] = None
    channels_last: bool = False

    @property
    def name(self) -> str:
        return precision_name(self.dtype)

    @property
    def memory_format(self) -> str:
        return memory_format_name(self.channels_last)

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self, device):
        return autocast(device, self.dtype)

    def input(self, x: torch.Tensor, device) -> torch.Tensor:
        """A batch moved to ``device`` (channels_last for 4-d input when asked)."""
        if self.channels_last and x.dim() == 4:
            return x.to(device, non_blocking=True, memory_format=torch.channels_last)
        return x.to(device, non_blocking=True)

    def model(self, model):
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def describe(self) -> str:
        return f"{self.name}, {self.memory_format}"


FLOAT32_PRECISION = Precision()


def as_precision(p) -> Precision:
    """A ``Precision`` from a Precision, None, a dtype, or a bool (True = CUDA float16, the old ``amp``)."""
    if isinstance(p, Precision):
        return p
    if p is None or p is False:
        return Precision()
    if p is True:
        return Precision(torch.float16)
    if isinstance(p, torch.dtype):
        return Precision(p)
    raise TypeError(f"not a precision: {p!r}")


def add_precision_args(group, fp16_alias: bool = False) -> None:
    from .option_table import BY_DEST

    for dest in ("amp", "amp_dtype", "channels_last"):  # declared in option_table
        group.add_argument(*BY_DEST[dest].flags, **BY_DEST[dest].kwargs)
    if fp16_alias:
        group.add_argument("--fp16", action="store_true",
                           help="deprecated: --amp --amp-dtype float16 (CUDA only)")


def resolve_precision(args, device, log=print) -> Precision:
    """The run's ``Precision`` from ``--amp``/``--amp-dtype``/``--channels-last`` (and ``--fp16``);
    refuses what this device cannot do with a one-line ``UsageError``."""
    from .options import UsageError

    device = torch.device(device)
    fp16 = bool(getattr(args, "fp16", False))
    if fp16:
        if device.type != "cuda":
            raise UsageError("--fp16 needs a CUDA device (drop --fp16 on CPU; --amp there is bfloat16 autocast)")
        if args.amp_dtype not in (None, "float16"):
            raise UsageError(f"--fp16 means --amp --amp-dtype float16; it contradicts --amp-dtype {args.amp_dtype}")
        args.amp, args.amp_dtype = True, "float16"
    if args.amp_dtype is not None and not args.amp:
        raise UsageError(f"--amp-dtype {args.amp_dtype} needs --amp")
    dtype = None
    if args.amp:
        if device.type == "cpu":
            if args.amp_dtype == "float16":
                raise UsageError("CPU autocast here is bfloat16: use --amp --amp-dtype bfloat16 (or just --amp) on CPU")
            dtype = torch.bfloat16
            if not cpu_has_bf16():
                log("warning: this CPU has no bfloat16 hardware (AMX/AVX512-BF16): bf16 autocast on this CPU "
                    "is emulated and slower than float32")
        elif device.type == "cuda":
            dtype = DTYPES[args.amp_dtype or "float16"]
            if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
                raise UsageError("--amp-dtype bfloat16: this CUDA device has no bfloat16 support; use float16")
        else:
            raise UsageError(f"--amp is supported on cpu and cuda devices, not {device.type}")
        args.amp_dtype = {torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype]
    return Precision(dtype, bool(args.channels_last))


__all__ = ["DTYPES", "FLOAT32", "FLOAT32_PRECISION", "Precision", "add_precision_args", "as_precision", "autocast",
           "cpu_amx_tiles", "cpu_bf16_description", "cpu_flags", "cpu_has_bf16", "float32_region",
           "memory_format_name", "precision_name", "resolve_precision"]
