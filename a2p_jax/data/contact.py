"""Placing the synthetic set's two hands in contact, and labelling penetration.

Both hands are posed at the origin, B is slid along the frame's direction
until no vertex of either (sealed) mesh is across the other's surface
(`contact_distance`), then moved apart by a small gap or pushed into A by a
few millimetres for the penetrating frames, whose penetration volume
(`a2p_jax.geometry.penetration_volume`) becomes their label.
"""

import jax
import numba
import numpy as np

import mano_jax
from a2p_jax import geometry
from a2p_jax.arrays import pad_batch
from a2p_jax.data.synthetic_frames import SIDES

# Pairs per penetration_volume call: one compiled shape whatever the chunk.
_VOLUME_BATCH = 4
_vertex_normals = jax.jit(mano_jax.vertex_normals)


@numba.njit(cache=True, nogil=True)
def _crossings(p2, pd, t2, td):
  """Over points p (projected (P, 2) on the plane normal to d, pd (P,) along
  d) and triangles (F, 3, 2) / (F, 3): (max, min) of s such that p + s d is on
  a triangle; (-inf, inf) if no line meets one."""
  hi, lo = -np.inf, np.inf
  for f in range(t2.shape[0]):
    xa, ya = t2[f, 0, 0], t2[f, 0, 1]
    xb, yb = t2[f, 1, 0], t2[f, 1, 1]
    xc, yc = t2[f, 2, 0], t2[f, 2, 1]
    area = (xb - xa) * (yc - ya) - (yb - ya) * (xc - xa)
    if area == 0.0:
      continue
    x0, x1 = min(xa, min(xb, xc)), max(xa, max(xb, xc))
    y0, y1 = min(ya, min(yb, yc)), max(ya, max(yb, yc))
    for p in range(p2.shape[0]):
      x, y = p2[p, 0], p2[p, 1]
      if x < x0 or x > x1 or y < y0 or y > y1:
        continue
      wb = ((x - xa) * (yc - ya) - (y - ya) * (xc - xa)) / area
      wc = ((xb - xa) * (y - ya) - (yb - ya) * (x - xa)) / area
      wa = 1.0 - wb - wc
      if wa < 0.0 or wb < 0.0 or wc < 0.0:
        continue
      s = wa * td[f, 0] + wb * td[f, 1] + wc * td[f, 2] - pd[p]
      hi = max(hi, s)
      lo = min(lo, s)
  return hi, lo


def contact_distance(verts_a, faces_a, verts_b, faces_b, direction):
  """Smallest t (m) such that moving closed mesh B by t' * direction, for every
  t' > t, puts no vertex of either mesh across the other's surface: B moved by
  t + gap touches nothing, by t - depth it is pushed in. Vertices only (edge
  crossings between vertices are not seen; they are sub-millimetre here).
  Either winding: only where lines meet the triangles counts."""
  d = np.asarray(direction, np.float64)
  d /= np.linalg.norm(d)
  e1 = np.cross(d, [1.0, 0, 0] if abs(d[0]) < 0.9 else [0, 1.0, 0])
  e1 /= np.linalg.norm(e1)
  basis = np.stack([e1, np.cross(d, e1)], 1)
  a = np.asarray(verts_a, np.float64)
  b = np.asarray(verts_b, np.float64)
  ta, tb = a[faces_a], b[faces_b]
  # B's vertices moving +d hit A; A's vertices moving -d (relative) hit B.
  hi_b, _ = _crossings(b @ basis, b @ d, ta @ basis, ta @ d)
  _, lo_a = _crossings(a @ basis, a @ d, tb @ basis, tb @ d)
  t = max(hi_b, -lo_a)
  return 0.0 if not np.isfinite(t) else float(t)


class ManoBatch:
  """Batched MANO forward padded to a fixed batch size (compiled once: the
  jitted forward is cached by the model pytree and shapes)."""

  def __init__(self, models, batch):
    self.models, self.batch = models, batch

  def __call__(self, k, pose, shape, trans):
    """Model k on (n, 48), (n, 10), (n, 3) -> vertices, joints, normals numpy."""
    n = len(pose)
    m = self.models[k]
    out = mano_jax.forward(m, pad_batch(pose, self.batch), pad_batch(shape, self.batch),
                           pad_batch(trans, self.batch), joint_order='interhand')
    normals = _vertex_normals(out.vertices, m.faces)
    return (np.asarray(out.vertices)[:n], np.asarray(out.joints)[:n],
            np.asarray(normals)[:n])


def penetration_volumes_m3(pairs, faces):
  """penetration_volume (m^3) of [(verts_right, verts_left)] pairs, in
  batches of _VOLUME_BATCH (padded: one compile)."""
  vols = []
  for start in range(0, len(pairs), _VOLUME_BATCH):
    part = pairs[start:start + _VOLUME_BATCH]
    vr = pad_batch(np.stack([p[0] for p in part]), _VOLUME_BATCH)
    vl = pad_batch(np.stack([p[1] for p in part]), _VOLUME_BATCH)
    vols.append(np.asarray(geometry.penetration_volume(vr, faces[0], vl, faces[1])))
  return np.concatenate(vols)[:len(pairs)] if vols else np.zeros(0)


def solve_chunk(specs, draws, mano: ManoBatch):
  """World MANO fits, meshes and penetration volumes of a chunk of frames.

  specs: `synthetic_frames.FrameSpec`s, draws: their `sample_frame`s.
  Returns per frame a dict: 'trans' {side: (3,) float32}, 'verts' / 'joints'
  / 'normals' {side: array}, 'volume_cm3', 'offset_m' (final gap, < 0 when
  pushed in).
  """
  n = len(specs)
  stack = lambda key, side: np.stack([d[key][side] for d in draws])
  zero = np.zeros((n, 3), np.float32)
  rest = [mano(k, stack('pose', s), stack('shape', s), zero) for k, s in enumerate(SIDES)]
  faces = [m.faces for m in mano.models]
  sealers = [geometry.make_sealer(m.faces, m.num_vertices) for m in mano.models]
  centroids = [r[0].mean(1).astype(np.float64) for r in rest]

  def contact(i):
    if specs[i].hand_type != 'interacting':
      return 0.0
    va, fa = sealers[0](rest[0][0][i].astype(np.float64))
    # B at t = 0: its centroid on A's, so it is surely inside.
    vb, fb = sealers[1](rest[1][0][i].astype(np.float64) + (centroids[0][i] - centroids[1][i]))
    return contact_distance(va, fa, vb, fb, draws[i]['direction'])

  t_contact = [contact(i) for i in range(n)]
  offsets = np.array([d['offset_m'] for d in draws])

  def place(offsets):
    trans = np.zeros((2, n, 3))
    for i, (spec, d) in enumerate(zip(specs, draws)):
      if spec.hand_type == 'interacting':
        shift_l = centroids[0][i] - centroids[1][i] + (t_contact[i] + offsets[i]) * d['direction']
        mid = 0.5 * (centroids[0][i] + centroids[1][i] + shift_l)
        trans[0, i] = d['center'] - mid
        trans[1, i] = shift_l + d['center'] - mid
      else:
        k = SIDES.index(spec.hand_type)
        trans[k, i] = d['center'] - centroids[k][i]
    return trans.astype(np.float32)

  todo = [i for i, s in enumerate(specs) if s.penetrating]
  volumes = np.zeros(n)
  for attempt in range(6):
    trans = place(offsets)
    world = [mano(k, stack('pose', s), stack('shape', s), trans[k])
             for k, s in enumerate(SIDES)]
    if not todo:
      break
    vol = penetration_volumes_m3([(world[0][0][i], world[1][0][i]) for i in todo], faces)
    volumes[todo] = vol
    # Rarely the chosen depth only grazes a thin part: push further in.
    todo = [i for i, v in zip(todo, vol) if not v > 0]
    if todo and attempt == 5:
      raise RuntimeError(f'frames {[specs[i].index for i in todo]}: hands pushed '
                         'together but no penetration volume')
    offsets[todo] -= 0.01
  results = []
  for i in range(n):
    r = dict(trans={}, verts={}, joints={}, normals={}, volume_cm3=float(volumes[i] * 1e6),
             offset_m=float(offsets[i]) if specs[i].hand_type == 'interacting' else None)
    for k, side in enumerate(SIDES):
      r['trans'][side] = trans[k, i]
      r['verts'][side] = world[k][0][i]
      r['joints'][side] = world[k][1][i]
      r['normals'][side] = world[k][2][i]
    results.append(r)
  return results
