"""Metric writing: TensorBoard event files (tensorboardX, no TensorFlow) and
console lines, from process 0 only."""

import os
from typing import Mapping

import jax
import numpy as np
from tensorboardX import SummaryWriter


class Writer:
  """Scalars and images to WORKDIR/tb and the console (process 0 only)."""

  def __init__(self, workdir: str, *, enabled: bool = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = None
    if self.enabled:
      self._tb = SummaryWriter(os.path.join(workdir, 'tb'), flush_secs=30)

  def scalars(self, step: int, values: Mapping[str, float], *, console: bool = True):
    if not self.enabled:
      return
    for k, v in values.items():
      self._tb.add_scalar(k, float(v), step)
    if console:
      body = ', '.join(f'{k}={float(v):.4g}' for k, v in sorted(values.items()))
      print(f'[{step}] {body}', flush=True)

  def images(self, step: int, images: Mapping[str, np.ndarray]):
    """uint8 (H, W, 3) pictures."""
    if not self.enabled:
      return
    for k, img in images.items():
      self._tb.add_image(k, np.asarray(img), step, dataformats='HWC')

  def flush(self):
    if self._tb is not None:
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()
