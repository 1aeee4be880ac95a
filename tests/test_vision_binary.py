"""ReActNet pieces: forward values and straight-through gradients against their definitions."""

import torch
import torch.nn.functional as F

from lskd_vision.binary import (
    BinaryConv2d,
    RPReLU,
    RSign,
    binary_sign,
    reactnet18,
    set_binary_weights,
    sign_ste,
)

POINTS = torch.tensor([-2.0, -1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5], dtype=torch.float64)


def ste_grad_definition(x):
    """Derivative of -1 | x^2 + 2x | -x^2 + 2x | 1 on [-inf,-1) [-1,0) [0,1) [1,inf)."""
    out = []
    for v in x.tolist():
        if -1 <= v < 0:
            out.append(2 + 2 * v)
        elif 0 <= v < 1:
            out.append(2 - 2 * v)
        else:
            out.append(0.0)
    return torch.tensor(out, dtype=x.dtype)


def test_sign_forward_is_strictly_binary():
    y = binary_sign(POINTS)
    assert set(y.tolist()) == {-1.0, 1.0}
    assert torch.equal(y, torch.where(POINTS >= 0, 1.0, -1.0).to(y.dtype))


def test_activation_ste_gradient_matches_piecewise_polynomial():
    x = POINTS.clone().requires_grad_(True)
    y = sign_ste(x)
    assert torch.equal(y.detach(), binary_sign(POINTS))
    g = torch.randn_like(x)
    (y * g).sum().backward()
    torch.testing.assert_close(x.grad, g * ste_grad_definition(POINTS))
    # the polynomial's own autograd derivative agrees away from the kinks
    z = torch.linspace(-0.95, 0.95, 21, dtype=torch.float64).requires_grad_(True)
    poly = torch.where(z < 0, z * z + 2 * z, -z * z + 2 * z)
    (gp,) = torch.autograd.grad(poly.sum(), z)
    zz = z.detach().clone().requires_grad_(True)
    sign_ste(zz).sum().backward()
    torch.testing.assert_close(zz.grad, gp)


def test_rsign_shift_forward_and_gradient():
    m = RSign(3).double()
    with torch.no_grad():
        m.alpha.copy_(torch.tensor([0.5, -0.25, 0.0]).view(1, 3, 1, 1))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    y = m(x)
    shifted = x.detach() - m.alpha.detach()
    assert torch.equal(y, binary_sign(shifted))
    y.sum().backward()
    d = ste_grad_definition(shifted.flatten()).view_as(shifted)
    torch.testing.assert_close(x.grad, d)
    torch.testing.assert_close(m.alpha.grad, -d.sum(dim=(0, 2, 3), keepdim=True))


def test_rprelu_forward_and_gradient_match_definition():
    m = RPReLU(2).double()
    with torch.no_grad():
        m.gamma.copy_(torch.tensor([0.1, -0.2]).view(1, 2, 1, 1))
        m.beta.copy_(torch.tensor([0.25, 0.5]))
        m.zeta.copy_(torch.tensor([0.3, -0.4]).view(1, 2, 1, 1))
    x = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    y = m(x)
    s = x.detach() - m.gamma.detach()
    beta = m.beta.detach().view(1, 2, 1, 1)
    want = torch.where(s > 0, s, beta * s) + m.zeta.detach()
    torch.testing.assert_close(y, want)
    torch.autograd.gradcheck(lambda a: m(a), (x,))


def test_binary_conv_weights_scaled_sign_and_clipped_ste():
    torch.manual_seed(0)
    conv = BinaryConv2d(3, 4, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.mul_(4)  # some |W| > 1 so the clip matters
    w = conv.weight.detach()
    scale = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    wb = scale * torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
    torch.testing.assert_close(conv.binarized_weight().detach(), wb)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    y = conv(x)
    torch.testing.assert_close(y, F.conv2d(x, wb, padding=1))
    # every output channel's weights take exactly two values, +-mean|W_o|
    for o in range(4):
        assert set(conv.binarized_weight()[o].detach().abs().unique().tolist()) == {scale[o].item()}
    g = torch.randn_like(y)
    (y * g).sum().backward()
    wb_leaf = wb.clone().requires_grad_(True)
    (F.conv2d(x, wb_leaf, padding=1) * g).sum().backward()
    torch.testing.assert_close(conv.weight.grad, wb_leaf.grad * (w.abs() <= 1).to(w.dtype))
    assert (conv.weight.grad[w.abs() > 1] == 0).all()
    # step 1: real-valued weights
    conv.binary_weights = False
    torch.testing.assert_close(conv(x), F.conv2d(x, w, padding=1))


def test_reactnet18_two_steps_share_state_dict():
    torch.manual_seed(0)
    m = reactnet18(10, small_input=True, binary_weights=False)
    assert set_binary_weights(m, False) == 16
    x = torch.randn(2, 3, 16, 16)
    y1 = m(x)
    set_binary_weights(m, True)
    y2 = m(x)
    assert y1.shape == y2.shape == (2, 10)
    assert not torch.allclose(y1, y2)
    m2 = reactnet18(10, small_input=True, binary_weights=True)
    m2.load_state_dict(m.state_dict())
    m.eval(), m2.eval()
    torch.testing.assert_close(m(x), m2(x))
    # every block's conv input is binary
    seen = []
    h = m.blocks[3].conv.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0]))
    m(x)
    h.remove()
    assert set(seen[0].unique().tolist()) <= {-1.0, 1.0}
