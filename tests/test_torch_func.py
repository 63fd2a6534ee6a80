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


def test_samples_of_no_dimensions():
    """0-d samples: each loss is one squared error (weighted: its weight cancels)."""
    p, t, w, dp = _tensors((6,), (6,), (6,), (6,), seed=12, positive_last=False)
    w = w.abs() + 0.5
    for reduction in REDUCTIONS:
        _both(lambda loss, r=reduction: func.vmap(lambda a, b, c: loss(a, b, reduction=r, weight=c)))(p, t, w)
        _both(lambda loss, r=reduction: func.vmap(lambda a, b: loss(a, b, reduction=r)))(p, t)

        def weighted_total(loss, r=reduction):
            per_sample = func.vmap(lambda a, b, c: loss(a, b, reduction=r, weight=c))
            return func.grad(
                lambda a, c: (per_sample(a, t, c) * torch.arange(6.0, dtype=a.dtype)).sum(), argnums=(0, 1)
            )

        _both(weighted_total)(p, w)
        _both(
            lambda loss, r=reduction: (
                lambda a, da: func.jvp(func.vmap(lambda x: loss(x, t[0], reduction=r)), (a,), (da,))
            )
        )(p, dp)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float32_per_sample_gradients(reduction):
    p, t = (x.float() for x in _tensors((9, 5), (9, 5), seed=13))
    results = [
        func.vmap(func.grad(lambda a, b, loss=loss: loss(a, b, reduction="sum" if reduction == "none" else reduction)))(
            p, t
        )
        for loss in (mse_loss, F.mse_loss)
    ]
    torch.testing.assert_close(results[0], results[1], rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("nested", ["jacfwd(jacfwd)", "jvp(jvp)"])
def test_forward_mode_over_forward_mode_is_refused(nested):
    """PyTorch gives a custom function's jvp no derivative of its own: the result would be
    0, so it is refused with a message that names the working alternatives."""
    p, t = _tensors((2, 3), (2, 3), seed=14)

    def loss(a):
        return mse_loss(a, t)

    if nested == "jacfwd(jacfwd)":
        twice = func.jacfwd(func.jacfwd(loss))
    else:
        twice = lambda a: func.jvp(lambda x: func.jvp(loss, (x,), (x,))[1], (a,), (a,))
    with pytest.raises(NotImplementedError, match="hessian"):
        twice(p)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_forward_mode_autograd_and_linearize(reduction, weighted):
    """torch.autograd.forward_ad's dual tensors (eager forward mode), and torch.func.linearize,
    which traces them with make_fx."""
    forward_ad = torch.autograd.forward_ad
    p, t, w, dp, dw = _tensors((4, 3), (4, 3), (4, 3), (4, 3), (4, 3), seed=15)
    w = w.abs() + 0.5

    def dual_tangent(loss):
        def run(a, da, c, dc):
            with forward_ad.dual_level():
                weight = forward_ad.make_dual(c, dc) if weighted else None
                out = loss(forward_ad.make_dual(a, da), t, reduction=reduction, weight=weight)
                return forward_ad.unpack_dual(out).tangent

        return run

    tangent = _both(dual_tangent)(p, dp, w, dw)
    assert tangent is not None
    _both(lambda loss: lambda a, da: func.linearize(lambda x: loss(x, t, reduction=reduction), a)[1](da))(p, dp)


def test_make_fx_traces_the_operator():
    """Traced by make_fx (as torch.export does), the loss is the operator's node, not the
    NumPy computation's result frozen into the graph as a constant."""
    from torch.fx.experimental.proxy_tensor import make_fx

    p, t = _tensors((5, 2), (5, 2), seed=16)
    graph = make_fx(lambda a, b: mse_loss(a, b))(p, t)
    assert "fastmse.mse_loss" in graph.code
    q, u = _tensors((5, 2), (5, 2), seed=17)
    torch.testing.assert_close(graph(q, u), F.mse_loss(q, u), rtol=1e-12, atol=1e-12)


def test_fake_tensors_take_the_operators_fake():
    """Fake tensors (shape propagation, torch.export) have no data: the fake is used."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    p, t = _tensors((5, 2), (5, 2), seed=18)
    with FakeTensorMode() as mode:
        fake = mse_loss(mode.from_tensor(p), mode.from_tensor(t), reduction="none")
        reduced = mse_loss(mode.from_tensor(p), mode.from_tensor(t))
    assert (fake.shape, fake.dtype, reduced.shape) == (p.shape, p.dtype, ())


def test_vmap_inside_forward_mode_autograd():
    forward_ad = torch.autograd.forward_ad
    p, t, dp = _tensors((3, 4), (3, 4), (3, 4), seed=19)

    def transform(loss):
        def run(a, b, da):
            with forward_ad.dual_level():
                return forward_ad.unpack_dual(func.vmap(loss)(forward_ad.make_dual(a, da), b)).tangent

        return run

    assert _both(transform)(p, t, dp) is not None


def test_traced_transforms_and_functionalize():
    """make_fx of jvp and of grad (real and fake tracing), torch.jit.trace and
    functionalize replay PyTorch's results on new inputs; make_fx of vmap is refused (the
    operator has no batch dimension), rather than its loss frozen into the graph."""
    from torch.fx.experimental.proxy_tensor import make_fx

    p, t, dp, q = _tensors((3, 4), (3, 4), (3, 4), (3, 4), seed=20)

    def traced(loss):
        jvp = make_fx(lambda a, b, da: func.jvp(lambda x: loss(x, b), (a,), (da,))[1])(p, t, dp)
        grad = make_fx(lambda a, b: func.grad(lambda x: loss(x, b))(a), tracing_mode="fake")(p, t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings about Python values
            jit = torch.jit.trace(lambda a, b: loss(a, b), (p, t))
        return jvp(q, t, dp), grad(q, t), jit(q, t), func.functionalize(loss)(q, t)

    _both(lambda loss: lambda: traced(loss))()
    with pytest.raises(NotImplementedError, match="vmap"):
        make_fx(lambda a, b: func.vmap(mse_loss)(a, b))(p, t)
