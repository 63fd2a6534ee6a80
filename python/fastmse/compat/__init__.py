"""Drop-in replacements for the MSE functions people already call.

Change the import line, keep the call::

    from fastmse.compat.crysx import MSE_loss, MSE_loss_grad          # crysx_nn.loss
    from fastmse.compat.sklearn import mean_squared_error             # sklearn.metrics
    from fastmse.compat.keras import mean_squared_error               # keras.losses
    from fastmse.compat.torch import mse_loss                         # torch.nn.functional

Each module keeps the original's argument names, defaults, result types and dtypes and
its errors for bad input, and computes with fastmse's kernels (float64 accumulation, so
the results are as exact as the result dtype allows, or more exact than the original).
Importing them imports nothing of the packages they stand in for, but PyTorch where it
is installed (``compat.torch`` registers its operators then); Keras is imported by the
first use of ``compat.keras.MeanSquaredError``, a ``keras.losses.Loss``.
"""
