r"""Bits per dimension of discrete images under a score model (probability-flow ODE).

Derivation (any affine normalisation ``x = a v + b`` of pixel values ``v in {0..L-1}``):

* Dequantise: ``y = v + u - 1/2`` with ``u ~ U[0, 1)^D``, so each pixel's bin is the unit
  interval centred on it, and map with the model's own normalisation ``x = a y + b``
  (the centre of the bin is exactly the training point ``a v + b``).
* The model's density on ``y`` is ``p_Y(y) = p_X(a y + b) |a|^D`` (change of variables).
* The discrete model ``P(v) = ∫_{bin(v)} p_Y(y) dy = E_u[p_Y(v + u - 1/2)] >=
  exp E_u[log p_Y]`` (Jensen), so one draw of ``u`` gives an unbiased estimate of an
  upper bound on ``-log2 P(v)``:

  ``bits/dim = -(log p_X(x) + D log|a|) / (D ln 2)``.

For MNIST (``a = 2/255``, ``b = -1``, D = 784) this is
``-log p_X(x) / (D ln 2) - log2(2/255) = -log p_X(x) / (D ln 2) + 6.9944``. It equals the
usual "[0, 1] data, +8" form: with ``z = y / 256`` in [0, 1),
``log p_Z(z) = log p_X(x) + D log(256 a)`` and ``-log p_Z / (D ln 2) + 8`` is the same
number. (The literature's ``x = 2 (v + u) / 256 - 1`` is the special case ``a = 2/256``,
off-centre by half a bin; a model trained with ``2 v / 255 - 1`` should be scored with
its own map, as here.) ``log p_X`` comes from :func:`molfuse.log_likelihood` and is
itself an estimate (ODE discretisation; Hutchinson noise if chosen).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from ...density import log_likelihood
from ...errors import NonFiniteError
from ...schedules import Schedule
from .data import MNIST_NORMALISATION

__all__ = ["bits_per_dim", "bpd_offset"]


def bpd_offset(normalisation: Mapping[str, float]) -> float:
    """The additive term ``-log2|a|`` in ``bpd = -log p_X / (D ln 2) + offset`` (6.9944 for MNIST)."""
    return -math.log(abs(float(normalisation["scale"]))) / math.log(2.0)


def bits_per_dim(model: Any, images: np.ndarray | torch.Tensor, schedule: Schedule, steps: int = 100,
                 divergence: str = "hutchinson", generator: torch.Generator | None = None, dequantize: bool = True,
                 normalisation: Mapping[str, float] | None = None, cond: Any = None,
                 batch_size: int = 250, t_start: float = 1e-5, rho: float = 1.0) -> pd.DataFrame:
    """Bits/dim of pixel images under ``model``, one row per image (module doc: derivation).

    Args:
        model: a score model taking (batch, 1, H, W) in model space.
        images: integer pixel values (n, H, W) or (n, 1, H, W) (uint8 for MNIST).
        schedule: the model's noising convention.
        steps, divergence, t_start, rho: passed to :func:`molfuse.log_likelihood`.
        generator: draws the dequantisation noise and the Hutchinson probes.
        dequantize: add ``u - 1/2``, ``u ~ U[0, 1)`` (a bound on the discrete NLL). With
            False the density is read at the bin centres: not a bound, for diagnostics.
        normalisation: ``{"scale": a, "shift": b}`` the model was trained with (default:
            ``model.normalisation`` as set by :func:`molfuse.checkpoints.load_model`, else
            the MNIST one).
        cond: condition for the model, a (n,) tensor (split with the batches) or anything
            else passed as is.

    Returns:
        DataFrame with ``id, bits_per_dim, log_p_model_nats`` (``log p_X`` in model space),
        ``dequantized, valid, reason``.
    """
    normalisation = normalisation or getattr(model, "normalisation", None) or MNIST_NORMALISATION
    v = torch.as_tensor(np.asarray(images)).to(torch.float64)
    v = v[:, None] if v.dim() == 3 else v
    a, b = float(normalisation["scale"]), float(normalisation["shift"])
    n, d = v.shape[0], v[0].numel()
    logp = np.full(n, np.nan)
    reason = np.full(n, "", dtype=object)
    for i in range(0, n, batch_size):
        vb = v[i:i + batch_size]
        if dequantize:
            gdev = generator.device if generator is not None else "cpu"
            vb = vb + torch.rand(vb.shape, generator=generator, device=gdev, dtype=torch.float64).cpu() - 0.5
        x = (a * vb + b).to(torch.get_default_dtype())
        cb = cond[i:i + batch_size] if isinstance(cond, torch.Tensor) and cond.dim() > 0 else cond
        try:
            lp = log_likelihood(model, x, schedule, steps=steps, divergence=divergence, cond=cb,
                                generator=generator, t_start=t_start, rho=rho)
            logp[i:i + len(vb)] = lp.cpu().numpy()
        except NonFiniteError as e:  # the batch's rows stay NaN, with the model and t named
            reason[i:i + len(vb)] = str(e)
    ok = np.isfinite(logp)
    bpd = -logp / (d * math.log(2.0)) + bpd_offset(normalisation)
    return pd.DataFrame({
        "id": np.arange(n), "bits_per_dim": np.where(ok, bpd, np.nan), "log_p_model_nats": logp,
        "dequantized": dequantize, "valid": ok,
        "reason": np.where(ok, "", np.where(reason != "", reason, "non-finite log-likelihood")),
    })
