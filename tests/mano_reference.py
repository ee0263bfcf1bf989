"""An independent float64 numpy MANO, written the textbook way for tests.

One sample at a time, 4x4 homogeneous transforms composed joint by joint,
scipy's Rotation for conversions: a different path from mano_jax.lbs (which
batches the kinematic tree by depth and never forms 4x4 products).
"""

import numpy as np
from scipy.spatial.transform import Rotation


def gram_schmidt_rows(d6):
  a1, a2 = d6[:3], d6[3:]
  b1 = a1 / np.linalg.norm(a1)
  a2 = a2 - (b1 @ a2) * b1
  b2 = a2 / np.linalg.norm(a2)
  return np.stack([b1, b2, np.cross(b1, b2)])


def rotations(model, pose, pose_repr, flat_hand_mean):
  mean = np.asarray(model.hands_mean, np.float64)
  nj = len(model.parents)
  pose = np.asarray(pose, np.float64)
  if pose_repr in ('axis_angle', 'pca'):
    if pose_repr == 'pca':
      n = pose.shape[0] - 3
      hand = pose[3:] @ np.asarray(model.hands_components, np.float64)[:n]
      aa = np.concatenate([pose[:3], hand])
    else:
      aa = pose.copy()
    if not flat_hand_mean:
      aa[3:] += mean
    return Rotation.from_rotvec(aa.reshape(nj, 3)).as_matrix()
  if pose_repr == 'rotmat':
    rot = pose.reshape(nj, 3, 3)
  else:
    rot = np.stack([gram_schmidt_rows(r) for r in pose.reshape(nj, 6)])
  if flat_hand_mean:
    return rot
  hand = Rotation.from_matrix(rot[1:]).as_rotvec().ravel() + mean
  return np.concatenate([rot[:1], Rotation.from_rotvec(hand.reshape(-1, 3)).as_matrix()])


def forward(model, pose, betas, transl, pose_repr='axis_angle',
            flat_hand_mean=False):
  """One hand: returns vertices (V, 3), joints (21, 3) in MANO order, G (J, 4, 4)."""
  f64 = lambda x: np.asarray(x, np.float64)
  rot = rotations(model, pose, pose_repr, flat_hand_mean)
  nb = len(betas)
  v_shaped = f64(model.v_template) + f64(model.shapedirs)[:, :, :nb] @ f64(betas)
  j = f64(model.J_regressor) @ v_shaped
  feat = (rot[1:] - np.eye(3)).ravel()
  v_posed = v_shaped + f64(model.posedirs) @ feat
  nj = len(model.parents)
  g = np.zeros((nj, 4, 4))
  for k, p in enumerate(model.parents):
    local = np.eye(4)
    local[:3, :3] = rot[k]
    local[:3, 3] = j[k] - (j[p] if p >= 0 else 0.0)
    g[k] = local if p < 0 else g[p] @ local
  a = np.zeros_like(g)
  for k in range(nj):
    rest = np.eye(4)
    rest[:3, 3] = -j[k]
    a[k] = g[k] @ rest
  t = np.einsum('vk,kab->vab', f64(model.weights), a)
  vh = np.concatenate([v_posed, np.ones((len(v_posed), 1))], 1)
  verts = np.einsum('vab,vb->va', t, vh)[:, :3] + f64(transl)
  g[:, :3, 3] += f64(transl)
  joints = np.concatenate([g[:, :3, 3], verts[list(model.tip_ids)]])
  return verts, joints, g
