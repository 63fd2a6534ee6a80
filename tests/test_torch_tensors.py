"""fastmse.compat.torch on PyTorch tensors: the values and gradients of
torch.nn.functional.mse_loss and its autograd on the same inputs, gradcheck, opcheck of
the torch.library operators, torch.compile(fullgraph=True), and a training loop."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from fastmse.compat.torch import MSELoss, mse_loss

F = torch.nn.functional
REDUCTIONS = ("mean", "sum", "none")
# Within float rounding of PyTorch's own loss: the summation orders differ.
TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float32: 2e-6, torch.float64: 1e-13}
DTYPES = list(TOLERANCE)


def _pair(shape, dtype, seed, target_shape=None):
    generator = torch.Generator().manual_seed(seed)
    p = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    t = torch.randn(target_shape or shape, generator=generator, dtype=torch.float64).to(dtype)
    return p, t


def _close(ours, theirs, dtype, summed=1):
    """Within rounding of PyTorch's result; `summed`: how many terms PyTorch's autograd adds
    in the dtype for each value (a broadcast input's gradient), each adding its rounding."""
    assert ours.dtype == theirs.dtype, (ours.dtype, theirs.dtype)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    tolerance = TOLERANCE[dtype] * summed
    torch.testing.assert_close(ours, theirs, rtol=tolerance, atol=tolerance)


def _loss_and_grads(function, p, t, w, reduction, grad_output, requiring=("input", "target", "weight")):
    """The loss and the gradients of those of input, target and weight named in `requiring`
    (input alone: the fused backward; more: PyTorch's expressions)."""
    leaves = [
        None if x is None else x.detach().clone().requires_grad_(name in requiring)
        for name, x in (("input", p), ("target", t), ("weight", w))
    ]
    kwargs = {"reduction": reduction} if leaves[2] is None else {"reduction": reduction, "weight": leaves[2]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the broadcast warning: tested on its own
        value = function(leaves[0], leaves[1], **kwargs)
    grads = torch.autograd.grad(value, [x for x in leaves if x is not None and x.requires_grad], grad_output)
    return value, grads


@pytest.mark.parametrize("requiring", [("input",), ("input", "target", "weight")], ids=["fused", "all"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "layout",
    [
        "same shape",
        "broadcast targets",
        "weighted",
        "transposed",
        "broadcast predictions",
        "weighted, broadcast predictions",
    ],
)
def test_values_and_gradients_match_pytorch(dtype, reduction, layout, requiring):
    shape, target_shape = (64, 10), None
    if layout == "broadcast targets":
        target_shape = (1, 10)
    p, t = _pair(shape, dtype, 1, target_shape)
    if layout.endswith("broadcast predictions"):
        p = p[:1]  # (1, 10) against (64, 10)
    if layout == "transposed":
        p, t = p.t(), t.t()  # non-contiguous
    w = None
    if layout.startswith("weighted"):
        w = torch.rand(p.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype) + 0.5
    full = torch.broadcast_shapes(p.shape, t.shape)
    generator = torch.Generator().manual_seed(3)
    grad_output = torch.ones(()) if reduction != "none" else torch.randn(full, generator=generator, dtype=torch.float64)
    grad_output = grad_output.to(dtype)
    ours, our_grads = _loss_and_grads(mse_loss, p, t, w, reduction, grad_output, requiring)
    theirs, their_grads = _loss_and_grads(F.mse_loss, p, t, w, reduction, grad_output, requiring)
    assert isinstance(ours, torch.Tensor)
    _close(ours, theirs, dtype)
    for mine, pytorchs in zip(our_grads, their_grads, strict=True):
        _close(mine, pytorchs, dtype, summed=math.prod(full) // mine.numel())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_gradcheck_in_float64(reduction, weighted):
    p, t = _pair((5, 3), torch.float64, 3)
    inputs = [p.requires_grad_(True), t.requires_grad_(True)]
    if weighted:
        inputs.append((torch.rand(5, 3, dtype=torch.float64) + 0.5).requires_grad_(True))

    def loss(*args):
        return mse_loss(args[0], args[1], reduction=reduction, weight=args[2] if weighted else None)

    assert torch.autograd.gradcheck(loss, inputs)
    assert torch.autograd.gradgradcheck(loss, inputs)


def test_double_backward_matches_pytorch():
    p, t = _pair((8, 4), torch.float64, 4)
    results = []
    for function in (mse_loss, F.mse_loss):
        leaf = p.clone().requires_grad_(True)
        (first,) = torch.autograd.grad(function(leaf, t), leaf, create_graph=True)
        (second,) = torch.autograd.grad((first * first).sum(), leaf)
        results.append((first.detach(), second))
    torch.testing.assert_close(results[0], results[1])


def test_the_fused_pass_runs_where_input_requires_grad():
    p, t = _pair((32, 8), torch.float32, 5)
    leaf = p.clone().requires_grad_(True)
    assert type(mse_loss(leaf, t).grad_fn).__name__ == "FusedLossBackward"
    assert type(mse_loss(leaf, t, reduction="none").grad_fn).__name__ == "LossBackward"
    assert mse_loss(p, t).grad_fn is None  # nothing requires grad: the loss alone
    with torch.no_grad():
        assert mse_loss(leaf, t).grad_fn is None


@pytest.mark.parametrize(
    ("operator", "reduction"),
    [("mse_loss", r) for r in REDUCTIONS] + [("mse_loss_and_grad", r) for r in ("mean", "sum")],
)
def test_opcheck(operator, reduction):
    mse_loss(torch.zeros(1), torch.zeros(1))  # registers the operators
    code = {"none": 0, "mean": 1, "sum": 2}[reduction]
    p, t = _pair((6, 5), torch.float32, 6)
    w = torch.rand(6, 5) + 0.5
    op = getattr(torch.ops.fastmse, operator)
    cases = [  # (input, target, weight, which require grad)
        (p, t, None, "input"),
        (p.t(), t.t(), None, "input"),  # non-contiguous: the fake's strides must be the real ones'
        (p, t, w, "target"),
        (p[:1], t, w[:1], "input"),
    ]
    for input, target, weight, requiring in cases:
        input, target = input.clone(), target.clone()
        (input if requiring == "input" else target).requires_grad_(True)
        torch.library.opcheck(op, (input, target, weight, code))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x, y = _pair((40, 6), torch.float32, 7)[0], torch.randn(40, 3)

    def step(x, y):
        return mse_loss(model(x), y)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager = step(x, y)
    value = compiled(x, y)
    torch.testing.assert_close(value, eager)
    eager_grads = torch.autograd.grad(eager, list(model.parameters()))
    compiled_grads = torch.autograd.grad(compiled(x, y), list(model.parameters()))
    torch.testing.assert_close(compiled_grads, eager_grads)


def test_a_training_loop_learns_what_pytorchs_loss_teaches():
    """20 steps of SGD on a small MLP: the parameters match those trained with PyTorch's
    loss within float rounding."""
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(128, 5, generator=generator)
    y = torch.randn(128, 2, generator=generator)
    trained = []
    for loss_function in (MSELoss(), torch.nn.MSELoss()):
        torch.manual_seed(9)
        model = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        for _ in range(20):
            optimizer.zero_grad()
            loss_function(model(x), y).backward()
            optimizer.step()
        trained.append([p.detach() for p in model.parameters()])
    torch.testing.assert_close(trained[0], trained[1], rtol=1e-5, atol=1e-6)


def test_pytorchs_arguments_and_warnings():
    p, t = _pair((4, 3), torch.float32, 10)
    with pytest.warns(UserWarning, match=r"target size \(torch.Size\(\[1, 3\]\)\) that is different"):
        mse_loss(p, t[:1])
    with pytest.warns(UserWarning, match="reduction='sum'"):
        legacy = mse_loss(p, t, size_average=False)
    torch.testing.assert_close(legacy, F.mse_loss(p, t, reduction="sum"))
    with pytest.raises(ValueError, match="Weights and input must have the same size"):
        mse_loss(p, t, weight=torch.ones(3))
    with pytest.raises(ValueError, match="is not a valid value for reduction"):
        mse_loss(p, t, reduction="max")
    with pytest.raises(TypeError, match="input is a torch.int64 tensor"):
        mse_loss(p.long(), t.long())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bfloat16_is_rounded_once_from_float64(reduction):
    # PyTorch rounds its bfloat16 loss more than once; fastmse's is the float64 value
    # rounded once (ml_dtypes' cast, which rounds once, is the oracle), gradient too.
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is in the test extra")
    p, t = _pair((300, 7), torch.bfloat16, 12)
    leaf = p.clone().requires_grad_(True)
    value = mse_loss(leaf, t, reduction=reduction)
    value.backward(torch.ones_like(value))
    assert value.dtype == leaf.grad.dtype == torch.bfloat16
    p64, t64 = p.double().numpy(), t.double().numpy()
    d = p64 - t64
    count = d.size if reduction == "mean" else 1
    expected = d * d if reduction == "none" else np.sum(d * d) / count
    bits = torch.from_numpy(np.asarray(expected).astype(ml_dtypes.bfloat16).view(np.int16)).view(torch.bfloat16)
    assert torch.equal(value.detach(), bits)
    grad = (2 * d / count).astype(ml_dtypes.bfloat16).view(np.int16)
    assert torch.equal(leaf.grad, torch.from_numpy(grad).view(torch.bfloat16))


def test_numpy_in_gives_numpy_out():
    value = mse_loss(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
    assert isinstance(value, np.float64)
    assert value == 2.5


def test_a_second_backward_through_the_same_graph():
    """The first backward scales the fused gradient in place; a second one (retain_graph)
    must not see it scaled twice."""
    p, t = _pair((16, 4), torch.float64, 11)
    leaf = p.clone().requires_grad_(True)
    value = mse_loss(leaf, t)
    value.backward(retain_graph=True)
    first = leaf.grad.clone()
    leaf.grad = None
    (3 * value).backward()
    torch.testing.assert_close(leaf.grad, 3 * first)
    reference = p.clone().requires_grad_(True)
    F.mse_loss(reference, t).backward()
    torch.testing.assert_close(first, reference.grad)


def test_float64_weights_make_a_float64_loss_as_in_pytorch():
    """The dtype of PyTorch's result; its value within float32 rounding (PyTorch squares
    the float32 difference in float32 first, fastmse in float64)."""
    p, t = _pair((10, 3), torch.float32, 12)
    w = torch.rand(10, 3, dtype=torch.float64) + 0.5
    for reduction in REDUCTIONS:
        ours, theirs = mse_loss(p, t, reduction=reduction, weight=w), F.mse_loss(p, t, reduction=reduction, weight=w)
        assert ours.dtype == theirs.dtype == torch.float64
        torch.testing.assert_close(ours, theirs, rtol=TOLERANCE[torch.float32], atol=TOLERANCE[torch.float32])
