"""The code samples of D2L's "Builders' Guide" (Layers and Blocks, Parameter Management,
Deferred Initialization, Custom Layers), run with only the imports changed.

Each test runs one sample as the book writes it, prints what the book prints,
and checks the printed form (values are random, so structure and shapes are checked).
"""
import re

import numpy as np
import pytest

import fusionnet as torch
from fusionnet import nn
from fusionnet.nn import functional as F

FLOAT = r"-?\d+\.\d*(e[+-]\d+)?"


def vec(n):
    """Regex of a printed 1-D tensor body with ``n`` floats."""
    return rf"\[\s*({FLOAT},\s*){{{n - 1}}}{FLOAT}\]"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- Layers and Blocks -------------------------------------------------------------------

class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.LazyLinear(256)
        self.out = nn.LazyLinear(10)

    def forward(self, X):
        return self.out(F.relu(self.hidden(X)))


class MySequential(nn.Module):
    def __init__(self, *args):
        super().__init__()
        for idx, module in enumerate(args):
            self._modules[str(idx)] = module

    def forward(self, X):
        for module in self._modules.values():
            X = module(X)
        return X


class MySequentialAddModule(nn.Module):
    def __init__(self, *args):
        super().__init__()
        for idx, module in enumerate(args):
            self.add_module(str(idx), module)

    def forward(self, X):
        for module in self.children():
            X = module(X)
        return X


class FixedHiddenMLP(nn.Module):
    def __init__(self):
        super().__init__()
        # Random weight parameters that will not compute gradients and
        # therefore keep constant during training
        self.rand_weight = torch.rand((20, 20), requires_grad=False)
        self.linear = nn.LazyLinear(20)

    def forward(self, X):
        X = self.linear(X)
        X = F.relu(X @ self.rand_weight + 1)
        # Reuse the fully connected layer. This is equivalent to sharing
        # parameters with two fully connected layers
        X = self.linear(X)
        # Control flow
        while X.abs().sum() > 1:
            X /= 2
        return X.sum()


class NestMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.LazyLinear(64), nn.ReLU(),
                                 nn.LazyLinear(32), nn.ReLU())
        self.linear = nn.LazyLinear(16)

    def forward(self, X):
        return self.linear(self.net(X))


def test_sequential_block(capsys):
    net = nn.Sequential(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))
    X = torch.rand(2, 20)
    print(net(X).shape)
    assert capsys.readouterr().out == "fusionnet.Size([2, 10])\n"


@pytest.mark.parametrize("cls", [MLP, MySequential, MySequentialAddModule])
def test_custom_blocks(cls, capsys):
    X = torch.rand(2, 20)
    net = cls() if cls is MLP else cls(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))
    print(net(X).shape)
    assert capsys.readouterr().out == "fusionnet.Size([2, 10])\n"
    assert len(list(net.parameters())) == 4
    if cls is not MLP:
        assert repr(net).startswith(cls.__name__ + "(\n  (0): Linear(in_features=20, "
                                                   "out_features=256, bias=True)")


def test_fixed_hidden_mlp(capsys):
    X = torch.rand(2, 20)
    net = FixedHiddenMLP()
    out = net(X)
    print(out)
    assert re.fullmatch(rf"tensor\({FLOAT}, grad_fn=<\w+Backward0>\)\n",
                        capsys.readouterr().out)
    assert [n for n, _ in net.named_parameters()] == ["linear.weight", "linear.bias"]
    out.backward()  # the layer used twice gets one accumulated gradient
    assert net.linear.weight.grad.shape == torch.Size([20, 20])
    assert net.rand_weight.grad is None


def test_chimera(capsys):
    X = torch.rand(2, 20)
    chimera = nn.Sequential(NestMLP(), nn.LazyLinear(20), FixedHiddenMLP())
    print(chimera(X))
    assert re.fullmatch(rf"tensor\({FLOAT}, grad_fn=<\w+>\)\n", capsys.readouterr().out)
    text = repr(chimera)
    assert text.startswith("Sequential(\n  (0): NestMLP(\n    (net): Sequential(\n")
    assert "  (2): FixedHiddenMLP(\n    (linear): Linear(in_features=20, out_features=20, " \
           "bias=True)\n  )\n)" in text


# ---- Parameter Management ----------------------------------------------------------------

def _small_net():
    net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1))
    X = torch.rand(size=(2, 4))
    return net, X


def test_parameter_access(capsys):
    net, X = _small_net()
    print(net(X).shape)
    print(net[2].state_dict())
    print(type(net[2].bias), net[2].bias.data)
    print(net[2].weight.grad == None)  # noqa: E711 - the book's spelling
    print([(name, param.shape) for name, param in net.named_parameters()])
    lines = capsys.readouterr().out
    assert lines.startswith("fusionnet.Size([2, 1])\nOrderedDict([('weight', tensor([[")
    assert re.search(rf"\]\]\)\), \('bias', tensor\(\[{FLOAT}\]\)\)\]\)\n", lines)
    assert re.search(r"<class 'fusionnet.nn.parameter.Parameter'> tensor\(\[" + FLOAT
                     + r"\]\)\nTrue\n", lines)
    assert lines.endswith("[('0.weight', fusionnet.Size([8, 4])), ('0.bias', "
                          "fusionnet.Size([8])), ('2.weight', fusionnet.Size([1, 8])), "
                          "('2.bias', fusionnet.Size([1]))]\n")
    assert repr(net[2].state_dict()).startswith("OrderedDict([('weight', tensor(")
    assert net.state_dict()["2.bias"].data.item() == net[2].bias.item()


def block1():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(),
                         nn.Linear(8, 4), nn.ReLU())


def block2():
    net = nn.Sequential()
    for i in range(4):
        # Nested here
        net.add_module(f'block {i}', block1())
    return net


def test_nested_blocks(capsys):
    X = torch.rand(size=(2, 4))
    rgnet = nn.Sequential(block2(), nn.Linear(4, 1))
    print(rgnet(X).shape)
    print(rgnet)
    print(rgnet[0][1][0].bias.data)
    out = capsys.readouterr().out
    block = ("Sequential(\n"
             "      (0): Linear(in_features=4, out_features=8, bias=True)\n"
             "      (1): ReLU()\n"
             "      (2): Linear(in_features=8, out_features=4, bias=True)\n"
             "      (3): ReLU()\n"
             "    )")
    expect = ("Sequential(\n  (0): Sequential(\n"
              + "".join(f"    (block {i}): {block}\n" for i in range(4))
              + "  )\n  (1): Linear(in_features=4, out_features=1, bias=True)\n)\n")
    assert out.startswith("fusionnet.Size([2, 1])\n" + expect)
    bias_line = out[len("fusionnet.Size([2, 1])\n" + expect):]
    assert re.fullmatch(rf"tensor\({vec(8)}\)\n", bias_line)


def test_builtin_initialization(capsys):
    net, X = _small_net()
    net(X)

    def init_normal(m):
        if type(m) == nn.Linear:  # noqa: E721 - the book's spelling
            nn.init.normal_(m.weight, mean=0, std=0.01)
            nn.init.zeros_(m.bias)

    net.apply(init_normal)
    print(net[0].weight.data[0], net[0].bias.data[0])
    assert np.abs(net[0].weight.detach().numpy()).max() < 0.1
    assert net[0].bias.abs().sum().item() == 0

    def init_constant(m):
        if type(m) == nn.Linear:  # noqa: E721
            nn.init.constant_(m.weight, 1)
            nn.init.zeros_(m.bias)

    net.apply(init_constant)
    print(net[0].weight.data[0], net[0].bias.data[0])

    def init_xavier(m):
        if type(m) == nn.Linear:  # noqa: E721
            nn.init.xavier_uniform_(m.weight)

    def init_42(m):
        if type(m) == nn.Linear:  # noqa: E721
            nn.init.constant_(m.weight, 42)

    net[0].apply(init_xavier)
    net[2].apply(init_42)
    print(net[0].weight.data[0])
    print(net[2].weight.data)
    out = capsys.readouterr().out.split("\n")
    assert re.fullmatch(rf"tensor\({vec(4)}\) tensor\(0\.\)", out[0])
    assert out[1] == "tensor([1., 1., 1., 1.]) tensor(0.)"
    assert re.fullmatch(rf"tensor\({vec(4)}\)", out[2])
    assert out[3] == "tensor([[42., 42., 42., 42., 42., 42., 42., 42.]])"
    assert np.abs(net[0].weight.detach().numpy()).max() <= np.sqrt(6 / 12)


def test_custom_initialization(capsys):
    net, X = _small_net()
    net(X)

    def my_init(m):
        if type(m) == nn.Linear:  # noqa: E721
            print("Init", *[(name, param.shape)
                            for name, param in m.named_parameters()][0])
            nn.init.uniform_(m.weight, -10, 10)
            m.weight.data *= m.weight.data.abs() >= 5

    net.apply(my_init)
    print(net[0].weight[:2])
    net[0].weight.data[:] += 1
    net[0].weight.data[0, 0] = 42
    print(net[0].weight.data[0])
    out = capsys.readouterr().out
    assert out.startswith("Init weight fusionnet.Size([8, 4])\n"
                          "Init weight fusionnet.Size([1, 8])\ntensor([[")
    assert re.search(r"\]\], grad_fn=<\w+Backward0>\)\ntensor\(\[42\.0*,", out)
    w = net[0].weight.detach().numpy()
    assert w[0, 0] == 42 and ((np.abs(w - 1) >= 5) | (w == 1)).ravel()[1:].all()


def test_tied_parameters(capsys):
    X = torch.rand(size=(2, 4))
    # We need to give the shared layer a name so that we can refer to its
    # parameters
    shared = nn.LazyLinear(8)
    net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(),
                        shared, nn.ReLU(),
                        shared, nn.ReLU(),
                        nn.LazyLinear(1))
    net(X)
    # Check whether the parameters are the same
    print(net[2].weight.data[0] == net[4].weight.data[0])
    net[2].weight.data[0, 0] = 100
    # Make sure that they are actually the same object rather than just having the
    # same value
    print(net[2].weight.data[0] == net[4].weight.data[0])
    lines = capsys.readouterr().out.split("\n")
    for line in lines[:2]:
        assert re.fullmatch(r"tensor\(\[(\s*True,){7}\s*True\]\)", line)
    assert net[4].weight[0, 0].item() == 100
    assert len(list(net.parameters())) == 6


# ---- Deferred (lazy) Initialization --------------------------------------------------------

def test_lazy_initialization(capsys):
    net = nn.Sequential(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))
    print(net[0].weight)
    X = torch.rand(2, 20)
    net(X)
    print(net[0].weight.shape)
    assert capsys.readouterr().out == ("<UninitializedParameter>\n"
                                       "fusionnet.Size([256, 20])\n")


def test_apply_init_after_lazy_forward():
    net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1))
    net(torch.rand(2, 4))

    def init_cnn(m):
        if type(m) == nn.Linear:  # noqa: E721
            nn.init.xavier_uniform_(m.weight)

    net.apply(init_cnn)
    assert np.abs(net[0].weight.detach().numpy()).max() <= np.sqrt(6 / 12)


# ---- Custom Layers -------------------------------------------------------------------------

class CenteredLayer(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, X):
        return X - X.mean()


class MyLinear(nn.Module):
    def __init__(self, in_units, units):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_units, units))
        self.bias = nn.Parameter(torch.randn(units,))

    def forward(self, X):
        linear = torch.matmul(X, self.weight.data) + self.bias.data
        return F.relu(linear)


def test_centered_layer(capsys):
    layer = CenteredLayer()
    print(layer(torch.tensor([1.0, 2, 3, 4, 5])))
    net = nn.Sequential(nn.LazyLinear(128), CenteredLayer())
    Y = net(torch.rand(4, 8))
    print(Y.mean())
    out = capsys.readouterr().out.split("\n")
    assert out[0] == "tensor([-2., -1.,  0.,  1.,  2.])"
    assert re.fullmatch(rf"tensor\({FLOAT}, grad_fn=<MeanBackward0>\)", out[1])
    assert abs(Y.mean().item()) < 1e-6


def test_my_linear(capsys):
    linear = MyLinear(5, 3)
    print(linear.weight)
    print(linear(torch.rand(2, 5)))
    net = nn.Sequential(MyLinear(64, 8), MyLinear(8, 1))
    print(net(torch.rand(2, 64)))
    out = capsys.readouterr().out
    assert re.match(r"Parameter containing:\ntensor\(\[\[.*\]\], requires_grad=True\)\n"
                    r"tensor\(\[\[", out, re.S)
    assert out.count("\n") == 2 + 4 + 2 + 2  # 5-row parameter, 2-row and 2-row outputs
    assert [n for n, _ in linear.named_parameters()] == ["weight", "bias"]
    assert linear(torch.rand(2, 5)).min().item() >= 0
