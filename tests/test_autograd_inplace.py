"""In-place ops and views under autograd, differential against PyTorch.

Each case is one line of code run twice, once with ``T`` = fusionnet and once with
``T`` = torch, in a namespace holding the same leaves (``a``, ``w``: (2, 3), ``b``:
(3,), ``x``: (4,), all requiring grad; ``c``: (2, 3) without). The snippet sets
``out``; the harness back-propagates a weighted sum of it and compares ``out``, every
leaf's ``.grad`` and the final value of every tensor the snippet left in its namespace
(so eager writes through views are checked too). Where PyTorch raises, fusionnet must
raise the same kind of error at the same stage.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fusionnet as fn
from fusionnet import nn as fnn
from fusionnet.nn import functional as fnF
from fusionnet.ops import OPS

torch = pytest.importorskip("torch")

A = [[-1.5, 0.5, 2.0], [0.0, -0.25, 3.0]]
W = [[0.75, -2.0, 1.25], [1.5, 0.5, -0.5]]
B = [0.5, -1.0, 2.5]
X = [1.0, -2.0, 0.5, 4.0]
C = [[1.0, 2.0, -3.0], [0.5, 0.0, -1.0]]
LEAVES = ("a", "w", "b", "x")


def _lib(name):
    if name == "torch":
        return {"T": torch, "F": torch.nn.functional, "nn": torch.nn}
    return {"T": fn, "F": fnF, "nn": fnn}


def _np(t):
    return np.array(t.detach().cpu().numpy() if hasattr(t, "cpu") else t.detach().numpy())


def _is_tensor(v):
    return isinstance(v, (fn.Tensor, torch.Tensor))


def run(code: str, lib: str) -> dict:
    """Run ``code`` with library ``lib``; what happened, as plain data."""
    ns = _lib(lib)
    T = ns["T"]
    for name, data in zip(LEAVES, (A, W, B, X)):
        ns[name] = T.tensor(data, requires_grad=True)
    ns["c"] = T.tensor(C)
    try:
        exec(code, ns)  # noqa: S102 - test snippets written in this file
    except Exception as err:  # noqa: BLE001 - compared with PyTorch's
        return {"stage": "run", "error": err}
    out = ns["out"]
    result = {"stage": "done", "out": _np(out), "requires_grad": bool(out.requires_grad)}
    if out.requires_grad:
        weights = T.tensor(1.0 + 0.25 * np.arange(out.numel(), dtype=np.float32)
                           .reshape(tuple(out.shape)))
        try:
            (out * weights).sum().backward()
        except Exception as err:  # noqa: BLE001
            return {"stage": "backward", "error": err}
    result["grads"] = {n: None if ns[n].grad is None else _np(ns[n].grad) for n in LEAVES}
    result["values"] = {k: _np(v) for k, v in ns.items()
                        if _is_tensor(v) and k not in ("out", "__builtins__")}
    return result


def check(code: str) -> None:
    """fusionnet and torch agree on ``code``: values, gradients, or the kind of error."""
    want, got = run(code, "torch"), run(code, "fusionnet")
    if "error" in want:
        assert got["stage"] == want["stage"], (
            f"torch raised at {want['stage']}: {want['error']!r}; fusionnet: {got}")
        assert isinstance(got["error"], type(want["error"])), (got["error"], want["error"])
        return
    assert "error" not in got, f"torch ran; fusionnet raised {got['error']!r}"
    assert got["requires_grad"] == want["requires_grad"]
    np.testing.assert_allclose(got["out"], want["out"], rtol=1e-5, atol=1e-6)
    for name in LEAVES:
        w, g = want["grads"][name], got["grads"][name]
        assert (w is None) == (g is None), f"{name}.grad: torch {w}, fusionnet {g}"
        if w is not None:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"{name}.grad")
    assert set(got["values"]) == set(want["values"])
    for name, w in want["values"].items():
        np.testing.assert_allclose(got["values"][name], w, rtol=1e-5, atol=1e-6,
                                   err_msg=f"value of {name}")


CASES = [
    # item 14: in-place ops keep the history of earlier uses
    "h = a * 1; y = h * 3; h *= 2; out = y + h",
    "h = a * 1; h[:] = h * 2; out = h",
    "h = a * 1; y = h.exp(); h += 1; out = y + h",
    "h = a * 1; h -= w; h *= b; h /= 2; out = h",
    "h = a * 1; h.add_(w, alpha=2); out = h.sum(0)",
    "h = a * 1; h.sub_(b); out = h * h",
    "h = a * 1; h.mul_(w); out = h",            # mul_ with a gradient for both: old h kept
    "h = a * 1; h.div_(w); out = h",
    "h = a * 1; h.mul_(h); out = h",            # saved `other` is h itself: both refuse
    "h = a.exp(); h += 1; out = h",             # exp saved its output
    "h = a.exp(); y = h * 2; h.mul_(3); out = y",
    "h = c * 1; h += a; out = h",               # a tensor without grad gains history
    "h = c.clone(); h[0] = b; out = h",
    "h = a * 1; h[0, 1:] = b[:2] * 3; out = h",
    "h = a * 1; h[h > 0] = 0.0; out = h",
    "h = a * 1; h[T.tensor([1, 0, 1])] = w; out = h",
    "h = a * 1; h[:, T.tensor([0, 2])] *= 2; out = h",
    "h = a * 1; h.zero_(); out = h + w",
    "h = a * 1; h.fill_(2.5); out = h * w",
    "h = a * 1; h.copy_(w * 2); out = h",
    "h = a * 1; h.copy_(b); out = h",           # broadcast copy
    "h = c.clone(); h.copy_(a); out = h.exp()",
    # item 15: in-place activations whose gradient reads the result
    "h = a * 1; h.relu_(); out = h",
    "h = a * 2; F.relu(h, inplace=True); out = h * w",
    "h = a * 1; out = nn.ReLU(inplace=True)(h) * 2",
    "h = a * 1; h.clamp_(min=0.0, max=2.0); out = h",
    "h = a * 1; h.clamp_(min=-0.25); out = h",
    "h = w * 1; h.clamp_(max=0.75); out = h.sum()",
    "h = a.sigmoid(); h.relu_(); out = h",      # sigmoid saved its output: both refuse
    "h = a * 1; y = h.relu(); h.relu_(); out = y + h",
    "h = a @ w.t(); h.relu_(); out = h.sum()",
    # leaves and errors
    "a += 1; out = a",
    "a.relu_(); out = a",
    "v = a[0]; v += 1; out = a",
    "v = a.t(); v.mul_(2); out = v",
    "e = a.expand(2, 2, 3); e += 1; out = e",
    "e = (a * 1).expand(2, 2, 3); e.add_(1); out = e",
    "with T.no_grad(): a += 1\nout = a * 2",
    "with T.no_grad(): a[0] = 5.0\nout = a * 2",
    "d = a.detach(); d += 1; out = a * 2",
    "d = a.data; d *= 3; out = a * 2",
    # views: the base changes, autograd follows
    "h = a * 1; v = h.view(-1); v *= 2; out = h",
    "h = a * 1; v = h.reshape(3, 2); v += b[:2]; out = h",
    "h = a * 1; v = h.t(); v.mul_(w.t()); out = h",
    "h = a * 1; v = h.transpose(0, 1); v[0] = 7.0; out = h.sum(1)",
    "h = a * 1; v = h.permute(1, 0); v.relu_(); out = h",
    "h = a * 1; v = h.unsqueeze(0); v *= 3; out = h",
    "h = a.reshape(1, 2, 3) * 1; v = h.squeeze(0); v.sub_(w); out = h",
    "h = a * 1; v = h[1]; v.clamp_(max=0.0); out = h",
    "h = a * 1; v = h[:, 1:]; v *= w[:, :2]; out = h",
    "h = a * 1; v = h[0]; v.zero_(); out = h * w",
    "h = a * 1; v = h[..., ::2]; v.fill_(1.0); out = h",
    "h = a * 1; v = h[0, 1]; v *= 4; out = h",
    "h = a * 1; v = h.flatten(); v[2:4] = x[:2]; out = h",
    "h = a * 1; v = h.view(6)[1:5].view(2, 2); v *= x.view(2, 2); out = h",
    "h = a * 1; v = h.t()[1:]; v.add_(1.0); out = h",
    "h = x * 1; v = h.view(2, 2).t(); v[0] = b[:2]; out = h",
    "h = a * 1; v = h[0]; u = h[1]; v *= 2; u *= 3; out = h",
    "h = a * 1; v = h[:, 0]; u = h.t(); v *= 2; out = u",   # another view of the base
    "h = a * 1; v = h[0]; y = v * 2; h.mul_(w); out = y + v.sum()",  # base after view
    "h = a * 1; v = h[0]; h.mul_(w); out = v",
    "h = a * 1; v = h.t(); y = v.exp(); h += 1; out = y",
    "h = a * 1; v = h[1]; y = h.exp(); v *= 2; out = y",  # exp saved h: both refuse
    "h = a * 1; d = h.detach(); d += 1; out = h",
    "h = a.exp(); d = h.detach(); d.zero_(); out = h",  # detach shares the version
    "h = a.exp(); d = h.data; d.zero_(); out = h",  # .data does not
    "h = a * 1; d = h.detach(); v = d[0]; v.add_(b); out = d * h",
    "z = T.zeros(2, 3); v = z[0]; v += b; out = z",
    "z = T.zeros(2, 3); u = z[1]; v = z[0]; v += b; out = u + v",
    "z = T.zeros(2, 3); v = z.t(); z += a; out = v",
    "z = T.zeros(4); v = z.view(2, 2); v[1] = b[:2]; out = z.exp()",
    "z = T.zeros(2, 3); v = z[0]; z.add_(a * 1); v.grad_fn; v += 1; out = z",
    "h = a * 1\nwith T.no_grad(): v = h[0]\nv += 1\nout = h",
    "h = a * 1\nwith T.no_grad(): v = h[0]\nwith T.no_grad(): v += 1\nout = h",
    "z = T.zeros(3)\nwith T.no_grad(): v = z[:2]\nv += b[:2]\nout = z",
    "h = a * 1\nwith T.no_grad(): v = h[0]\nout = h * 2 + (v * 3).sum()",  # no grad via v
    "h = a * 1\nwith T.no_grad(): v = h[0]\nh.mul_(2)\nout = v * 3",
    "h = a * 1\nwith T.no_grad(): v = h[0]\nwith T.no_grad(): h.mul_(2)\nout = v * 3",
    "h = a * 1\nwith T.no_grad(): v = h[0]\nh.mul_(2)\nwith T.no_grad(): v += 1\nout = h",
    "h = a * 1; v = h.view(3, 2); v.t().mul_(2); out = v",
    "h = a.t() * 1; v = h.view(-1); v *= 2; out = h",  # torch: view of a non-contiguous
    "h = a.t() * 1; v = h.reshape(-1); v *= 2; out = h",  # copies: h unchanged
    "h = a * 1; v = h[0]; v.copy_(b); out = h",
    "h = a * 1; v = h[1:]; v[0, 0] = 9.0; v[:, 2] *= 2; out = h",
    "h = a * 1; v = h.view(3, 2); w2 = w.view(3, 2); v.mul_(w2); out = h",
    "h = a * 1; h[0] += h[1]; out = h",
    "h = a * 1; h[0] = h[1]; out = h",
    "h = a * 1; y = h[0]; h[0] = 2 * h[1]; out = y + h[0]",
    "h = a * 1; out = h.t(); h *= 2; out = out * 1",
    "p = w * 1; p.relu_(); v = p.view(-1); v.mul_(2); out = p",
]


@pytest.mark.parametrize("code", CASES)
def test_matches_torch(code):
    check(code)


def test_there_are_many_cases():
    assert len(CASES) >= 40


# ---- generated programs -------------------------------------------------------------------

# A program keeps a pool of tensors derived from `h = a * 1` (2, 3) and `z` (zeros, no
# grad). Each step makes a view, computes something, or modifies a pool tensor in place.
_VIEWS = [
    ("{s}[0]", lambda s: len(s) >= 1 and s[0] >= 1, lambda s: s[1:]),
    ("{s}[1:]", lambda s: len(s) >= 1 and s[0] >= 2, lambda s: (s[0] - 1,) + s[1:]),
    ("{s}[..., ::2]", lambda s: len(s) >= 1 and s[-1] >= 1,
     lambda s: s[:-1] + ((s[-1] + 1) // 2,)),
    ("{s}.t()", lambda s: len(s) == 2, lambda s: s[::-1]),
    ("{s}.transpose(0, -1)", lambda s: len(s) >= 2, lambda s: (s[-1],) + s[1:-1] + (s[0],)),
    ("{s}.reshape(-1)", lambda s: True, lambda s: (int(np.prod(s)),)),
    ("{s}.view(-1)", lambda s: True, lambda s: (int(np.prod(s)),)),
    ("{s}.unsqueeze(0)", lambda s: True, lambda s: (1,) + s),
    ("{s}.detach()", lambda s: True, lambda s: s),
]
_COMPUTE = ["{s} * 2", "{s}.tanh().exp()", "{s}.sigmoid()", "{s} * {s}.tanh()", "{s}.relu()",
            "{s} + 1"]
_INPLACE = ["{s} += 1", "{s} *= -1.5", "{s}.mul_(2)", "{s}.clamp_(min=-1.0, max=2.0)",
            "{s}.relu_()", "{s}.zero_()", "{s}.fill_(0.5)", "{s}.sub_({s}.detach() * 0.5)",
            "{s}[...] = {s} * 3"]


@st.composite
def programs(draw):
    pool = [("h", (2, 3)), ("z", (2, 3))]
    lines = ["h = a * 1", "z = T.zeros(2, 3)"]
    for i in range(draw(st.integers(1, 7))):
        src, shape = pool[draw(st.integers(0, len(pool) - 1))]
        kind = draw(st.sampled_from(["view", "view", "compute", "inplace", "inplace"]))
        name = f"t{i}"
        if kind == "view":
            usable = [v for v in _VIEWS if v[1](shape)]
            template, _, new_shape = usable[draw(st.integers(0, len(usable) - 1))]
            lines.append(f"{name} = " + template.format(s=src))
            pool.append((name, tuple(new_shape(shape))))
        elif kind == "compute":
            lines.append(f"{name} = " + draw(st.sampled_from(_COMPUTE)).format(s=src))
            pool.append((name, shape))
        else:
            same = [n for n, s in pool if s == shape and n != src]
            if same and draw(st.booleans()):  # another tensor of the pool as the operand
                other = draw(st.sampled_from(same))
                op = draw(st.sampled_from(["add_", "mul_", "copy_"]))
                lines.append(f"{src}.{op}({other})")
            else:
                lines.append(draw(st.sampled_from(_INPLACE)).format(s=src))
            # PyTorch quirk: an in-place op on a view whose base gained a history raises
            # "a leaf Variable..." unless the view's grad_fn was read first (which rebuilds
            # it). Reading every grad_fn after each in-place op compares the rebuilt state.
            lines.append("_ = [t.grad_fn for t in (" + ", ".join(n for n, _ in pool) + ")]")
    if draw(st.booleans()):
        lines.append("z += a")
    terms = [f"({n} * 1.0).sum() * {k + 1}" for k, (n, _) in enumerate(pool)]
    lines.append("out = " + " + ".join(terms) + " + (a * 0).sum()")
    return "\n".join(lines)


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_generated_programs_match_torch(code):
    check(code)


# ---- the op table says which rows are views ----------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if op.view))
def test_write_back_of_every_view_row_puts_the_value_back(name):
    """For each view row: applying its write_back op to (parent, new value) gives a
    tensor whose view is the new value and which equals the parent elsewhere."""
    cases = {"reshape": {"shape": (3, 2)}, "permute": {"dims": (1, 0)},
             "getitem": {"key": (("int", 1), ("slice", None, None, 2))},
             "expand": {"shape": (4, 2, 3)}}
    op = OPS[name]
    attrs = cases[name]
    parent = fn.tensor(np.arange(6.0).reshape(2, 3))
    view = fn.dispatch.apply(name, parent, **attrs)
    assert view._base is parent and view._version is parent._version
    if op.write_back is None:  # read-only view: in-place ops refuse it
        with pytest.raises(RuntimeError, match="single memory location"):
            view.add_(1)
        return
    value = fn.tensor(np.full(tuple(view.shape), -1.0))
    back, inputs, back_attrs = op.write_back(parent, value, **attrs)
    new = fn.dispatch.apply(back, *inputs, **back_attrs)
    expect = parent.numpy().copy()
    fn.dispatch.apply(name, fn.from_numpy(expect), **attrs).numpy()[...] = -1.0
    np.testing.assert_array_equal(new.numpy(), expect)


def test_views_share_the_version_counter_and_data_does_not():
    h = fn.ones(2, 3)
    v, d, data = h[0], h.detach(), h.data
    assert v._version is h._version and d._version is h._version
    assert data._version is not h._version
    v.add_(1)
    assert h._version[0] == 1 and h.tolist() == [[2.0, 2.0, 2.0], [1.0, 1.0, 1.0]]
    assert v._base is h and h[0][1:]._base is h and d._base is None


def test_history_recorded_before_an_inplace_op_never_changes():
    a = fn.tensor([1.0, 2.0], requires_grad=True)
    h = a * 1
    y = h * 3
    before = y.grad_fn.next_functions[0][0]
    h *= 2
    assert y.grad_fn.next_functions[0][0] is before
    assert h.grad_fn.next_functions[0][0] is before
    assert y.grad_fn.next_functions[1][0] is None  # the constant 3
    assert before.next_functions[0][0].variable is a


def test_view_grad_fn_follows_the_base():
    a = fn.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    h = a * 1
    v = h[0]
    u = h.t()
    v.mul_(2)
    assert h.grad_fn.name() == "SetitemBackward0"
    assert v.grad_fn.next_functions[0][0] is h.grad_fn
    assert u.grad_fn.next_functions[0][0] is h.grad_fn


def test_nonview_reshape_of_a_transpose_is_a_copy_and_view_refuses_it():
    h = fn.ones(2, 3).t()
    r = h.reshape(-1)
    assert r._base is None
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        h.view(-1)


@pytest.mark.parametrize("inplace", [True, False])
def test_mlp_with_inplace_relu_trains_like_torch(inplace):
    rng = np.random.default_rng(3)
    w1, b1 = rng.standard_normal((16, 8)), rng.standard_normal(16)
    w2, b2 = rng.standard_normal((4, 16)), rng.standard_normal(4)
    X = rng.standard_normal((5, 8))
    results = []
    for lib in ("fusionnet", "torch"):
        ns = _lib(lib)
        T, nn = ns["T"], ns["nn"]
        net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(inplace=inplace), nn.Linear(16, 4),
                            nn.ReLU(inplace=inplace))
        with T.no_grad():
            for p, v in zip(net.parameters(), (w1, b1, w2, b2)):
                p.copy_(T.tensor(v, dtype=T.float32))
        opt = (fn.optim if lib == "fusionnet" else torch.optim).SGD(net.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            loss = (net(T.tensor(X, dtype=T.float32)) ** 2).mean()
            loss.backward()
            opt.step()
        results.append([_np(p) for p in net.parameters()] + [_np(loss)])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
