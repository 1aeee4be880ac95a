"""Checkpoint and state-dict IO: lskd_vision checkpoints, plain torchvision/timm weights.

Checkpoints are plain dicts of tensors, numbers, strings and lists, loadable
with ``torch.load(path, weights_only=True)``; they are always read that way.
Plain state dicts (``.pt``/``.pth`` read with ``weights_only=True``, or
``.safetensors``) initialise students (``--pretrained``) and serve as teachers
(``--teacher-arch``). Every failure is a ``CheckpointError`` with one sentence
naming the problem and the fix (never torch's unpickler advice to use
``weights_only=False``).
"""

import os
import pickle
from typing import Dict, List, Tuple

import torch
import torch.nn as nn

from .models import build_model, classifier_name

CHECKPOINT_FORMAT = "lskd_vision/1"


class CheckpointError(ValueError):
    pass


CHECKPOINT_SHAPE = (
    "an lskd_vision checkpoint is the checkpoint_best.pt or checkpoint_last.pt that lskd-vision-train "
    f"writes: a dict with format={CHECKPOINT_FORMAT!r}, the weights under 'model' and the run's 'config'"
)


def _torch_load(path: str, what: str):
    """``torch.load(weights_only=True)`` with a sentence instead of torch's unpickler error
    (which would suggest the unsafe ``weights_only=False``)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} {path!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return _NOT_PLAIN
    except Exception as e:  # zip/EOF/pickle errors of a truncated or corrupt file
        raise CheckpointError(
            f"{what} {path!r} cannot be read ({type(e).__name__}): the file is truncated or corrupt; "
            "copy it again or rerun the step that wrote it"
        ) from None


_NOT_PLAIN = object()  # a pickle of Python objects besides tensors (another tool's checkpoint)


def load_checkpoint(path: str, what: str = "checkpoint") -> Dict:
    ckpt = _torch_load(path, what)
    if ckpt is _NOT_PLAIN:
        raise CheckpointError(
            f"{what} {path!r} is not an lskd_vision checkpoint: it holds pickled Python objects "
            f"(a fairseq checkpoint or a saved model?); {CHECKPOINT_SHAPE}. For torchvision or timm "
            "weights pass their state dict with --teacher-arch ARCH (teacher) or --pretrained (student)"
        )
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "model" not in ckpt:
        raise CheckpointError(
            f"{what} {path!r} is not an lskd_vision checkpoint; {CHECKPOINT_SHAPE}. For a plain state dict "
            "(torchvision or timm weights) name its architecture: --teacher-arch ARCH or --model ARCH --pretrained"
        )
    return ckpt


def model_from_config(config: Dict) -> nn.Module:
    return build_model(
        config["arch"],
        int(config["num_classes"]),
        small_input=bool(config.get("small_input_stem", False)),
        binary_weights=bool(config.get("binary_weights", True)),
        img_size=int(config.get("img_size", 32)),
    )


def load_checkpoint_model(path: str, device="cpu") -> Tuple[nn.Module, Dict]:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    ckpt = load_checkpoint(path)
    config = ckpt["config"]
    model = model_from_config(config)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"weights in {path!r} do not fit arch {config['arch']!r}: {e}") from e
    return model.to(device).eval(), config


def read_state_dict(path: str, what: str = "--pretrained") -> Dict[str, torch.Tensor]:
    """A plain state dict from ``.pt``/``.pth`` (``weights_only=True``) or ``.safetensors``.

    A ``{"state_dict": ...}``/``{"model": ...}`` wrapper and a ``module.`` prefix are
    accepted; an lskd_vision checkpoint is pointed to the option that reads it.
    """
    if path.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise CheckpointError(f"{what} {path!r} does not exist")
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(
                f"{what} {path!r} is a .safetensors file but the safetensors package is not installed: "
                "pip install safetensors (the timm extra installs it)"
            ) from None
        try:
            sd = load_file(path, device="cpu")
        except Exception as e:
            raise CheckpointError(f"{what} {path!r} cannot be read as safetensors (truncated or corrupt?): "
                                  f"{type(e).__name__}") from None
    else:
        sd = _torch_load(path, what)
        if sd is _NOT_PLAIN:
            raise CheckpointError(
                f"{what} {path!r} is not a plain state dict: it holds pickled Python objects (a saved model "
                "or another tool's checkpoint?); save model.state_dict() with torch.save, or use .safetensors"
            )
    if isinstance(sd, dict) and sd.get("format") == CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{what} {path!r} is an lskd_vision checkpoint, not a plain state dict: pass it as --teacher "
            "without --teacher-arch (or as --init-from for a student)"
        )
    for key in ("model", "state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{what} {path!r} does not hold a state dict (a dict of parameter name -> tensor)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def fit_state_dict(model: nn.Module, sd: Dict[str, torch.Tensor], arch: str, path: str,
                   what: str = "--pretrained", new_classifier: bool = False) -> List[str]:
    """Load ``sd`` into ``model`` or refuse with a sentence.

    A missing BatchNorm ``num_batches_tracked`` counter is allowed (older torchvision
    files lack it). A classifier of another class count is refused, or, with
    ``new_classifier`` (fine-tuning a student), left freshly initialised; the
    skipped keys are returned. Anything else that does not fit means the file
    holds another architecture.
    """
    own = model.state_dict()
    head = classifier_name(model)
    head_keys = {f"{head}.weight", f"{head}.bias"}
    shape = [k for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    if not missing and not unexpected and shape and set(shape) <= head_keys:
        n_file, n_model = sd[f"{head}.weight"].shape[0], own[f"{head}.weight"].shape[0]
        if not new_classifier:
            raise CheckpointError(
                f"{what} {path!r} is a {arch} with {n_file} classes (its classifier {head}.weight is "
                f"{tuple(sd[f'{head}.weight'].shape)}) but the data has {n_model} classes: use weights "
                f"trained on these {n_model} classes"
            )
        sd = {k: v for k, v in sd.items() if k not in shape}
        shape = []
    if missing or unexpected or shape:
        def few(keys):
            return f"{keys[:4]}{' and %d more' % (len(keys) - 4) if len(keys) > 4 else ''}"

        raise CheckpointError(
            f"{what} {path!r} does not hold {arch} weights (missing {len(missing)} keys {few(missing)}, "
            f"unexpected {len(unexpected)} {few(unexpected)}, other shape {len(shape)} {few(shape)}): "
            "name the architecture the file was saved from"
        )
    model.load_state_dict(sd, strict=False)
    return [k for k in head_keys if k in own and k not in sd]


def load_pretrained(model: nn.Module, path: str, arch: str = "the model") -> Dict[str, List[str]]:
    """Initialise a student from a plain state dict (e.g. a torchvision ``resnet50-*.pth``).

    ``.pt``/``.pth`` (read with ``weights_only=True``) or ``.safetensors``; a
    classifier for another class count is left freshly initialised and listed.
    """
    sd = read_state_dict(path, "--pretrained")
    return {"skipped_shape_mismatch": sorted(fit_state_dict(model, sd, arch, path, "--pretrained", new_classifier=True))}


__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "fit_state_dict",
    "load_checkpoint",
    "load_checkpoint_model",
    "load_pretrained",
    "model_from_config",
    "read_state_dict",
]
