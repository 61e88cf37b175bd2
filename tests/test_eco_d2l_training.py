"""The PyTorch code of d2l's linear regression, softmax regression, MLP, weight decay and
dropout sections (chapters 3-5), with synthetic data in place of Fashion-MNIST and a
minimal loop in place of ``d2l.Trainer``: only ``import fusionnet as torch`` changes (the
file passes under PyTorch with its three imports swapped)."""
from __future__ import annotations

import fusionnet as torch
from fusionnet import nn
from fusionnet.nn import functional as F


# ---- 3.3 synthetic regression data, with the book's data loader ------------------------

class SyntheticRegressionData:
    def __init__(self, w, b, noise=0.01, num_train=1000, num_val=1000, batch_size=32):
        self.num_train, self.batch_size = num_train, batch_size
        n = num_train + num_val
        self.X = torch.randn(n, len(w))
        noise = torch.randn(n, 1) * noise
        self.y = torch.matmul(self.X, w.reshape((-1, 1))) + b + noise

    def get_tensorloader(self, tensors, train, indices=slice(0, None)):
        tensors = tuple(a[indices] for a in tensors)
        dataset = torch.utils.data.TensorDataset(*tensors)
        return torch.utils.data.DataLoader(dataset, self.batch_size, shuffle=train)

    def get_dataloader(self, train):
        i = slice(0, self.num_train) if train else slice(self.num_train, None)
        return self.get_tensorloader((self.X, self.y), train, i)

    def train_dataloader(self):
        return self.get_dataloader(train=True)


def _fit(model, data, epochs, opt=None):
    opt = opt or model.configure_optimizers()
    for _ in range(epochs):
        for X, y in data.train_dataloader():
            loss = model.loss(model(X), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return loss.item()


# ---- 3.4 linear regression from scratch ------------------------------------------------

class LinearRegressionScratch(nn.Module):
    def __init__(self, num_inputs, lr, sigma=0.01):
        super().__init__()
        self.lr = lr
        self.w = torch.normal(0, sigma, (num_inputs, 1), requires_grad=True)
        self.b = torch.zeros(1, requires_grad=True)

    def forward(self, X):
        return torch.matmul(X, self.w) + self.b

    def loss(self, y_hat, y):
        l = (y_hat - y) ** 2 / 2  # noqa: E741 - the book's name
        return l.mean()

    def configure_optimizers(self):
        return SGD([self.w, self.b], self.lr)


class SGD:
    def __init__(self, params, lr):
        self.params, self.lr = params, lr

    def step(self):
        with torch.no_grad():
            for param in self.params:
                param -= self.lr * param.grad

    def zero_grad(self):
        for param in self.params:
            if param.grad is not None:
                param.grad.zero_()


def test_linear_regression_from_scratch_recovers_w_and_b():
    torch.manual_seed(0)
    data = SyntheticRegressionData(w=torch.tensor([2, -3.4]), b=4.2)
    model = LinearRegressionScratch(2, lr=0.03)
    _fit(model, data, epochs=10)
    assert (model.w.reshape(-1) - torch.tensor([2, -3.4])).abs().max() < 0.02
    assert abs(model.b.item() - 4.2) < 0.02


# ---- 3.5 concise linear regression: LazyLinear initialised through .data --------------

class LinearRegression(nn.Module):
    def __init__(self, lr):
        super().__init__()
        self.lr = lr
        self.net = nn.LazyLinear(1)
        self.net.weight.data.normal_(0, 0.01)
        self.net.bias.data.fill_(0)

    def forward(self, X):
        return self.net(X)

    def loss(self, y_hat, y):
        fn = nn.MSELoss()
        return fn(y_hat, y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), self.lr)

    def get_w_b(self):
        return (self.net.weight.data, self.net.bias.data)


def test_concise_linear_regression_with_a_lazy_layer_initialised_before_its_first_call():
    torch.manual_seed(1)
    data = SyntheticRegressionData(w=torch.tensor([2, -3.4]), b=4.2)
    model = LinearRegression(lr=0.03)
    model(data.X[:2])  # the book's Trainer runs a dummy batch before building the optimiser
    _fit(model, data, epochs=10)
    w, b = model.get_w_b()
    assert (w.reshape(-1) - torch.tensor([2, -3.4])).abs().max() < 0.02
    assert abs(b.item() - 4.2) < 0.02


# ---- 4.4 / 4.5 softmax regression, from scratch and concise --------------------------

def softmax(X):
    X_exp = torch.exp(X)
    partition = X_exp.sum(1, keepdims=True)
    return X_exp / partition  # The broadcasting mechanism is applied here


def cross_entropy(y_hat, y):
    return -torch.log(y_hat[list(range(len(y_hat))), y]).mean()


def accuracy(Y_hat, Y, averaged=True):
    Y_hat = Y_hat.reshape((-1, Y_hat.shape[-1]))
    preds = Y_hat.argmax(axis=1).type(Y.dtype)
    compare = (preds == Y.reshape(-1)).type(torch.float32)
    return compare.mean() if averaged else compare


class ImageData:
    """Fashion-MNIST's shapes (1x28x28, 10 classes) with synthetic, learnable images."""

    def __init__(self, n=512, batch_size=64):
        self.batch_size = batch_size
        templates = torch.randn(10, 1, 28, 28)
        self.y = torch.randint(0, 10, (n,))
        self.X = templates[self.y] + 0.5 * torch.randn(n, 1, 28, 28)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(self.X, self.y),
                                           self.batch_size, shuffle=True, num_workers=0)


class SoftmaxRegressionScratch(nn.Module):
    def __init__(self, num_inputs, num_outputs, lr, sigma=0.01):
        super().__init__()
        self.lr = lr
        self.W = torch.normal(0, sigma, size=(num_inputs, num_outputs), requires_grad=True)
        self.b = torch.zeros(num_outputs, requires_grad=True)

    def parameters(self):
        return [self.W, self.b]

    def forward(self, X):
        X = X.reshape((-1, self.W.shape[0]))
        return softmax(torch.matmul(X, self.W) + self.b)

    def loss(self, y_hat, y):
        return cross_entropy(y_hat, y)

    def configure_optimizers(self):
        return SGD([self.W, self.b], self.lr)


def test_softmax_regression_from_scratch_learns():
    torch.manual_seed(2)
    X = torch.rand((2, 5))
    X_prob = softmax(X)
    assert torch.allclose(X_prob.sum(1), torch.ones(2))
    y_hat = torch.tensor([[0.1, 0.3, 0.6], [0.3, 0.2, 0.5]])
    assert abs(cross_entropy(y_hat, torch.tensor([0, 2])).item() - 1.4979) < 1e-4
    assert accuracy(y_hat, torch.tensor([0, 2])).item() == 0.5
    data = ImageData()
    model = SoftmaxRegressionScratch(784, 10, lr=0.1)
    _fit(model, data, epochs=3)
    assert accuracy(model(data.X), data.y).item() > 0.9


class SoftmaxRegression(nn.Module):
    def __init__(self, num_outputs, lr):
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_outputs))

    def forward(self, X):
        return self.net(X)

    def loss(self, Y_hat, Y, averaged=True):
        Y_hat = Y_hat.reshape((-1, Y_hat.shape[-1]))
        Y = Y.reshape((-1,))
        return F.cross_entropy(Y_hat, Y, reduction='mean' if averaged else 'none')

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), self.lr)


def test_concise_softmax_regression_learns():
    torch.manual_seed(3)
    data = ImageData()
    model = SoftmaxRegression(10, lr=0.1)
    model(data.X[:2])
    _fit(model, data, epochs=3)
    assert accuracy(model(data.X), data.y).item() > 0.9


# ---- 5.2 MLP from scratch, 5.6 dropout from scratch ----------------------------------

def relu(X):
    a = torch.zeros_like(X)
    return torch.max(X, a)


def dropout_layer(X, dropout):
    assert 0 <= dropout <= 1
    if dropout == 1:
        return torch.zeros_like(X)
    mask = (torch.rand(X.shape) > dropout).float()
    return mask * X / (1.0 - dropout)


class MLPScratch(nn.Module):
    def __init__(self, num_inputs, num_outputs, num_hiddens, lr, sigma=0.01, dropout=0.0):
        super().__init__()
        self.lr, self.dropout = lr, dropout
        self.W1 = nn.Parameter(torch.randn(num_inputs, num_hiddens) * sigma)
        self.b1 = nn.Parameter(torch.zeros(num_hiddens))
        self.W2 = nn.Parameter(torch.randn(num_hiddens, num_outputs) * sigma)
        self.b2 = nn.Parameter(torch.zeros(num_outputs))

    def forward(self, X):
        X = X.reshape((-1, self.W1.shape[0]))
        H = relu(torch.matmul(X, self.W1) + self.b1)
        if self.training:
            H = dropout_layer(H, self.dropout)
        return torch.matmul(H, self.W2) + self.b2

    loss = SoftmaxRegression.loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), self.lr)


def test_mlp_and_dropout_from_scratch_learn():
    torch.manual_seed(4)
    X = torch.arange(16, dtype=torch.float32).reshape((2, 8))
    assert torch.equal(dropout_layer(X, 0), X)
    assert torch.equal(dropout_layer(X, 1), torch.zeros_like(X))
    kept = dropout_layer(X, 0.5)
    assert ((kept == 0) | (kept == 2 * X)).all()
    data = ImageData()
    model = MLPScratch(784, 10, 64, lr=0.1, dropout=0.2)
    _fit(model, data, epochs=4)
    model.eval()
    assert accuracy(model(data.X), data.y).item() > 0.8


# ---- 3.7 weight decay: l2 penalty, torch.norm, per-group weight_decay ----------------

class Data:
    def __init__(self, num_train, num_val, num_inputs, batch_size):
        self.num_train, self.batch_size = num_train, batch_size
        n = num_train + num_val
        self.X = torch.randn(n, num_inputs)
        noise = torch.randn(n, 1) * 0.01
        w, b = torch.ones((num_inputs, 1)) * 0.01, 0.05
        self.y = torch.matmul(self.X, w) + b + noise

    get_tensorloader = SyntheticRegressionData.get_tensorloader
    get_dataloader = SyntheticRegressionData.get_dataloader
    train_dataloader = SyntheticRegressionData.train_dataloader


def l2_penalty(w):
    return (w ** 2).sum() / 2


class WeightDecayScratch(LinearRegressionScratch):
    def __init__(self, num_inputs, lambd, lr, sigma=0.01):
        super().__init__(num_inputs, lr, sigma)
        self.lambd = lambd

    def loss(self, y_hat, y):
        return super().loss(y_hat, y) + self.lambd * l2_penalty(self.w)


class WeightDecay(LinearRegression):
    def __init__(self, wd, lr):
        super().__init__(lr)
        self.wd = wd

    def configure_optimizers(self):
        return torch.optim.SGD([
            {'params': self.net.weight, 'weight_decay': self.wd},
            {'params': self.net.bias}], lr=self.lr)


def test_weight_decay_shrinks_the_weights():
    norms = {}
    for lambd in (0, 3):
        torch.manual_seed(5)
        data = Data(num_train=20, num_val=100, num_inputs=200, batch_size=5)
        model = WeightDecayScratch(200, lambd=lambd, lr=0.01)
        _fit(model, data, epochs=10)
        norms[lambd] = float(torch.norm(model.w).item())
    assert norms[3] < norms[0] / 2
    concise = {}
    for wd in (0, 3):  # the .data initialisers were no-ops, as in PyTorch: Linear's init
        torch.manual_seed(6)
        data = Data(num_train=20, num_val=100, num_inputs=200, batch_size=5)
        model = WeightDecay(wd=wd, lr=0.01)
        model(data.X[:2])
        _fit(model, data, epochs=10)
        concise[wd] = model.net.weight.norm().item()
    assert concise[3] < concise[0] * 0.6
