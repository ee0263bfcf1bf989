"""Array helpers every layer of a2p_jax may use (imports nothing of the project)."""

from typing import Mapping, TypeVar

import numpy as np

T = TypeVar('T', np.ndarray, Mapping)


def pad_batch(x: T, size: int) -> T:
  """Pads the leading (batch) axis of an array, or of every array of a
  dict, to `size` with copies of the last row: one compiled shape for
  every batch (callers keep the first n rows of the outputs). A batch
  already `size` long or longer comes back as it is."""
  if isinstance(x, Mapping):
    return {k: pad_batch(v, size) for k, v in x.items()}
  x = np.asarray(x)
  n = len(x)
  if n == 0:
    raise ValueError('pad_batch: empty batch (nothing to repeat)')
  if n >= size:
    return x
  return np.concatenate([x, np.repeat(x[-1:], size - n, 0)])
