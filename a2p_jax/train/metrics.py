"""Metric writing: TensorBoard event files (tensorboardX, no TensorFlow) and
console lines, from process 0 only; pictures of predictions over inputs."""

import os
from typing import Mapping

import jax
import numpy as np

from a2p_jax.data import augment


class Writer:
  """Scalars and images to WORKDIR/tb and the console (process 0 only)."""

  def __init__(self, workdir: str, *, enabled: bool = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = None
    if self.enabled:
      from tensorboardX import SummaryWriter
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


def overlay(image: np.ndarray, points_cam: np.ndarray, hand_index: np.ndarray,
            affine: np.ndarray, focal: np.ndarray, princpt: np.ndarray) -> np.ndarray:
  """Predicted camera-space points (e.g. both hands' vertices) drawn over
  the uint8 input crop: right hand red, left hand blue. uint8 (H, W, 3)."""
  img = np.array(image, np.uint8)
  h, w = img.shape[:2]
  uv = augment.apply_affine(np.asarray(affine, np.float64),
                            augment.project(np.asarray(points_cam, np.float64), focal, princpt))
  colors = np.array([[255, 40, 40], [40, 90, 255]], np.uint8)
  ok = np.all(np.isfinite(uv), -1) & (points_cam[:, 2] > 0)
  uv = np.round(uv[ok]).astype(np.int64)
  col = colors[np.asarray(hand_index)[ok]]
  inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
  img[uv[inside, 1], uv[inside, 0]] = col[inside]
  return img
