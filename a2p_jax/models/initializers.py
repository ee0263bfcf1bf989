"""Weight initialisers that construct models fast on CPU.

XLA compiles every eager random op once per shape (0.3-2 s each on a CPU
for threefry + erf_inv), which made an eagerly built ResNet-50 take tens of
seconds just to initialise. With a concrete key these draw with numpy from
a generator seeded by the key's bits (deterministic in the key, no
compilation); under tracing (`jit`, `eval_shape`) they use jax.random.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def _normal(key, shape, dtype, std):
  # A check, not try/except: the conversion error of a tracer costs time in
  # the size of the trace so far.
  if isinstance(key, jax.core.Tracer):
    return std * jax.random.normal(key, shape, dtype)
  bits = np.asarray(jax.random.key_data(key), np.uint64).ravel()
  rng = np.random.default_rng([int(b) for b in bits])
  return jnp.asarray(rng.standard_normal(shape, dtype=np.float32) * np.float32(std), dtype)


def normal(std: float):
  """N(0, std^2) (untruncated)."""
  def init(key, shape, dtype=jnp.float32):
    return _normal(key, shape, dtype, std)
  return init


def variance_scaling(scale: float, mode: str):
  """N(0, scale / fan) with fan = fan_in or fan_out of a (..., in, out)
  kernel (dense or HWIO conv); ('fan_out', 2.0) is torchvision's
  kaiming_normal_ for ResNet convs, ('fan_in', 1.0) LeCun."""
  if mode not in ('fan_in', 'fan_out'):
    raise ValueError(f'variance_scaling: mode must be fan_in or fan_out, got {mode!r}')

  def init(key, shape, dtype=jnp.float32):
    receptive = math.prod(shape[:-2])
    fan = receptive * (shape[-2] if mode == 'fan_in' else shape[-1])
    return _normal(key, shape, dtype, math.sqrt(scale / max(fan, 1)))
  return init
