"""Collision guidance: gradient of A2P's collision loss with respect to the
normalized state, through MANO (mano_jax) and geometry.collision_loss."""

import jax
import jax.numpy as jnp
import numpy as np

from a2p_jax import geometry
from a2p_jax.diffusion import state as state_lib

# The loss in cm^2 (not m^2) so that guidance weights are O(1e-3..1).
LOSS_SCALE = 1e4


def collision_cm2(params, models, cfg):
  """Collision loss (...,) in cm^2 of camera-space parameters; cfg:
  config.collision (dist_threshold m, cos_threshold, rho m)."""
  vr, vl = state_lib.meshes(params, models)
  return LOSS_SCALE * geometry.collision_loss(
      vr, np.asarray(models[0].faces, np.int32), vl, np.asarray(models[1].faces, np.int32),
      dist_threshold=cfg.dist_threshold, cos_threshold=cfg.cos_threshold, rho=cfg.rho)


def make_guide_grad(stats, models, root_right, cfg):
  """z0 (B, DIM) normalized -> d sum_b L_b / d z0 (B, DIM)."""

  def loss(z0):
    params = state_lib.from_state(state_lib.denormalize(z0, stats), root_right)
    return jnp.sum(collision_cm2(params, models, cfg))

  return jax.grad(loss)


def penetrating(params, models, cfg, detector: str = 'collision'):
  """Penetration gate (...,) bool. 'collision': some vertex pair counted by
  the collision loss (within dist_threshold, opposing normals, behind the
  other surface: the paper's penetration test, ~10x cheaper); 'depth':
  geometry.penetrates on the sealed meshes (exact inside tests)."""
  if detector == 'collision':
    return collision_cm2(params, models, cfg) > 0
  if detector == 'depth':
    vr, vl = state_lib.meshes(params, models)
    return geometry.penetrates(vr, np.asarray(models[0].faces, np.int32), vl,
                               np.asarray(models[1].faces, np.int32))
  raise ValueError(f"detector must be 'collision' or 'depth', got {detector!r}")
