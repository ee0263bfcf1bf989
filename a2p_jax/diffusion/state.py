"""Two-hand MANO parameters <-> the diffusion state vector X (and back).

Parameters follow stage 1's output convention (a2p_jax/models/stage1.py):
  {'pose_6d' (..., 2, 16, 6) rot6d before hands_mean (mano_jax
   pose_repr='rot6d'), 'betas' (..., 2, 10), 'root_cam' (..., 2, 3) m, each
   hand's wrist joint in camera space}; hand 0 right, 1 left.

X (..., DIM) float32, in the right hand's root frame (R_r, its global
orientation; t_r, its wrist):
  [0:96]    right pose: global orientation (camera) + 15 finger rotations, 6D
  [96:106]  right betas
  [106:202] left pose: root rotation R_r^T R_l, then 15 finger rotations, 6D
  [202:212] left betas
  [212:215] left wrist relative to the right: R_r^T (t_l - t_r) (m)
The right wrist t_r is not part of X: it anchors the pair in the camera
(`from_state` takes it back). Rotations are canonicalised (Gram-Schmidt),
so params -> X -> params is exact for valid 6D rotations up to float
rounding; raw stage-1 6D comes back as the same rotations.
"""

from typing import Dict

import jax.numpy as jnp
import numpy as np

import mano_jax

NUM_JOINTS = 16
POSE_DIM = NUM_JOINTS * 6
HAND_DIM = POSE_DIM + 10
DIM = 2 * HAND_DIM + 3
# Tokens of X for the denoiser: (start, size): 16 right joints, right
# betas, 16 left joints, left betas, relative translation.
TOKENS = tuple([(6 * j, 6) for j in range(NUM_JOINTS)] + [(POSE_DIM, 10)]
               + [(HAND_DIM + 6 * j, 6) for j in range(NUM_JOINTS)] + [(HAND_DIM + POSE_DIM, 10)]
               + [(2 * HAND_DIM, 3)])
TOKEN_WIDTH = 10
MIN_STD = 1e-2
# Named parts of X, (start, stop) ranges; 'betas', 'fingers', 'roots' name both hands.
PARTS = {
    'right_root': ((0, 6),), 'right_fingers': ((6, POSE_DIM),),
    'right_betas': ((POSE_DIM, HAND_DIM),),
    'left_root': ((HAND_DIM, HAND_DIM + 6),),
    'left_fingers': ((HAND_DIM + 6, HAND_DIM + POSE_DIM),),
    'left_betas': ((HAND_DIM + POSE_DIM, 2 * HAND_DIM),),
    'rel_trans': ((2 * HAND_DIM, DIM),),
}
PARTS['betas'] = PARTS['right_betas'] + PARTS['left_betas']
PARTS['fingers'] = PARTS['right_fingers'] + PARTS['left_fingers']
PARTS['roots'] = PARTS['right_root'] + PARTS['left_root']


def _canon(d6):
  return mano_jax.matrix_to_rot6d(mano_jax.rot6d_to_matrix(d6))


def _matmul(a, b):
  # One flat batch axis: XLA:CPU in jax 0.10 mis-compiles batched matmuls
  # with several batch axes.
  batch = jnp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
  n = int(np.prod(batch, dtype=np.int64))
  a = jnp.broadcast_to(a, batch + a.shape[-2:]).reshape((n,) + a.shape[-2:])
  b = jnp.broadcast_to(b, batch + b.shape[-2:]).reshape((n,) + b.shape[-2:])
  return jnp.matmul(a, b).reshape(batch + (a.shape[-2], b.shape[-1]))


def to_state(params: Dict[str, jnp.ndarray]) -> jnp.ndarray:
  """Parameters (stage-1 convention) -> X (..., DIM), unnormalized."""
  pose = jnp.asarray(params['pose_6d'], jnp.float32)
  betas = jnp.asarray(params['betas'], jnp.float32)
  root = jnp.asarray(params['root_cam'], jnp.float32)
  rot_r = mano_jax.rot6d_to_matrix(pose[..., 0, 0, :])
  rot_l = mano_jax.rot6d_to_matrix(pose[..., 1, 0, :])
  rot_rt = jnp.swapaxes(rot_r, -1, -2)
  rel_rot = mano_jax.matrix_to_rot6d(_matmul(rot_rt, rot_l))
  rel_t = _matmul(rot_rt, (root[..., 1, :] - root[..., 0, :])[..., None])[..., 0]
  pose_c = _canon(pose)
  right = pose_c[..., 0, :, :]
  left = jnp.concatenate([rel_rot[..., None, :], pose_c[..., 1, 1:, :]], -2)
  flat = lambda p: p.reshape(p.shape[:-2] + (POSE_DIM,))
  return jnp.concatenate([flat(right), betas[..., 0, :], flat(left), betas[..., 1, :], rel_t],
                         -1)


def from_state(x: jnp.ndarray, root_right: jnp.ndarray) -> Dict[str, jnp.ndarray]:
  """X (..., DIM) unnormalized + the right wrist (..., 3) m -> parameters."""
  if x.shape[-1] != DIM:
    raise ValueError(f'from_state: X must have shape (..., {DIM}), got {x.shape}')
  shape = x.shape[:-1]
  right = _canon(x[..., :POSE_DIM].reshape(shape + (NUM_JOINTS, 6)))
  left = _canon(x[..., HAND_DIM:HAND_DIM + POSE_DIM].reshape(shape + (NUM_JOINTS, 6)))
  rot_r = mano_jax.rot6d_to_matrix(right[..., 0, :])
  rot_l = _matmul(rot_r, mano_jax.rot6d_to_matrix(left[..., 0, :]))
  left = jnp.concatenate([mano_jax.matrix_to_rot6d(rot_l)[..., None, :], left[..., 1:, :]], -2)
  rel_t = _matmul(rot_r, x[..., 2 * HAND_DIM:, None])[..., 0]
  root_right = jnp.broadcast_to(jnp.asarray(root_right, x.dtype), shape + (3,))
  return {'pose_6d': jnp.stack([right, left], -3),
          'betas': jnp.stack([x[..., POSE_DIM:HAND_DIM], x[..., HAND_DIM + POSE_DIM:2 * HAND_DIM]],
                             -2),
          'root_cam': jnp.stack([root_right, root_right + rel_t], -2)}


def part_mask(names) -> np.ndarray:
  """(DIM,) bool, True on the named parts of X (see PARTS); names: a
  sequence or a comma-separated string ('' -> nothing)."""
  if isinstance(names, str):
    names = [n.strip() for n in names.split(',') if n.strip()]
  mask = np.zeros(DIM, bool)
  for n in names:
    if n not in PARTS:
      raise ValueError(f'unknown part {n!r} of the diffusion state; expected one of '
                       f'{sorted(PARTS)}')
    for a, b in PARTS[n]:
      mask[a:b] = True
  return mask


def compute_stats(x: np.ndarray) -> Dict[str, np.ndarray]:
  """Normalization statistics {'mean', 'std'} (DIM,) of X (N, DIM); std
  floored at MIN_STD (near-constant 6D entries would blow up otherwise)."""
  x = np.asarray(x, np.float64).reshape(-1, DIM)
  if len(x) < 2 or not np.all(np.isfinite(x)):
    raise ValueError(f'compute_stats: need >= 2 finite rows, got {x.shape} '
                     f'({np.sum(~np.isfinite(x))} non-finite values)')
  return {'mean': x.mean(0).astype(np.float32),
          'std': np.maximum(x.std(0), MIN_STD).astype(np.float32)}


def normalize(x, stats):
  b = lambda v: jnp.broadcast_to(jnp.asarray(v, x.dtype), x.shape)
  return (x - b(stats['mean'])) / b(stats['std'])


def denormalize(z, stats):
  b = lambda v: jnp.broadcast_to(jnp.asarray(v, z.dtype), z.shape)
  return z * b(stats['std']) + b(stats['mean'])


def params_from_mano(mano: dict, models) -> Dict[str, np.ndarray]:
  """A reader example's camera-space fits {'right': {'pose' (48,) axis-angle,
  'shape', 'trans'}, 'left': ...} (both present) -> parameters, numpy."""
  pose, betas, root = [], [], []
  for k, side in enumerate(('right', 'left')):
    m = mano[side]
    aa = np.asarray(m['pose'], np.float32).reshape(NUM_JOINTS, 3)
    pose.append(np.asarray(mano_jax.matrix_to_rot6d(mano_jax.axis_angle_to_matrix(aa))))
    betas.append(np.asarray(m['shape'], np.float32))
    out = mano_jax.forward(models[k], np.asarray(m['pose'], np.float32),
                           betas[-1], np.asarray(m['trans'], np.float32))
    root.append(np.asarray(out.joints[0]))  # mano order: wrist first
  return {'pose_6d': np.stack(pose), 'betas': np.stack(betas), 'root_cam': np.stack(root)}


def faces(models):
  """(right, left) faces (F, 3) int32 of the hand models, for geometry."""
  return tuple(np.asarray(m.faces, np.int32) for m in models)


def meshes(params, models):
  """Camera-space vertices (..., V, 3) of (right, left), as
  a2p_jax.models.losses.mano_outputs places them (wrist at root_cam)."""
  out = []
  for k, model in enumerate(models):
    fw = mano_jax.forward(model, params['pose_6d'][..., k, :, :], params['betas'][..., k, :],
                          pose_repr='rot6d')
    out.append(fw.vertices - fw.joints[..., :1, :] + params['root_cam'][..., k, None, :])
  return tuple(out)


def joints(params, models):
  """Camera-space 21 joints (..., 2, 21, 3) (mano order), wrist at root_cam."""
  out = []
  for k, model in enumerate(models):
    fw = mano_jax.forward(model, params['pose_6d'][..., k, :, :], params['betas'][..., k, :],
                          pose_repr='rot6d')
    out.append(fw.joints - fw.joints[..., :1, :] + params['root_cam'][..., k, None, :])
  return jnp.stack(out, -3)
