"""bf16 autocast on CPU: float32 losses, binary layers, options, config/metrics records, resume."""

import argparse
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lskd_fairseq.losses import ls_kd_loss
from lskd_vision import engine
from lskd_vision.binary import BinaryConv2d, RSign, sign_ste
from lskd_vision.options import UsageError
from lskd_vision.precision import Precision, add_precision_args, autocast, cpu_has_bf16, float32_region, resolve_precision
from lskd_vision.synthetic import make_image_folder
from lskd_vision.train import main

BF16 = Precision(torch.bfloat16)
CPU = torch.device("cpu")
KD = dict(epsilon=0.1, alpha=0.5, temperature=2.0, convention="uniform")


def _net(seed=0, classes=10):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, classes))


def _loss_and_grad(z, y, t):
    z = z.detach().float().requires_grad_(True)
    loss, _ = ls_kd_loss(F.log_softmax(z, -1), y, student_logits=z, teacher=t, **KD)
    (g,) = torch.autograd.grad(loss, z)
    return loss.detach(), g


def test_kd_loss_float32_from_bf16_logits():
    student, teacher = _net(0), _net(1)
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))
    with autocast(CPU, torch.bfloat16):
        z16, t16 = student(x), teacher(x)
    assert z16.dtype == torch.bfloat16 and t16.dtype == torch.bfloat16
    # inside autocast but in the float32 region (as the engine computes it) == plain float32, bit for bit
    with autocast(CPU, torch.bfloat16), float32_region(CPU):
        assert not torch.is_autocast_enabled("cpu")
        loss_in, grad_in = _loss_and_grad(z16, y, t16.float())
    loss_ref, grad_ref = _loss_and_grad(z16.float(), y, t16.float())
    assert loss_in.dtype == torch.float32 and grad_in.dtype == torch.float32
    assert torch.equal(loss_in, loss_ref) and torch.equal(grad_in, grad_ref)
    # the whole forward in bf16 vs float32: close (loss rel 2e-2, gradient cosine > 0.99)
    with torch.no_grad():
        z32, t32 = student(x), teacher(x)
    loss32, grad32 = _loss_and_grad(z32, y, t32)
    assert abs(float(loss_ref) - float(loss32)) <= 2e-2 * abs(float(loss32))
    assert F.cosine_similarity(grad_ref.flatten(), grad32.flatten(), dim=0) > 0.99


def test_engine_computes_the_loss_in_float32(monkeypatch):
    seen = []
    real = engine.ls_kd_loss

    def spy(lprobs, target, epsilon, student_logits=None, teacher=None, **kw):
        seen.append((lprobs.dtype, student_logits.dtype, teacher.dtype, torch.is_autocast_enabled("cpu")))
        return real(lprobs, target, epsilon, student_logits=student_logits, teacher=teacher, **kw)

    monkeypatch.setattr(engine, "ls_kd_loss", spy)
    model, teacher = _net(0, 4), engine.TeacherEnsemble([_net(1, 4)], [{}], ["t"])
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))) for _ in range(2)]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    prec = Precision(torch.bfloat16, channels_last=True)
    out = engine.train_one_epoch(prec.model(model), data, opt, lambda s: 0.01, 0, teacher=teacher, alpha=0.5,
                                 epsilon=0.1, temperature=2.0, precision=prec)
    ev = engine.evaluate(model, data, 4, precision=prec, teacher=teacher)
    assert seen and all(s == (torch.float32, torch.float32, torch.float32, False) for s in seen)
    assert out["num_images"] == 16 and torch.isfinite(torch.tensor(out["loss"])) and ev["num_images"] == 16


def test_binary_layers_under_bf16():
    torch.manual_seed(0)
    conv = BinaryConv2d(8, 8, 3, 1, 1, binary_weights=True)
    x = torch.randn(4, 8, 6, 6)
    a = sign_ste(x)
    with autocast(CPU, torch.bfloat16):
        w = conv.binarized_weight()
        scale = w.abs().amax(dim=(1, 2, 3))
        out16 = conv(a)
        act16 = RSign(8)(x.bfloat16())
    # weight scaling in float32: mean|W| per output channel to float32 rounding (the STE's
    # value - clamp + clamp adds an ulp or so; a bf16 scale would be ~4e-3 off)
    assert w.dtype == torch.float32
    assert torch.allclose(scale, conv.weight.abs().mean(dim=(1, 2, 3)), rtol=1e-6, atol=0)
    out32 = conv(a)
    assert out16.dtype == torch.bfloat16
    assert torch.allclose(out16.float(), out32, rtol=2e-2, atol=2e-2 * float(out32.detach().abs().max()))
    # activations are exactly +-1
    assert set(act16.float().unique().tolist()) <= {-1.0, 1.0}
    # STE: the gradient is nonzero exactly where |x| < 1, in bf16 too
    xs = torch.linspace(-2, 2, 81).bfloat16().requires_grad_(True)
    sign_ste(xs).sum().backward()
    inside = xs.detach().float().abs() < 1
    assert (xs.grad != 0).eq(inside).all() and xs.grad.dtype == torch.bfloat16


def _args(*argv, fp16=False):
    p = argparse.ArgumentParser()
    add_precision_args(p, fp16_alias=fp16)
    return p.parse_args(list(argv))


def test_resolve_precision_cpu(capsys):
    assert isinstance(cpu_has_bf16(), bool)
    assert resolve_precision(_args(), CPU).name == "float32"
    p = resolve_precision(_args("--amp", "--channels-last"), CPU, log=lambda m: None)
    assert (p.name, p.memory_format, p.needs_scaler) == ("bfloat16-autocast", "channels_last", False)
    for argv, msg in ((["--amp", "--amp-dtype", "float16"], "CPU autocast here is bfloat16"),
                      (["--amp-dtype", "bfloat16"], "needs --amp")):
        with pytest.raises(UsageError, match=msg):
            resolve_precision(_args(*argv), CPU)
    with pytest.raises(UsageError, match="--fp16 needs a CUDA device"):
        resolve_precision(_args("--fp16", fp16=True), CPU)


def test_train_records_precision_and_resume_checks(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "d"), num_classes=3, per_class=12, test_per_class=4, size=16)
    out = tmp_path / "run"
    base = [data, "--output", str(out), "--workers", "0", "--no-progress", "--batch-size", "8", "--model", "resnet8",
            "--epochs", "2", "--val-fraction", "0", "--cache-images", "yes"]
    assert main(base + ["--amp", "--channels-last", "--stop-after", "1"]) == 0
    cfg = json.load(open(out / "config.json"))
    assert (cfg["precision"], cfg["memory_format"]) == ("bfloat16-autocast", "channels_last")
    log = capsys.readouterr().out
    assert "bfloat16-autocast, channels_last" in log.split("epoch 1/2")[1].splitlines()[0]
    assert main(base + ["--resume"]) == 2  # float32 now: refused, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-changed-precision" in err[0] and "Traceback" not in err[0]
    assert main(base + ["--resume", "--allow-changed-precision"]) == 0
    assert "--allow-changed-precision" in capsys.readouterr().out
    metrics = json.load(open(out / "metrics.json"))
    assert (metrics["precision"], metrics["memory_format"]) == ("float32", "contiguous")
    assert main(base + ["--overwrite", "--amp", "--amp-dtype", "float16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CPU autocast here is bfloat16" in err[0]
