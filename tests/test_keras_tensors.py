"""fastmse.compat.keras on tensors of Keras's PyTorch backend: the values and gradients of
keras.losses.mean_squared_error and MeanSquaredError on the same tensors, a float64 NumPy
reference, NumPy in giving NumPy out, and a model trained with fastmse's loss against the
same model trained with Keras's."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported, here or elsewhere

torch = pytest.importorskip("torch", reason="torch is in the test extra")
keras = pytest.importorskip("keras", reason="keras is in the test extra")
from checks import assert_matches
from fastmse.compat import keras as compat
from fastmse.compat.keras import mean_squared_error
from reference import loss

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="Keras runs on another backend here")

try:
    import ml_dtypes
except ImportError:  # bfloat16 tensors need it (fastmse[bfloat16])
    ml_dtypes = None
NEEDS_ML_DTYPES = pytest.mark.skipif(ml_dtypes is None, reason="bfloat16 tensors need ml_dtypes (the test extra)")
DTYPES = [torch.float16, pytest.param(torch.bfloat16, marks=NEEDS_ML_DTYPES), torch.float32, torch.float64]
# (y_true's shape, y_pred's shape): Keras squeezes or expands ranks that differ by one
# with a trailing 1, then broadcasts.
LAYOUTS = {
    "(8, 3)": ((8, 3), (8, 3)),
    "(8,): one loss": ((8,), (8,)),
    "(8, 1) vs (8,)": ((8, 1), (8,)),
    "(8,) vs (8, 1)": ((8,), (8, 1)),
    "(4, 5, 6)": ((4, 5, 6), (4, 5, 6)),
    "broadcast y_true": ((1, 3), (8, 3)),
    "broadcast y_pred": ((8, 3), (1, 3)),
    "broadcast along the last axis": ((8, 3), (8, 1, 1)),
    "transposed": ((3, 8), (3, 8)),
}


def _eps(dtype):
    return torch.finfo(dtype).eps


def _pair(layout, dtype, seed):
    true_shape, pred_shape = LAYOUTS[layout]
    generator = torch.Generator().manual_seed(seed)
    y_true = torch.randn(true_shape, generator=generator, dtype=torch.float64).to(dtype)
    y_pred = torch.randn(pred_shape, generator=generator, dtype=torch.float64).to(dtype)
    if layout == "transposed":  # non-contiguous tensors
        y_true, y_pred = y_true.t(), y_pred.t()
    return y_true, y_pred


def _same_rank(y_true, y_pred):
    """Keras's rank rule on float64 NumPy copies, for the reference: here the side of rank
    1 gets a trailing axis, or the trailing 1 of the other is dropped."""
    t, p = y_true.double().numpy(), y_pred.double().numpy()
    if t.ndim == p.ndim + 1 and t.shape[-1] == 1:
        t, p = (t, p[:, None]) if p.ndim == 1 else (t[..., 0], p)
    elif p.ndim == t.ndim + 1 and p.shape[-1] == 1:
        t, p = (t[:, None], p) if t.ndim == 1 else (t, p[..., 0])
    return t, p


def _keras_eps(dtype):
    """Keras's torch backend rounds float64 through float32 on the way (its mean computes
    in result_type(dtype, "float32"), which it takes to be float32); float16 and bfloat16
    squares are rounded in their dtype."""
    return _eps(dtype if dtype in (torch.float16, torch.bfloat16) else torch.float32)


def _assert_rounded_once(ours, expected, dtype):
    """`ours` is the float64 `expected` rounded to `dtype` (bfloat16: exactly as ml_dtypes
    rounds it, once; the others within the promise of checks.assert_matches)."""
    if dtype != torch.bfloat16:
        assert_matches(ours.numpy(), expected, np.dtype(str(dtype).removeprefix("torch.")))
        return
    rounded = np.asarray(expected, np.float64).astype(ml_dtypes.bfloat16).view(np.int16)
    assert torch.equal(ours, torch.from_numpy(rounded).view(torch.bfloat16)), (ours, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_values_match_keras_and_the_reference(layout, dtype):
    y_true, y_pred = _pair(layout, dtype, 1)
    ours = mean_squared_error(y_true, y_pred)
    theirs = keras.losses.mean_squared_error(y_true, y_pred).cpu()
    assert isinstance(ours, torch.Tensor)
    assert (ours.dtype, ours.shape, ours.device) == (theirs.dtype, theirs.shape, y_pred.device)
    t, p = _same_rank(y_true, y_pred)
    terms = np.broadcast_shapes(t.shape, p.shape)[-1]
    # Keras sums the squares in float32 (float16 squares): each term adds its rounding.
    tolerance = (terms + 2) * _keras_eps(dtype)
    torch.testing.assert_close(ours, theirs, rtol=tolerance, atol=0)
    _assert_rounded_once(ours, loss(p, t, axis=-1), dtype)


def _grads(function, y_true, y_pred, grad_output, requiring):
    leaves = [
        x.detach().clone().requires_grad_(name in requiring) for name, x in (("y_true", y_true), ("y_pred", y_pred))
    ]
    value = function(*leaves)
    wanted = [x for x in leaves if x.requires_grad]
    return value, dict(
        zip(
            [n for n in ("y_true", "y_pred") if n in requiring],
            torch.autograd.grad(value, wanted, grad_output),
            strict=True,
        )
    )


def _reference_grads(y_true, y_pred, grad_output):
    """float64 gradients of sum(grad_output * losses), and the scale of their rounding
    error: the same sums of 2 / k * (|p| + |t|) * |g|."""
    t, p = (torch.from_numpy(a) for a in _same_rank(y_true, y_pred))
    g = grad_output.double()[..., None]
    k = torch.broadcast_shapes(t.shape, p.shape)[-1]
    full, magnitude = 2 / k * (p - t) * g, 2 / k * (p.abs() + t.abs()) * g.abs()
    grads, scales = {}, {}
    for name, original, same_rank, sign in (("y_true", y_true, t, -1), ("y_pred", y_pred, p, 1)):
        grads[name] = (sign * full).sum_to_size(same_rank.shape).reshape(original.shape)
        scales[name] = magnitude.sum_to_size(same_rank.shape).reshape(original.shape)
    return grads, scales


@pytest.mark.parametrize("requiring", [("y_pred",), ("y_true", "y_pred")], ids=["y_pred", "both"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradients_match_keras_and_the_reference(layout, dtype, requiring, monkeypatch):
    y_true, y_pred = _pair(layout, dtype, 2)
    fused_passes = []
    computed = compat.computed

    def spy(*args, **kwargs):
        if kwargs.get("with_gradient", len(args) > 4 and args[4]):  # the fused pass
            fused_passes.append(args)
        return computed(*args, **kwargs)

    monkeypatch.setattr(compat, "computed", spy)
    losses = keras.losses.mean_squared_error(y_true, y_pred).cpu()
    grad_output = torch.rand(losses.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5
    grad_output = grad_output.to(dtype)
    ours, our_grads = _grads(mean_squared_error, y_true, y_pred, grad_output, requiring)
    theirs, their_grads = _grads(keras.losses.mean_squared_error, y_true, y_pred, grad_output, requiring)
    # The fused pass runs where only y_pred requires grad and is not broadcast across samples.
    assert len(fused_passes) == (requiring == ("y_pred",) and layout != "broadcast y_pred")
    terms = np.broadcast_shapes(*(a.shape for a in _same_rank(y_true, y_pred)))[-1]
    torch.testing.assert_close(ours.detach(), theirs.detach().cpu(), rtol=(terms + 2) * _keras_eps(dtype), atol=0)
    expected, scales = _reference_grads(y_true, y_pred, grad_output)
    for name in requiring:
        mine, keras_grad = our_grads[name], their_grads[name].cpu()
        assert (mine.dtype, mine.shape) == (keras_grad.dtype, keras_grad.shape)
        difference = (mine.double() - expected[name]).abs()
        assert torch.all(difference <= 4 * _eps(dtype) * scales[name]), (name, difference.max())
        between = (mine.double() - keras_grad.double()).abs()
        assert torch.all(between <= 8 * _keras_eps(dtype) * scales[name]), (name, between.max())


def test_gradcheck_and_gradgradcheck_in_float64():
    y_true, y_pred = _pair("broadcast y_true", torch.float64, 4)
    for requiring in ((False, True), (True, True)):  # the fused backward, then PyTorch's expressions
        inputs = (y_true.clone().requires_grad_(requiring[0]), y_pred.clone().requires_grad_(requiring[1]))
        assert torch.autograd.gradcheck(mean_squared_error, inputs)
        assert torch.autograd.gradgradcheck(mean_squared_error, inputs)


def test_double_backward_matches_keras():
    y_true, y_pred = _pair("(8, 3)", torch.float64, 5)
    results = []
    for function in (mean_squared_error, keras.losses.mean_squared_error):
        leaf = y_pred.clone().requires_grad_(True)
        (first,) = torch.autograd.grad(function(y_true, leaf).sum(), leaf, create_graph=True)
        (second,) = torch.autograd.grad((first * first).sum(), leaf)
        results.append((first.detach().cpu(), second.cpu()))
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-7)  # Keras: float32 inside


def test_without_grad_the_loss_alone():
    y_true, y_pred = _pair("(8, 3)", torch.float32, 6)
    assert mean_squared_error(y_true, y_pred).grad_fn is None
    leaf = y_pred.clone().requires_grad_(True)
    with torch.no_grad():
        assert mean_squared_error(y_true, leaf).grad_fn is None
    assert mean_squared_error(y_true, leaf).grad_fn is not None


def test_numpy_in_gives_numpy_out():
    rng = np.random.default_rng(7)
    y_true, y_pred = rng.standard_normal((8, 3)), rng.standard_normal((8, 3)).astype(np.float32)
    result = mean_squared_error(y_true, y_pred)
    assert type(result) is np.ndarray
    assert result.dtype == np.float32
    expected = keras.losses.mean_squared_error(torch.from_numpy(y_true), torch.from_numpy(y_pred))
    torch.testing.assert_close(torch.from_numpy(result), expected.cpu(), rtol=5 * _eps(torch.float32), atol=0)


@pytest.mark.parametrize(
    ("y_true", "y_pred"),
    [
        (np.arange(6.0).reshape(3, 2), torch.ones(3, 2)),  # float64 NumPy y_true: cast to float32
        (torch.ones(3, 2, dtype=torch.float64), [[0.5, 1.0], [2.0, 3.0], [4.0, -1.0]]),  # a list: float32
        (torch.ones(3, 2), torch.tensor([[0, 1], [2, 3], [4, -1]])),  # integer predictions: float32
        (torch.ones(3, 1), np.broadcast_to(np.float32(2.5), (3,))),  # read-only NumPy, ranks expanded
    ],
    ids=["numpy y_true", "list y_pred", "integer y_pred", "read-only y_pred"],
)
def test_a_tensor_on_either_side_gives_a_tensor(y_true, y_pred):
    ours = mean_squared_error(y_true, y_pred)
    theirs = keras.losses.mean_squared_error(y_true, y_pred).cpu()
    assert isinstance(ours, torch.Tensor)
    torch.testing.assert_close(ours, theirs)


def test_complex_tensors_are_refused():
    y_true, y_pred = _pair("(8, 3)", torch.float32, 8)
    with pytest.raises(TypeError, match="is a torch.complex64 tensor"):
        mean_squared_error(y_true.to(torch.complex64), y_pred.to(torch.complex64))


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_loss_class_matches_keras(reduction, weighted):
    y_true, y_pred = _pair("(8, 3)", torch.float32, 9)
    leaf = y_pred.clone().requires_grad_(True)
    kwargs = {}
    if weighted:
        kwargs["sample_weight"] = torch.rand(8, generator=torch.Generator().manual_seed(10))
    ours = compat.MeanSquaredError(reduction=reduction)
    theirs = keras.losses.MeanSquaredError(reduction=reduction)
    assert isinstance(ours, keras.losses.Loss)
    assert ours.get_config() == theirs.get_config()
    ours_value, theirs_value = ours(y_true, leaf, **kwargs), theirs(y_true, leaf, **kwargs)
    torch.testing.assert_close(ours_value, theirs_value.cpu(), rtol=1e-6, atol=1e-7)
    (our_grad,) = torch.autograd.grad(ours_value.sum(), leaf)
    (their_grad,) = torch.autograd.grad(theirs_value.sum(), leaf)
    torch.testing.assert_close(our_grad, their_grad.cpu(), rtol=1e-6, atol=1e-7)


def test_the_loss_class_takes_kerass_arguments_and_serializes():
    default = compat.MeanSquaredError()
    assert (default.name, default.reduction, default.dtype) == ("mean_squared_error", "sum_over_batch_size", "float32")
    wide = compat.MeanSquaredError("sum", "squares", "float64")
    y_true, y_pred = _pair("(8, 3)", torch.float64, 11)
    assert wide(y_true, y_pred).dtype == torch.float64
    config = keras.saving.serialize_keras_object(wide)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is compat.MeanSquaredError
    assert restored.get_config() == wide.get_config()
    from fastmse.compat.keras import MeanSquaredError

    assert MeanSquaredError is compat.MeanSquaredError
    with pytest.raises(AttributeError, match="no attribute 'MeanSquaredErrors'"):
        _ = compat.MeanSquaredErrors


def _small_model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])


def _weights(model):
    # Not model.get_weights(): its np.array(tensor) warns of __array__'s copy keyword here.
    return [v.value.detach().cpu().numpy().copy() for v in model.weights]


@pytest.mark.parametrize("loss_kind", ["function", "class"])
def test_training_gives_the_weights_kerass_loss_gives(loss_kind):
    """Four epochs of SGD on 256 samples with per-sample weights (so each loss's incoming
    gradient differs): the weights match those trained with Keras's "mse" within
    float32 rounding."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((256, 4)).astype(np.float32)
    y = rng.standard_normal((256, 3)).astype(np.float32)
    sample_weight = rng.uniform(0.5, 2.0, 256).astype(np.float32)
    keras.utils.set_random_seed(13)
    initial = _weights(_small_model())
    ours = mean_squared_error if loss_kind == "function" else compat.MeanSquaredError()
    trained, histories = [], []
    for loss_function in (ours, "mse"):
        model = _small_model()
        for variable, value in zip(model.weights, initial, strict=True):
            variable.assign(value)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss=loss_function)
        history = model.fit(x, y, sample_weight=sample_weight, epochs=4, batch_size=32, shuffle=False, verbose=0)
        trained.append(_weights(model))
        histories.append(history.history["loss"])
    for mine, theirs, start in zip(trained[0], trained[1], initial, strict=True):
        assert np.abs(theirs - start).max() > 1e-2  # the weights did move
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-5)
