"""Rotation conversions on any leading batch shape, safe to differentiate at 0.

Conventions:
  * axis-angle: (..., 3), the rotation vector (unit axis times angle, radians).
  * rotation matrix: (..., 3, 3), acting on column vectors (x' = R @ x).
  * 6D: (..., 6), the first two ROWS of the matrix, [R00 R01 R02 R10 R11 R12]
    (pytorch3d's `matrix_to_rotation_6d` layout); decoding uses Gram-Schmidt on
    those rows (Zhou et al., CVPR 2019), so any 6 numbers with non-parallel
    halves give a rotation.
"""

import jax.numpy as jnp

# Below this squared angle the Taylor series is used: the closed forms divide
# by theta and would give NaN gradients at exactly zero.
_SMALL_ANGLE_SQ = 1e-6


def skew(v):
  """(..., 3) -> (..., 3, 3) cross-product matrix, skew(a) @ b == cross(a, b)."""
  x, y, z = v[..., 0], v[..., 1], v[..., 2]
  o = jnp.zeros_like(x)
  return jnp.stack([
      jnp.stack([o, -z, y], -1),
      jnp.stack([z, o, -x], -1),
      jnp.stack([-y, x, o], -1)], -2)


def axis_angle_to_matrix(aa):
  """Rodrigues' formula: (..., 3) -> (..., 3, 3); exact and smooth at 0."""
  aa = jnp.asarray(aa)
  theta_sq = jnp.sum(aa * aa, axis=-1)
  small = theta_sq < _SMALL_ANGLE_SQ
  # Double-where: the large-angle branch never sees a zero angle, so its
  # gradient stays finite where it is masked out.
  safe_sq = jnp.where(small, 1.0, theta_sq)
  theta = jnp.sqrt(safe_sq)
  a_large = jnp.sin(theta) / theta
  b_large = (1.0 - jnp.cos(theta)) / safe_sq
  a_small = 1.0 - theta_sq / 6.0 + theta_sq * theta_sq / 120.0
  b_small = 0.5 - theta_sq / 24.0 + theta_sq * theta_sq / 720.0
  a = jnp.where(small, a_small, a_large)[..., None, None]
  b = jnp.where(small, b_small, b_large)[..., None, None]
  k = skew(aa)
  eye = jnp.broadcast_to(jnp.eye(3, dtype=k.dtype), k.shape)
  return eye + a * k + b * (k @ k)


def matrix_to_quaternion(r):
  """(..., 3, 3) -> (..., 4) unit quaternion (w, x, y, z) with w >= 0.

  Branch-free Shepperd method: all four candidates are computed and the best
  conditioned one is picked, so the result is accurate for every rotation,
  including angles near pi.
  """
  r = jnp.asarray(r)
  m00, m01, m02 = r[..., 0, 0], r[..., 0, 1], r[..., 0, 2]
  m10, m11, m12 = r[..., 1, 0], r[..., 1, 1], r[..., 1, 2]
  m20, m21, m22 = r[..., 2, 0], r[..., 2, 1], r[..., 2, 2]
  diag4 = jnp.stack([
      1.0 + m00 + m11 + m22,
      1.0 + m00 - m11 - m22,
      1.0 - m00 + m11 - m22,
      1.0 - m00 - m11 + m22], -1)
  # Each candidate is (4 q_i^2, 4 q_i q_j...) for the pivot i.
  cands = jnp.stack([
      jnp.stack([diag4[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
      jnp.stack([m21 - m12, diag4[..., 1], m10 + m01, m02 + m20], -1),
      jnp.stack([m02 - m20, m10 + m01, diag4[..., 2], m12 + m21], -1),
      jnp.stack([m10 - m01, m02 + m20, m12 + m21, diag4[..., 3]], -1)], -2)
  best = jnp.argmax(diag4, axis=-1)
  pivot = jnp.take_along_axis(diag4, best[..., None], -1)
  q = jnp.take_along_axis(cands, best[..., None, None], -2)[..., 0, :]
  q = q / (2.0 * jnp.sqrt(jnp.maximum(pivot, 1e-12)))
  q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
  return jnp.where(q[..., :1] < 0, -q, q)


def quaternion_to_axis_angle(q):
  """(..., 4) quaternion (w, x, y, z) -> (..., 3) rotation vector, angle in [0, pi]."""
  q = jnp.asarray(q)
  q = jnp.where(q[..., :1] < 0, -q, q)
  w, v = q[..., 0], q[..., 1:]
  s_sq = jnp.sum(v * v, axis=-1)
  small = s_sq < _SMALL_ANGLE_SQ
  s = jnp.sqrt(jnp.where(small, 1.0, s_sq))
  # angle = 2 atan2(|v|, w); rotation vector = angle * v / |v|.
  scale_large = 2.0 * jnp.arctan2(s, w) / s
  # Series of 2 atan2(s, w) / s around s = 0 with w = sqrt(1 - s^2).
  scale_small = 2.0 / w * (1.0 - s_sq / (3.0 * w * w))
  scale = jnp.where(small, scale_small, scale_large)
  return v * scale[..., None]


def matrix_to_axis_angle(r):
  """(..., 3, 3) -> (..., 3) rotation vector with angle in [0, pi]."""
  return quaternion_to_axis_angle(matrix_to_quaternion(r))


def axis_angle_to_quaternion(aa):
  """(..., 3) -> (..., 4) unit quaternion (w, x, y, z)."""
  aa = jnp.asarray(aa)
  theta_sq = jnp.sum(aa * aa, axis=-1)
  small = theta_sq < _SMALL_ANGLE_SQ
  theta = jnp.sqrt(jnp.where(small, 1.0, theta_sq))
  half_sinc = jnp.where(small, 0.5 - theta_sq / 48.0,
                        jnp.sin(0.5 * theta) / theta)
  w = jnp.where(small, 1.0 - theta_sq / 8.0, jnp.cos(0.5 * theta))
  return jnp.concatenate([w[..., None], aa * half_sinc[..., None]], -1)


def rot6d_to_matrix(d6):
  """(..., 6) first two rows -> (..., 3, 3) via Gram-Schmidt."""
  d6 = jnp.asarray(d6)
  a1, a2 = d6[..., :3], d6[..., 3:]
  b1 = a1 / jnp.linalg.norm(a1, axis=-1, keepdims=True)
  a2 = a2 - jnp.sum(b1 * a2, -1, keepdims=True) * b1
  b2 = a2 / jnp.linalg.norm(a2, axis=-1, keepdims=True)
  b3 = jnp.cross(b1, b2)
  return jnp.stack([b1, b2, b3], axis=-2)


def matrix_to_rot6d(r):
  """(..., 3, 3) -> (..., 6), the first two rows flattened."""
  r = jnp.asarray(r)
  return r[..., :2, :].reshape(r.shape[:-2] + (6,))


# Reflection x -> -x (the YZ plane), the mirror between MANO's left and right
# hands: R -> M R M, which for a rotation vector is (a, b, c) -> (a, -b, -c).
_MIRROR_AA = (1.0, -1.0, -1.0)


def mirror_axis_angle(aa):
  """Mirror rotation vectors (..., 3k) across the YZ plane (left <-> right)."""
  aa = jnp.asarray(aa)
  if aa.shape[-1] % 3:
    raise ValueError(f'mirror_axis_angle: last dim must be a multiple of 3, '
                     f'got shape {aa.shape}')
  sign = jnp.tile(jnp.asarray(_MIRROR_AA, aa.dtype), aa.shape[-1] // 3)
  return aa * jnp.broadcast_to(sign, aa.shape)
