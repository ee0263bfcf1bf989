"""A2P's collision guidance loss between two hand meshes (differentiable)."""

import functools

import jax
import jax.numpy as jnp

from a2p_jax.geometry import normals as normals_lib
from a2p_jax.geometry import pairs

# A vertex must be this far (m) behind the other surface's tangent plane to
# count as inside; exact contact (0) and float noise stay contact.
CONTACT_EPS = 1e-6


def gmof(r_sq, rho):
  """Geman-McClure, scaled form: rho^2 r^2 / (r^2 + rho^2) (m^2 for r, rho in m).

  ~r^2 for r << rho, saturating at rho^2, so wrong far correspondences cannot
  dominate. Takes r^2 so no sqrt (no NaN gradient at r = 0).
  """
  rho_sq = rho * rho
  return rho_sq * r_sq / (r_sq + rho_sq)


def _sq_dists(p, q):
  # Coordinate-wise differences fuse into one pass with the argmin; the
  # |q|^2 - 2 p.q matmul form (contraction length 3) measured 3-4x slower on CPU.
  p = jax.lax.stop_gradient(p)
  q = jax.lax.stop_gradient(q)
  return ((p[:, None, 0] - q[None, :, 0]) ** 2 + (p[:, None, 1] - q[None, :, 1]) ** 2
          + (p[:, None, 2] - q[None, :, 2]) ** 2)


def nearest_vertex(p_Px3, q_Qx3):
  """Index (P,) int32 of the nearest q for each p (the first on ties); no
  gradient (a choice, not a value)."""
  return jnp.argmin(_sq_dists(p_Px3, q_Qx3), axis=1)


def nearest_both_ways(p_Px3, q_Qx3):
  """(nearest q for each p (P,), nearest p for each q (Q,)) int32 from one
  distance matrix; no gradient. (Measured, benchmarks/guidance_speed.py:
  as fast as two nearest_vertex calls for one pair, ~13% faster vmapped
  over 8; replacing argmin by plain min reductions was 1.3-3.5x slower.)"""
  sq = _sq_dists(p_Px3, q_Qx3)
  return jnp.argmin(sq, axis=1), jnp.argmin(sq, axis=0)


def _one_way(p, q, n_p, n_q, j, dist_threshold, cos_threshold, rho):
  """Loss from vertices p penetrating the surface sampled by q (normals n_q);
  j (P,): the nearest q of each p."""
  diff = p - q[j]  # recomputed exactly so the gradient is the true one
  r_sq = jnp.sum(diff * diff, -1)
  nq = n_q[j]
  cos = jnp.sum(n_p * nq, -1)
  behind = jnp.sum(diff * nq, -1) < -CONTACT_EPS
  hit = (r_sq < dist_threshold ** 2) & (cos < cos_threshold) & behind
  return jnp.sum(jnp.where(hit, gmof(r_sq, rho), 0.0))


def _pair(va, vb, faces_a, faces_b, dist_threshold, cos_threshold, rho):
  # Normals only select pairs, so they need no gradient; the orientation
  # factor makes inward-facing face lists behave like outward ones.
  na = normals_lib.vertex_normals(va, faces_a) * normals_lib.orientation(va, faces_a)
  nb = normals_lib.vertex_normals(vb, faces_b) * normals_lib.orientation(vb, faces_b)
  na, nb = jax.lax.stop_gradient(na), jax.lax.stop_gradient(nb)
  args = (dist_threshold, cos_threshold, rho)
  j_ab, j_ba = nearest_both_ways(va, vb)
  return _one_way(va, vb, na, nb, j_ab, *args) + _one_way(vb, va, nb, na, j_ba, *args)


def collision_loss(verts_a, faces_a, verts_b, faces_b, *, dist_threshold=0.02,
                   cos_threshold=0.0, rho=0.01):
  """A2P collision guidance loss (...,) in m^2, summed over both directions.

  verts_a (..., Va, 3), verts_b (..., Vb, 3) in m (leading dims broadcast);
  faces (F, 3) int. For each vertex of one hand take its nearest vertex on the
  other; the pair penetrates when (1) their distance is under
  `dist_threshold` (m; deeper "penetrations" are almost always wrong
  correspondences across a finger), (2) their normals oppose, cosine under
  `cos_threshold` (0: more than 90 degrees apart; aligned normals are sliding
  contact or a wrong match, left alone), and (3) the vertex lies behind the
  other vertex's tangent plane (inside; exact contact costs nothing).
  Penetrating pairs cost gmof(r^2, rho) with r their distance; rho = 1 cm
  keeps the gradient ~2r for the mm-scale penetrations that matter and bounds
  each pair's cost by rho^2. Gradients move both vertices of a pair toward
  each other, i.e. each out of the other hand.
  """
  return _collision_jit(verts_a, jnp.asarray(faces_a), verts_b, jnp.asarray(faces_b),
                        dist_threshold, cos_threshold, rho)


@jax.jit
def _collision_jit(verts_a, faces_a, verts_b, faces_b, dist_threshold, cos_threshold, rho):
  # Faces and thresholds are traced: one compilation per shape, not per value.
  fn = functools.partial(_pair, faces_a=faces_a, faces_b=faces_b,
                         dist_threshold=dist_threshold, cos_threshold=cos_threshold,
                         rho=rho)
  return pairs.map_pairs(fn, verts_a, verts_b)
