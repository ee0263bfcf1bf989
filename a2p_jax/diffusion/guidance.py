"""Collision guidance: gradient of A2P's collision loss with respect to the
normalized state, through MANO (mano_jax) and geometry.collision_loss."""

import jax
import jax.numpy as jnp

from a2p_jax import geometry
from a2p_jax.geometry import collision as coll
from a2p_jax.geometry import normals as normals_lib
from a2p_jax.geometry import pairs as pairs_mod
from a2p_jax.diffusion import state as state_lib

# The loss in cm^2 (not m^2) so that guidance weights are O(1e-3..1).
LOSS_SCALE = 1e4


def collision_cm2(params, models, cfg):
  """Collision loss (...,) in cm^2 of camera-space parameters; cfg:
  config.collision (dist_threshold m, cos_threshold, rho m)."""
  vr, vl = state_lib.meshes(params, models)
  fr, fl = state_lib.faces(models)
  return LOSS_SCALE * geometry.collision_loss(
      vr, fr, vl, fl, dist_threshold=cfg.dist_threshold, cos_threshold=cfg.cos_threshold,
      rho=cfg.rho)


def make_guide_grad(stats, models, root_right, cfg):
  """z0 (B, DIM) normalized -> d sum_b L_b / d z0 (B, DIM)."""

  def loss(z0):
    params = state_lib.from_state(state_lib.denormalize(z0, stats), root_right)
    return jnp.sum(collision_cm2(params, models, cfg))

  return jax.grad(loss)


def proxy_depth(params, models, cfg):
  """Deepest vertex (...,) in m behind the other hand's surface among the
  pairs the collision loss counts (nearest vertex within dist_threshold,
  opposing normals): a cheap penetration depth, no sealing or ray tests."""
  vr, vl = state_lib.meshes(params, models)
  fr, fl = state_lib.faces(models)

  def one_way(p, q, n_p, n_q, j):
    diff = p - q[j]
    r_sq = jnp.sum(diff * diff, -1)
    behind = -jnp.sum(diff * n_q[j], -1)
    hit = (r_sq < cfg.dist_threshold ** 2) & (jnp.sum(n_p * n_q[j], -1) < cfg.cos_threshold)
    return jnp.max(jnp.where(hit, behind, 0.0))

  def pair(a, b):
    na = normals_lib.vertex_normals(a, fr) * normals_lib.orientation(a, fr)
    nb = normals_lib.vertex_normals(b, fl) * normals_lib.orientation(b, fl)
    j_ab, j_ba = coll.nearest_both_ways(a, b)
    return jnp.maximum(one_way(a, b, na, nb, j_ab), one_way(b, a, nb, na, j_ba))

  return jax.lax.stop_gradient(pairs_mod.map_pairs(pair, vr, vl))


def depth(params, models):
  """Penetration depth (...,) in m of camera-space parameters: the deepest
  vertex of either hand inside the other's sealed mesh (exact inside tests,
  geometry.penetration_depth); 0 when the hands do not penetrate."""
  vr, vl = state_lib.meshes(params, models)
  fr, fl = state_lib.faces(models)
  return geometry.penetration_depth(vr, fr, vl, fl)


def penetrating(params, models, cfg, detector: str = 'collision', min_depth: float = 0.0):
  """Penetration gate (...,) bool: some vertex more than min_depth (m) inside
  the other hand. 'collision': among the collision loss's pairs (nearest
  vertex within dist_threshold, opposing normals, behind the other's tangent
  plane: the paper's test, ~10x cheaper); 'depth': geometry.penetration_depth
  on the sealed meshes (exact inside tests)."""
  if detector == 'collision':
    return proxy_depth(params, models, cfg) > max(min_depth, 1e-6)
  if detector == 'depth':
    return depth(params, models) > min_depth
  raise ValueError(f"detector must be 'collision' or 'depth', got {detector!r}")
