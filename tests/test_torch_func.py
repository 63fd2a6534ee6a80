"""fastmse.compat.torch under torch.func's transforms (grad, vmap, jacrev, jvp, jacfwd,
hessian, and their compositions): the same results as torch.nn.functional.mse_loss under
the same transforms, on the same inputs, in float64."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
from fastmse.compat.torch import mse_loss

F = torch.nn.functional
func = torch.func
REDUCTIONS = ("mean", "sum", "none")


def _tensors(*shapes, seed=0, positive_last=False):
    generator = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]
    if positive_last:  # weights: PyTorch's weighted mean is defined for any sign, positive keeps it far from 0
        tensors[-1] = tensors[-1].abs() + 0.5
    return tensors


def _both(transform):
    """`transform(loss)` for fastmse's loss and PyTorch's, each called on the same arguments;
    asserts they agree, and returns fastmse's."""

    def run(*args):
        results = []
        for loss in (mse_loss, F.mse_loss):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PyTorch's broadcast warning: tested elsewhere
                results.append(transform(loss)(*args))
        torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12)
        return results[0]

    return run


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_grad_of_the_loss(reduction, weighted):
    p, t, w = _tensors((6, 4), (6, 4), (6, 4), seed=1, positive_last=True)
    w = w if weighted else None

    def transform(loss):
        return func.grad(
            lambda a, b, c: loss(a, b, reduction=reduction, weight=c), argnums=(0, 1, 2) if weighted else (0, 1)
        )

    gradients = _both(transform)(p, t, w)
    assert len(gradients) == (3 if weighted else 2)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("shapes", "in_dims"),
    [
        (((5, 3), (5, 3)), (0, 0)),  # a batch of samples of 3
        (((3, 5), (5, 3)), (1, 0)),  # input batched along its last dimension
        (((5, 2, 3), (3,)), (0, None)),  # one target for every sample, broadcast within each
        (((2, 3), (5, 2, 3)), (None, 0)),  # one input, a batch of targets
        (((5, 4, 1), (5, 3)), (0, 0)),  # samples that broadcast against each other: (4, 1) and (3,)
    ],
    ids=["batch", "batch last", "one target", "one input", "broadcast within"],
)
def test_vmap_is_a_loss_per_sample(reduction, shapes, in_dims):
    p, t = _tensors(*shapes, seed=2)
    losses = _both(lambda loss: func.vmap(lambda a, b: loss(a, b, reduction=reduction), in_dims=in_dims))(p, t)
    assert losses.shape[0] == 5


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "in_dims",
    [(0, 0, 0), (0, 0, None), (None, 0, 0), (None, None, 0), (0, None, None), (None, 0, None)],
    ids=str,
)
def test_vmap_of_a_weighted_loss(reduction, in_dims):
    shapes = [(5, 2, 3) if d == 0 else (2, 3) for d in in_dims]
    p, t, w = _tensors(*shapes, seed=3, positive_last=True)
    _both(lambda loss: func.vmap(lambda a, b, c: loss(a, b, reduction=reduction, weight=c), in_dims=in_dims))(p, t, w)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_per_sample_gradients(reduction, weighted):
    """vmap(grad): the gradient of each sample's loss, of input, target and weight."""
    p, t, w = _tensors((7, 3, 2), (7, 3, 2), (7, 3, 2), seed=4, positive_last=True)
    argnums = (0, 1, 2) if weighted else (0, 1)

    def transform(loss):
        def sample_loss(a, b, c):
            return loss(a, b, reduction=reduction, weight=c if weighted else None)

        return func.vmap(func.grad(sample_loss, argnums=argnums))

    _both(transform)(p, t, w)


def test_nested_vmap():
    p, t, w = _tensors((4, 5, 3), (4, 5, 3), (5, 3), seed=5, positive_last=True)
    losses = _both(
        lambda loss: func.vmap(func.vmap(lambda a, b, c: loss(a, b, weight=c), in_dims=(0, 0, 0)), in_dims=(0, 0, None))
    )(p, t, w)
    assert losses.shape == (4, 5)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_jacrev_and_jacfwd(reduction):
    p, t = _tensors((3, 4), (3, 4), seed=6)
    for jacobian in (func.jacrev, func.jacfwd):
        _both(lambda loss, jacobian=jacobian: jacobian(lambda a, b: loss(a, b, reduction=reduction), argnums=(0, 1)))(
            p, t
        )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_jvp_along_every_input(reduction, weighted):
    p, t, w, dp, dt, dw = _tensors((3, 4), (3, 4), (3, 4), (3, 4), (3, 4), (3, 4), seed=7)
    w = w.abs() + 0.5
    primals, tangents = ((p, t, w), (dp, dt, dw)) if weighted else ((p, t), (dp, dt))

    def transform(loss):
        def function(*x):
            return loss(x[0], x[1], reduction=reduction, weight=x[2] if weighted else None)

        return lambda *arguments: func.jvp(function, arguments[: len(primals)], arguments[len(primals) :])

    _both(transform)(*primals, *tangents)


@pytest.mark.parametrize("weighted", [False, True])
def test_hessian(weighted):
    p, t, w = _tensors((2, 3), (2, 3), (2, 3), seed=8, positive_last=True)
    _both(lambda loss: func.hessian(lambda a, c: loss(a, t, weight=c if weighted else None), argnums=(0, 1)))(p, w)


def test_a_model_trained_with_functional_call_and_vmap():
    """Per-sample gradients of a small model's parameters (the torch.func recipe)."""
    torch.manual_seed(9)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    x, y = _tensors((16, 4), (16, 2), seed=10)

    def transform(loss):
        def sample_loss(params, xi, yi):
            return loss(func.functional_call(model, params, (xi.unsqueeze(0),)), yi.unsqueeze(0))

        return func.vmap(func.grad(sample_loss), in_dims=(None, 0, 0))

    gradients = _both(transform)(parameters, x, y)
    assert gradients["0.weight"].shape == (16, 8, 4)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight_dim", [0, None, "unweighted"], ids=["batched weights", "shared weights", "unweighted"])
def test_grad_of_per_sample_losses(reduction, weight_dim):
    """grad(vmap): the backward of a loss per sample (its batch dimension kept), of input,
    target and weights, shared by the samples or not."""
    weighted = weight_dim != "unweighted"
    p, t, w = _tensors((5, 2, 3), (5, 2, 3), (5, 2, 3) if weight_dim == 0 else (2, 3), seed=11, positive_last=True)

    def transform(loss):
        def total(a, b, c):
            per_sample = func.vmap(
                lambda x, y, z: loss(x, y, reduction=reduction, weight=z if weighted else None),
                in_dims=(0, 0, weight_dim if weighted else None),
            )(a, b, c)
            return (
                per_sample * torch.arange(1.0, per_sample.numel() + 1, dtype=a.dtype).reshape(per_sample.shape)
            ).sum()

        return func.grad(total, argnums=(0, 1, 2) if weighted else (0, 1))

    _both(transform)(p, t, w)
