"""Inside tests and point-to-triangle distances for closed triangle meshes.

The inside test casts one ray per query point and sums signed crossings (the
winding number of a closed, consistently oriented mesh): about 20 flops per
point-triangle pair, ~40x cheaper than solid-angle winding numbers on CPU.
Callers rotate into a generic frame first (GENERIC_ROTATION) so rays do not
graze the edges of axis-aligned meshes.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _generic_rotation():
  """A fixed rotation with no special angles (keeps rays off mesh edges)."""
  ax, ay, az = 0.5377, 1.8339, -2.2588
  cx, sx, cy, sy, cz, sz = (np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay),
                            np.cos(az), np.sin(az))
  rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
  ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
  return (rz @ ry @ rx).astype(np.float32)


GENERIC_ROTATION = _generic_rotation()


def ray_tables(tri_Fx3x3):
  """Per-triangle constants for `crossing_winding`: edge functions and plane.

  Returns (edge_a, edge_b, edge_c) each (F, 3) and (plane (F, 3), sign (F,)):
  edge k of the xy projection is a*x + b*y + c; the plane is z = p0*x + p1*y + p2;
  sign is +1 / -1 for a face whose normal points up / down, 0 if vertical.
  """
  x, y = tri_Fx3x3[..., 0], tri_Fx3x3[..., 1]
  x1, y1 = jnp.roll(x, -1, -1), jnp.roll(y, -1, -1)
  a, b = y - y1, x1 - x
  c = -(a * x + b * y)
  n = jnp.cross(tri_Fx3x3[:, 1] - tri_Fx3x3[:, 0], tri_Fx3x3[:, 2] - tri_Fx3x3[:, 0])
  nz = n[:, 2]
  safe = jnp.where(nz == 0, 1.0, nz)
  p0, p1 = -n[:, 0] / safe, -n[:, 1] / safe
  p2 = tri_Fx3x3[:, 0, 2] - p0 * tri_Fx3x3[:, 0, 0] - p1 * tri_Fx3x3[:, 0, 1]
  return (a, b, c), (jnp.stack([p0, p1, p2], -1), jnp.sign(nz))


# Points per block in crossing_winding: keeps the (block, F) intermediate in
# cache; one (P, F) array is ~25 MB for hand meshes and runs 2-3x slower.
_BLOCK = 256


def crossing_winding(points_Px3, tables):
  """Winding number (P,) of each point: signed crossings of a +z ray.

  For a closed mesh with outward faces: 1 inside, 0 outside (2+ where the
  mesh overlaps itself). `tables` from `ray_tables`.
  """
  num = points_Px3.shape[0]
  if num <= _BLOCK:
    return _winding_block(points_Px3, tables)
  pad = -num % _BLOCK
  padded = jnp.concatenate([points_Px3, jnp.zeros((pad, 3), points_Px3.dtype)])
  out = jax.lax.map(lambda p: _winding_block(p, tables), padded.reshape(-1, _BLOCK, 3))
  return out.reshape(-1)[:num]


def _winding_block(points_Px3, tables):
  (a, b, c), (plane, _) = tables
  px, py, pz = points_Px3[:, 0:1], points_Px3[:, 1:2], points_Px3[:, 2:3]
  e0 = a[None, :, 0] * px + b[None, :, 0] * py + c[None, :, 0]
  e1 = a[None, :, 1] * px + b[None, :, 1] * py + c[None, :, 1]
  e2 = a[None, :, 2] * px + b[None, :, 2] * py + c[None, :, 2]
  lo = jnp.minimum(jnp.minimum(e0, e1), e2)
  hi = jnp.maximum(jnp.maximum(e0, e1), e2)
  # CCW in xy (all edge functions > 0) means the face looks up: leaving it
  # upward exits the solid, so the point counts as inside (+1).
  vote = (lo > 0).astype(jnp.float32) - (hi < 0).astype(jnp.float32)
  above = plane[None, :, 0] * px + plane[None, :, 1] * py + plane[None, :, 2] > pz
  return jnp.sum(jnp.where(above, vote, 0.0), axis=-1)


def point_triangle_sqdist(p, a, b, c):
  """Squared distance from points p to triangles (a, b, c); all (..., 3), broadcast.

  Branch-free version of Ericson's closest-point-on-triangle (Real-Time
  Collision Detection, 5.1.5); denominators guarded for degenerate faces.
  """
  def dot(u, v):
    return jnp.sum(u * v, -1)

  def div(n, d):
    return n / jnp.where(d == 0, 1.0, d)

  ab, ac, ap, bp, cp = b - a, c - a, p - a, p - b, p - c
  d1, d2, d3, d4, d5, d6 = dot(ab, ap), dot(ac, ap), dot(ab, bp), dot(ac, bp), dot(ab, cp), dot(ac, cp)
  va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
  denom = va + vb + vc
  v_in, w_in = div(vb, denom), div(vc, denom)
  q = a + ab * v_in[..., None] + ac * w_in[..., None]  # face interior
  w_bc = div(d4 - d3, (d4 - d3) + (d5 - d6))
  q = jnp.where(((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0))[..., None], b + (c - b) * w_bc[..., None], q)
  w_ac = div(d2, d2 - d6)
  q = jnp.where(((vb <= 0) & (d2 >= 0) & (d6 <= 0))[..., None], a + ac * w_ac[..., None], q)
  q = jnp.where(((d6 >= 0) & (d5 <= d6))[..., None], c, q)
  v_ab = div(d1, d1 - d3)
  q = jnp.where(((vc <= 0) & (d1 >= 0) & (d3 <= 0))[..., None], a + ab * v_ab[..., None], q)
  q = jnp.where(((d3 >= 0) & (d4 <= d3))[..., None], b, q)
  q = jnp.where(((d1 <= 0) & (d2 <= 0))[..., None], a, q)
  diff = p - q
  return dot(diff, diff)
