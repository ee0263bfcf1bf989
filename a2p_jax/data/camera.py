"""Camera geometry of the data readers, in float64 numpy (no jax in workers).

Conventions (InterHand2.6M / OpenCV): camera x right, y down, z forward;
a world point X (mm) is X_cam = camrot @ (X - campos) (mm); a camera point
projects to u = fx x / z + px, v = fy y / z + py (pixels,
`a2p_jax.geometry.camera.project`). Rotations act on column vectors;
axis-angle vectors are radians.

MANO fits (InterHand2.6M's NeuralAnnot) are world space with trans in metres.
MANO's global orient turns the hand about the shape's rest wrist joint j0,
not the origin: vertices = R_go (x - j0) + j0 + trans. So moving a fit into
camera space is R' = R_cam R_go and trans' = R_cam (j0 + trans - campos) - j0
(`mano_fit_to_camera`).
"""

from typing import Optional

import numpy as np

# Orthonormality tolerance for camrot: InterHand2.6M's matrices are printed
# with ~7 significant digits, so |R R^T - I| is ~1e-6 on real files.
ROTATION_TOL = 1e-4


def world_to_camera(points_mm, campos_mm, camrot):
  """(..., 3) world mm -> (..., 3) camera mm: camrot @ (x - campos)."""
  points = np.asarray(points_mm, np.float64)
  return (points - np.asarray(campos_mm, np.float64)) @ np.asarray(camrot, np.float64).T


def camera_to_world(points_cam_mm, campos_mm, camrot):
  """(..., 3) camera mm -> (..., 3) world mm: camrot^T @ x + campos."""
  points = np.asarray(points_cam_mm, np.float64)
  rot = np.asarray(camrot, np.float64)
  return np.einsum('ji,...j->...i', rot, points) + np.asarray(campos_mm, np.float64)


def rotation_error(rot) -> float:
  """max |R R^T - I| of a (3, 3) matrix, +inf when det(R) <= 0 or not finite."""
  rot = np.asarray(rot, np.float64)
  if rot.shape != (3, 3) or not np.all(np.isfinite(rot)) or np.linalg.det(rot) <= 0:
    return float('inf')
  return float(np.max(np.abs(rot @ rot.T - np.eye(3))))


def nearest_rotation(rot):
  """(..., 3, 3) -> closest proper rotation (SVD projection)."""
  u, _, vt = np.linalg.svd(np.asarray(rot, np.float64))
  d = np.sign(np.linalg.det(u @ vt))
  u[..., :, 2] *= d[..., None]
  return u @ vt


def axis_angle_to_matrix(aa):
  """(..., 3) rotation vector (rad) -> (..., 3, 3), Rodrigues in float64."""
  aa = np.asarray(aa, np.float64)
  theta = np.linalg.norm(aa, axis=-1)[..., None, None]
  x, y, z = aa[..., 0], aa[..., 1], aa[..., 2]
  o = np.zeros_like(x)
  k = np.stack([np.stack([o, -z, y], -1), np.stack([z, o, -x], -1),
                np.stack([-y, x, o], -1)], -2)
  small = theta < 1e-8
  safe = np.where(small, 1.0, theta)
  # Taylor terms below 1e-8 rad: the closed forms divide by theta.
  a = np.where(small, 1.0 - theta ** 2 / 6.0, np.sin(safe) / safe)
  b = np.where(small, 0.5 - theta ** 2 / 24.0, (1.0 - np.cos(safe)) / safe ** 2)
  return np.eye(3) + a * k + b * (k @ k)


def matrix_to_axis_angle(rot):
  """(..., 3, 3) rotation -> (..., 3) rotation vector, angle in [0, pi].

  Through the quaternion (Shepperd's pivot), which stays accurate near pi
  where the log-map formula loses all digits.
  """
  r = np.asarray(rot, np.float64)
  m = lambda i, j: r[..., i, j]
  diag4 = np.stack([1 + m(0, 0) + m(1, 1) + m(2, 2), 1 + m(0, 0) - m(1, 1) - m(2, 2),
                    1 - m(0, 0) + m(1, 1) - m(2, 2), 1 - m(0, 0) - m(1, 1) + m(2, 2)], -1)
  cands = np.stack([
      np.stack([diag4[..., 0], m(2, 1) - m(1, 2), m(0, 2) - m(2, 0), m(1, 0) - m(0, 1)], -1),
      np.stack([m(2, 1) - m(1, 2), diag4[..., 1], m(1, 0) + m(0, 1), m(0, 2) + m(2, 0)], -1),
      np.stack([m(0, 2) - m(2, 0), m(1, 0) + m(0, 1), diag4[..., 2], m(1, 2) + m(2, 1)], -1),
      np.stack([m(1, 0) - m(0, 1), m(0, 2) + m(2, 0), m(1, 2) + m(2, 1), diag4[..., 3]], -1)],
      -2)
  best = np.argmax(diag4, axis=-1)
  q = np.take_along_axis(cands, best[..., None, None], -2)[..., 0, :]
  q = q / np.linalg.norm(q, axis=-1, keepdims=True)
  q = np.where(q[..., :1] < 0, -q, q)
  w, v = q[..., 0], q[..., 1:]
  s = np.linalg.norm(v, axis=-1)
  angle = 2.0 * np.arctan2(s, w)
  # angle / sin(angle / 2) -> 2 as s -> 0.
  scale = np.where(s < 1e-12, 2.0, angle / np.where(s < 1e-12, 1.0, s))
  return v * scale[..., None]


def root_joint(model, shape):
  """Rest wrist joint j0 (..., 3) m of `shape` (..., B): the centre of global orient."""
  shape = np.asarray(shape, np.float64)
  j_template = np.asarray(model.J_template, np.float64)[0]
  j_dirs = np.asarray(model.J_shapedirs, np.float64)[0, :, :shape.shape[-1]]
  return j_template + np.einsum('cb,...b->...c', j_dirs, shape)


def mano_fit_to_camera(pose, trans_m, root_joint_m, campos_mm, camrot):
  """A world-space MANO fit -> the same hand in camera space.

  pose (48,) axis-angle (rad; only the global orient pose[:3] changes);
  trans_m (3,) m; root_joint_m (3,) the shape's rest wrist joint
  (`root_joint`); campos_mm (3,); camrot (3, 3). Returns (pose', trans')
  such that MANO(pose', shape, trans') == camrot @ (MANO(pose, shape, trans)
  - campos / 1000) for vertices and joints. camrot is projected onto the
  nearest rotation first, so pose' is a true rotation vector.
  """
  pose = np.array(pose, np.float64)
  trans = np.asarray(trans_m, np.float64)
  j0 = np.asarray(root_joint_m, np.float64)
  rot = np.asarray(camrot, np.float64)
  rot_go = axis_angle_to_matrix(pose[:3])
  pose[:3] = matrix_to_axis_angle(nearest_rotation(rot) @ rot_go)
  trans_cam = rot @ (j0 + trans - np.asarray(campos_mm, np.float64) / 1000.0) - j0
  return pose, trans_cam


def bbox_of_points(uv, valid: Optional[np.ndarray] = None):
  """(N, 2) pixels -> [x, y, w, h] tight box of the valid points, None if none."""
  uv = np.asarray(uv, np.float64).reshape(-1, 2)
  if valid is not None:
    uv = uv[np.asarray(valid).reshape(-1) > 0]
  uv = uv[np.all(np.isfinite(uv), axis=-1)]
  if len(uv) == 0:
    return None
  lo, hi = uv.min(0), uv.max(0)
  return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
