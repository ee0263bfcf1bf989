"""Predicted hands drawn over images: right hand red, left hand blue."""

import numpy as np
from PIL import Image, ImageDraw

from a2p_jax.data import augment
from a2p_jax.geometry.camera import project

COLORS = np.array([[255, 40, 40], [40, 90, 255]], np.uint8)  # right, left


def overlay_points(image: np.ndarray, verts_2xVx3: np.ndarray, focal, princpt, *,
                   affine=None) -> np.ndarray:
  """Both hands' camera-space points (2, V, 3) projected and drawn over a
  copy of the uint8 image (H, W, 3); `affine` (2, 3): the crop the image is
  of (source px -> image px), None for the source image. Points behind the
  camera or outside the image are skipped."""
  img = np.array(image, np.uint8)
  h, w = img.shape[:2]
  for k in range(2):
    v = np.asarray(verts_2xVx3[k], np.float64)
    ok = np.all(np.isfinite(v), -1) & (v[:, 2] > 0)
    uv = project(v[ok], focal, princpt)
    if affine is not None:
      uv = augment.apply_affine(np.asarray(affine, np.float64), uv)
    uv = np.round(uv).astype(np.int64)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    img[uv[inside, 1], uv[inside, 0]] = COLORS[k]
  return img


def save_overlay(image: np.ndarray, verts_2xVx3: np.ndarray, focal, princpt, path: str,
                 title: str) -> None:
  """`overlay_points` on the source image, with a title, written as PNG."""
  pil = Image.fromarray(overlay_points(image, verts_2xVx3, focal, princpt))
  ImageDraw.Draw(pil).text((4, 4), title, fill=(255, 255, 0))
  pil.save(path)
