"""Penetration metrics between two hand meshes: volume (PenVol), depth
(PenDist), detection and proximity. Metres and m^3; not meant for gradients
(use collision_loss).

Volume method. Both meshes are sealed, then
  vol(A n B) = sum over faces f of A of cone_f * phi_f  +  same for B,
where cone_f is the signed volume of the tetrahedron (origin, f) and phi_f
the share of f's area inside the other mesh (divergence theorem on the
boundary of A n B, made of the parts of each surface inside the other).
phi is 0/1 from the vertices' inside tests except on the faces that may cross
the other surface (mixed vertex tests first, then the faces closest to the
other mesh), which are refined with subdiv^2 sample points each. Inside tests
are signed ray crossings, exact for closed meshes. The result is exactly 0
when no sample of either mesh is inside the other.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from a2p_jax.geometry import inside
from a2p_jax.geometry import nearest as nearest_lib
from a2p_jax.geometry import normals as normals_lib
from a2p_jax.geometry import pairs
from a2p_jax.geometry import seal as seal_lib

# Cap rings for the metrics: same surface as the centroid fan, but the wrist
# cap's triangles come out hand-sized, so few faces cross the other hand
# without one of their vertices inside it.
_METRIC_RINGS = 4
# Inside vertices whose exact surface distance is computed for the depth.
_DEPTH_CANDIDATES = 32


def subtriangle_centroids(m):
  """Barycentric centroids (m*m, 3) of the m*m equal sub-triangles of a triangle."""
  uv = []
  for i in range(m):
    for j in range(m - i):
      uv.append(((i + 1 / 3) / m, (j + 1 / 3) / m))
      if i + j <= m - 2:
        uv.append(((i + 2 / 3) / m, (j + 2 / 3) / m))
  uv = np.asarray(uv, np.float32)
  return np.stack([1 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], 1)


def _nearest_dist(p, q, fp, fq):
  """Distance (P,) from each p to its nearest q, and (Q,) the other way."""
  j_pq, j_qp = nearest_lib.nearest_both_ways(p, q, faces_p=fp, faces_q=fq)

  def dist(a, b):
    diff = a - b
    return jnp.sqrt(jnp.sum(diff * diff, -1) + 1e-30)

  return dist(p, q[j_pq]), dist(q, p[j_qp])


def _classify(va, fa, vb, fb):
  """Common first pass on sealed meshes, in a centred generic frame."""
  lo = jnp.maximum(va.min(0), vb.min(0))
  hi = jnp.minimum(va.max(0), vb.max(0))
  overlap = jnp.all(hi >= lo)
  centre = jax.lax.stop_gradient((lo + hi) / 2)
  rot = jnp.asarray(inside.GENERIC_ROTATION, va.dtype)
  pa, pb = (va - centre[None]) @ rot.T, (vb - centre[None]) @ rot.T
  sa, sb = normals_lib.orientation(pa, fa), normals_lib.orientation(pb, fb)
  tri_a, tri_b = pa[fa], pb[fb]
  # Outside the other's box nothing can be inside: gate on the box overlap so
  # separated meshes give exact zeros whatever the ray tests say.
  a_in_b = overlap & (inside.winding(pa, tri_b) * sb > 0.5)
  b_in_a = overlap & (inside.winding(pb, tri_a) * sa > 0.5)
  d_a, d_b = _nearest_dist(pa, pb, fa, fb)
  return dict(pa=pa, pb=pb, sa=sa, sb=sb, tri_a=tri_a, tri_b=tri_b, a_in_b=a_in_b,
              b_in_a=b_in_a, d_a=d_a, d_b=d_b, overlap=overlap)


def _side_volume(p, f, s_p, v_in, d_v, tri_q, s_q, origin, bary, k, overlap):
  """sum_f cone_f * phi_f over the faces f of one mesh (m^3)."""
  tri = p[f]
  f_in = v_in[f]
  all_in = jnp.all(f_in, -1)
  mixed = jnp.any(f_in, -1) & ~all_in
  edges = tri - jnp.roll(tri, 1, axis=1)
  size = jnp.sqrt(jnp.max(jnp.sum(edges * edges, -1), -1) + 1e-30)
  # Refine faces that straddle for sure (mixed) first, then the nearest ones
  # relative to their size (could straddle with all vertices on one side).
  priority = jnp.where(mixed, -1.0, jnp.min(d_v[f], -1) / size)
  _, idx = jax.lax.top_k(-priority, k)
  sub = jnp.einsum('sk,fkd->fsd', bary, tri[idx])
  w = inside.winding(sub.reshape(-1, 3), tri_q).reshape(sub.shape[:2])
  frac = jnp.mean((w * s_q > 0.5) & overlap, -1)
  # Unrefined faces (only when more than k may cross) keep the vertex vote.
  phi = jnp.mean(f_in.astype(p.dtype), -1).at[idx].set(frac)
  cross = jnp.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
  cone = jnp.sum((tri[:, 0] - origin[None]) * cross, -1) / 6.0 * s_p
  return jnp.sum(cone * phi)


def _volume(va, fa, vb, fb, subdiv, max_refine):
  c = _classify(va, fa, vb, fb)
  # Cone apex near the overlap: the error of a misjudged sliver scales with
  # its distance to the apex.
  w_a, w_b = c['a_in_b'].astype(va.dtype), c['b_in_a'].astype(va.dtype)
  n_in = jnp.sum(w_a) + jnp.sum(w_b)
  origin = (w_a @ c['pa'] + w_b @ c['pb']) / jnp.maximum(n_in, 1.0)
  origin = jax.lax.stop_gradient(origin)
  bary = jnp.asarray(subtriangle_centroids(subdiv), va.dtype)
  vol_a = _side_volume(c['pa'], fa, c['sa'], c['a_in_b'], c['d_a'], c['tri_b'], c['sb'],
                       origin, bary, min(max_refine, len(fa)), c['overlap'])
  vol_b = _side_volume(c['pb'], fb, c['sb'], c['b_in_a'], c['d_b'], c['tri_a'], c['sa'],
                       origin, bary, min(max_refine, len(fb)), c['overlap'])
  # Exactly 0 (not float noise) when no sample was inside.
  return jnp.where(c['overlap'], jnp.maximum(vol_a + vol_b, 0.0), 0.0)


def _side_depth(p, v_in, d_v, num_orig, tri_q):
  """Deepest of the first num_orig vertices p inside the other mesh (m)."""
  p, v_in, d_v = p[:num_orig], v_in[:num_orig], d_v[:num_orig]
  k = min(_DEPTH_CANDIDATES, num_orig)
  # The nearest-vertex distance bounds the surface distance from above, so
  # the deepest vertex is among those with the largest one.
  _, idx = jax.lax.top_k(jnp.where(v_in, d_v, -1.0), k)
  depth = jnp.sqrt(inside.surface_sqdist(p[idx], tri_q, d_v[idx] ** 2) + 1e-30)
  return jnp.max(jnp.where(v_in[idx], depth, 0.0))


def _depth(va, fa, vb, fb, num_a, num_b):
  c = _classify(va, fa, vb, fb)
  return jnp.maximum(_side_depth(c['pa'], c['a_in_b'], c['d_a'], num_a, c['tri_b']),
                     _side_depth(c['pb'], c['b_in_a'], c['d_b'], num_b, c['tri_a']))


def _gap(va, fa, vb, fb, num_a, num_b):
  c = _classify(va, fa, vb, fb)
  touching = jnp.any(c['a_in_b'][:num_a]) | jnp.any(c['b_in_a'][:num_b])
  return jnp.where(touching, 0.0, jnp.min(c['d_a'][:num_a]))


@functools.lru_cache(maxsize=64)
def _compiled(kind, sealer_a, sealer_b, options):
  """Jitted per-batch function of (verts_a, verts_b) for one topology pair."""
  fa, fb = sealer_a.faces, sealer_b.faces
  num_a, num_b = sealer_a.num_vertices, sealer_b.num_vertices

  def one(va, vb):
    sva, _ = sealer_a(va)
    svb, _ = sealer_b(vb)
    if kind == 'volume':
      return _volume(sva, fa, svb, fb, *options)
    if kind == 'depth':
      return _depth(sva, fa, svb, fb, num_a, num_b)
    return _gap(sva, fa, svb, fb, num_a, num_b)

  return jax.jit(lambda va, vb: pairs.map_pairs(one, va, vb))


def _run(kind, verts_a, faces_a, verts_b, faces_b, options=()):
  verts_a, verts_b = jnp.asarray(verts_a), jnp.asarray(verts_b)
  sa = seal_lib.make_sealer(seal_lib.static_faces(faces_a, 'faces_a'), verts_a.shape[-2],
                            _METRIC_RINGS)
  sb = seal_lib.make_sealer(seal_lib.static_faces(faces_b, 'faces_b'), verts_b.shape[-2],
                            _METRIC_RINGS)
  return _compiled(kind, sa, sb, tuple(options))(verts_a, verts_b)


def penetration_volume(verts_a, faces_a, verts_b, faces_b, *, pitch=None,
                       subdiv=6, max_refine=128):
  """Volume inside both meshes (...,) in m^3, after sealing open meshes.

  verts (..., V, 3) in m, leading dims broadcast; faces concrete (F, 3) int.
  subdiv: each refined face is tested at subdiv^2 points; max_refine: how
  many faces per mesh are refined (static budget). pitch: optional target
  spacing (m) of those sample points instead of subdiv, converted with the
  meshes' mean edge length (needs concrete vertices). Defaults measured
  within 5% of an exact mesh boolean from 1 cm^3 and 10% at 0.2 cm^3 on hand
  meshes (tests/test_geometry_penetration.py); exactly 0 when nothing
  overlaps.
  """
  if pitch is not None:
    subdiv = _subdiv_for_pitch(pitch, verts_a, faces_a, verts_b, faces_b)
  if subdiv < 1 or max_refine < 1:
    raise ValueError(f'subdiv and max_refine must be >= 1, got {subdiv}, {max_refine}')
  return _run('volume', verts_a, faces_a, verts_b, faces_b, (int(subdiv), int(max_refine)))


def _subdiv_for_pitch(pitch, verts_a, faces_a, verts_b, faces_b):
  if not pitch > 0:
    raise ValueError(f'pitch must be > 0 (metres), got {pitch}')
  if isinstance(verts_a, jax.core.Tracer) or isinstance(verts_b, jax.core.Tracer):
    raise TypeError('penetration_volume: pitch needs concrete vertices; '
                    'pass subdiv under jit')
  edges = []
  for v, f in ((verts_a, faces_a), (verts_b, faces_b)):
    v, f = np.asarray(v), np.asarray(f)
    e = v[..., f[:, [1, 2, 0]], :] - v[..., f, :]
    edges.append(np.mean(np.linalg.norm(e, axis=-1)))
  return max(1, int(np.ceil(float(np.mean(edges)) / pitch)))


def penetration_depth(verts_a, faces_a, verts_b, faces_b):
  """Largest distance (...,) in m from a vertex of either mesh inside the other
  (sealed) mesh to that mesh's surface; 0 if no vertex is inside."""
  return _run('depth', verts_a, faces_a, verts_b, faces_b)


def penetrates(verts_a, faces_a, verts_b, faces_b, *, min_depth=0.0):
  """True (...,) when some vertex of either hand is more than min_depth (m)
  inside the other: stage 2's penetration gate."""
  return penetration_depth(verts_a, faces_a, verts_b, faces_b) > min_depth


def hand_gap(verts_a, faces_a, verts_b, faces_b):
  """Smallest vertex-to-vertex distance (...,) in m between the hands; 0 when
  a vertex of either is inside the other (sealed) mesh."""
  return _run('gap', verts_a, faces_a, verts_b, faces_b)


def proximity(verts_a, faces_a, verts_b, faces_b, *, threshold=0.01):
  """ProxRatio: share of the pairs in the batch whose hand_gap is under
  threshold (m, default 1 cm); penetrating pairs count as close. Scalar in [0, 1]."""
  return jnp.mean(hand_gap(verts_a, faces_a, verts_b, faces_b) < threshold)
