"""Two-hand procedural-hand (NOT MANO) parameter pairs for the stage-2 tests."""

import jax
import numpy as np

import mano_jax
from a2p_jax import geometry
from a2p_jax.diffusion import guidance
from a2p_jax.diffusion import state as state_lib


def random_params(rng, n, *, finger_std=0.2):
  aa = rng.normal(0, finger_std, (n, 2, 16, 3)).astype(np.float32)
  aa[:, :, 0] = rng.normal(0, 1.0, (n, 2, 3))
  return {'pose_6d': np.asarray(mano_jax.matrix_to_rot6d(mano_jax.axis_angle_to_matrix(aa))),
          'betas': rng.normal(0, 0.8, (n, 2, 10)).astype(np.float32),
          'root_cam': np.tile(np.array([0.0, 0.0, 0.5], np.float32), (n, 2, 1))}


def placed(params, models, rng, distance_m):
  """The left hand moved so its centroid is `distance_m` (n,) from the
  right's along a random direction."""
  p = {k: np.array(v) for k, v in params.items()}
  vr, vl = state_lib.meshes(p, models)
  n = len(p['betas'])
  d = rng.normal(size=(n, 3))
  d /= np.linalg.norm(d, axis=-1, keepdims=True)
  shift = np.asarray(vr).mean(1) - np.asarray(vl).mean(1) + np.asarray(distance_m)[:, None] * d
  p['root_cam'][:, 1] += shift.astype(np.float32)
  return p


def boxes_overlapping(n):
  return np.tile(np.array([[0, 0, 10, 10], [5, 5, 15, 15]], np.float32), (n, 1, 1))


def boxes_apart(n):
  return np.tile(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), (n, 1, 1))


def touching(models, rng, n):
  """n pairs whose meshes touch without penetrating: the left hand moved
  along a random direction to the closest centroid distance (bisection to
  0.1 mm) at which the exact test finds no vertex inside the other mesh."""
  base = random_params(rng, n)
  vr, vl = state_lib.meshes(base, models)
  d = rng.normal(size=(n, 3))
  d /= np.linalg.norm(d, axis=-1, keepdims=True)
  centre = np.asarray(vr).mean(1) - np.asarray(vl).mean(1)

  def at(dist):
    p = {k: np.array(v) for k, v in base.items()}
    p['root_cam'][:, 1] += (centre + dist[:, None] * d).astype(np.float32)
    return p

  exact = jax.jit(lambda p: guidance.depth(p, models))

  def depth(p):
    return np.asarray(exact(p))

  lo, hi = np.zeros(n), np.full(n, 0.3)
  while np.max(hi - lo) > 1e-4:
    mid = (lo + hi) / 2
    inside = depth(at(mid)) > 0
    lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
  p = at(hi)
  assert np.all(depth(p) == 0)
  a, b = state_lib.meshes(p, models)
  gap = np.asarray(geometry.hand_gap(a, models[0].faces, b, models[1].faces))
  # In contact: the nearest vertices < 3 mm apart (the edges are ~3 mm long).
  assert np.all(gap < 0.003), gap
  return p
