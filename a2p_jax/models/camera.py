"""The crop's camera: crop pixels + depth <-> camera space, and the root
parameterisation of the regressor.

A crop is a virtual pinhole camera: the original camera (focal, princpt),
whose image is mapped to the crop by a 2D affine `A = [L | t]` (source
pixel -> crop pixel; `a2p_jax.data.augment.crop_affine`). A crop rotated by
theta (L = s R(theta)) has camera-space targets rotated about the optical
axis by the same theta (`augment.rotate_3d`), so the camera-space point X
is seen at

    crop_px = A( pi(Rz(theta)^T X) ),   pi(X) = f * X_xy / X_z + c

which is exact for any crop centre (without the Rz^T, exact only for crops
centred on the principal point). theta is read off the affine, so a
non-rotated crop (eval, inference) is the plain `A(pi(X))`.

`affine` must map the pixels of the camera `(focal, princpt)` in which X
lives: for a horizontally flipped example (3D mirrored, princpt flipped)
that is the crop affine *without* the image flip. An affine with a
reflection (det L < 0) is not a camera of the mirrored 3D and is not
supported (it needs the image width, which the affine does not carry).
"""

import jax.numpy as jnp

HAND_SIZE_M = 0.2    # reference hand extent for the depth scale
DEPTH_RANGE = 3.0    # z = z_ref * exp(t), t soft-clipped to (-3, 3): z_ref x [0.05, 20]
MIN_DEPTH_M = 1e-3   # projection guard for points at or behind the camera


def _split(affine_Bx2x3):
  lin = affine_Bx2x3[:, :, :2]
  t = affine_Bx2x3[:, :, 2]
  det = lin[:, 0, 0] * lin[:, 1, 1] - lin[:, 0, 1] * lin[:, 1, 0]
  norm = jnp.sqrt(lin[:, 0, 0] ** 2 + lin[:, 1, 0] ** 2)
  cos, sin = lin[:, 0, 0] / norm, lin[:, 1, 0] / norm
  return lin, t, det, cos, sin


def crop_det(affine_Bx2x3):
  """(B,) determinant of the affine's linear part (< 0: a reflection)."""
  return _split(affine_Bx2x3)[2]


def crop_scale(affine_Bx2x3):
  """(B,) pixel scale of the crop: crop px per source px."""
  return jnp.sqrt(jnp.abs(_split(affine_Bx2x3)[2]))


def backproject(uv_BxNx2, z_BxN, affine_Bx2x3, focal_Bx2, princpt_Bx2):
  """Crop pixels + camera depth (m) -> camera-space points (B, N, 3)."""
  lin, t, det, cos, sin = _split(affine_Bx2x3)
  d = uv_BxNx2 - t[:, None, :]
  # Source pixels: L^-1 (uv - t), the 2x2 inverse written out.
  px = (lin[:, 1, 1, None] * d[..., 0] - lin[:, 0, 1, None] * d[..., 1]) / det[:, None]
  py = (-lin[:, 1, 0, None] * d[..., 0] + lin[:, 0, 0, None] * d[..., 1]) / det[:, None]
  x = (px - princpt_Bx2[:, 0, None]) / focal_Bx2[:, 0, None] * z_BxN
  y = (py - princpt_Bx2[:, 1, None]) / focal_Bx2[:, 1, None] * z_BxN
  c, s = cos[:, None], sin[:, None]
  return jnp.stack([c * x - s * y, s * x + c * y, z_BxN], -1)


def project(points_BxNx3, affine_Bx2x3, focal_Bx2, princpt_Bx2):
  """Camera-space points (B, N, 3) m -> crop pixels (B, N, 2)."""
  lin, t, _, cos, sin = _split(affine_Bx2x3)
  c, s = cos[:, None], sin[:, None]
  x, y = points_BxNx3[..., 0], points_BxNx3[..., 1]
  z = jnp.maximum(points_BxNx3[..., 2], MIN_DEPTH_M)
  xo, yo = c * x + s * y, -s * x + c * y   # Rz^T X
  px = focal_Bx2[:, 0, None] * xo / z + princpt_Bx2[:, 0, None]
  py = focal_Bx2[:, 1, None] * yo / z + princpt_Bx2[:, 1, None]
  u = lin[:, 0, 0, None] * px + lin[:, 0, 1, None] * py + t[:, 0, None]
  v = lin[:, 1, 0, None] * px + lin[:, 1, 1, None] * py + t[:, 1, None]
  return jnp.stack([u, v], -1)


def reference_depth(affine_Bx2x3, focal_Bx2, input_hw):
  """(B,) z_ref = f_crop * HAND_SIZE_M / crop size: the depth at which a
  HAND_SIZE_M object spans the crop."""
  f_crop = jnp.sqrt(focal_Bx2[:, 0] * focal_Bx2[:, 1]) * crop_scale(affine_Bx2x3)
  return f_crop * HAND_SIZE_M / float(min(input_hw))


def decode_uvz(uvz_BxNx3, affine_Bx2x3, focal_Bx2, input_hw):
  """Raw regressor outputs -> (crop pixels (B, N, 2), depth m (B, N)).

  uv = crop centre + tanh(raw) * crop size (so anywhere from half a crop
  outside on either side; 0 -> the centre); z = z_ref * exp(t) with t
  soft-clipped to +-DEPTH_RANGE (0 -> z_ref)."""
  h, w = input_hw
  centre = jnp.asarray([[[(w - 1) / 2.0, (h - 1) / 2.0]]], uvz_BxNx3.dtype)
  uv = centre + jnp.tanh(uvz_BxNx3[..., :2]) * float(min(h, w))
  t = DEPTH_RANGE * jnp.tanh(uvz_BxNx3[..., 2] / DEPTH_RANGE)
  z = reference_depth(affine_Bx2x3, focal_Bx2, input_hw)[:, None] * jnp.exp(t)
  return uv, z


def root_from_crop(uvz_Bx2x3, affine_Bx2x3, focal_Bx2, princpt_Bx2, input_hw):
  """Raw (u, v, t) per hand -> each hand's root (wrist) in camera space
  (B, 2, 3) m; see `decode_uvz` and the module docstring."""
  uv, z = decode_uvz(uvz_Bx2x3, affine_Bx2x3, focal_Bx2, input_hw)
  return backproject(uv, z, affine_Bx2x3, focal_Bx2, princpt_Bx2)
