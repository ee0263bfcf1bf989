"""Closing open meshes (MANO is open at the wrist) so inside tests make sense.

Topology work (finding boundary loops) is numpy, done once per face array and
cached; applying it is a pure jnp function of the vertices, jit/vmap/grad safe.
"""

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np


def static_faces(faces, name='faces'):
  """faces as a concrete (F, 3) int numpy array, or a clear error."""
  try:
    arr = np.asarray(faces)
  except Exception as e:  # a jax tracer: topology must be static
    raise TypeError(
        f'{name} must be a concrete (F, 3) int array (static topology), not a '
        f'traced value; close over it instead of passing it through jit') from e
  if arr.ndim != 2 or arr.shape[1] != 3 or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f'{name} must be an (F, 3) int array, got {arr.shape} {arr.dtype}')
  return arr.astype(np.int64)


def boundary_loops(faces):
  """Boundary loops of a triangle mesh, each an int array of vertex ids.

  A loop follows the faces' own half-edge direction (u -> v for an edge u->v
  of a face with no twin v->u). Raises ValueError on non-manifold boundaries.
  """
  faces = static_faces(faces)
  half = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
  keys = set(map(tuple, half.tolist()))
  boundary = [(u, v) for u, v in half.tolist() if (v, u) not in keys]
  nxt = {}
  for u, v in boundary:
    if u in nxt:
      raise ValueError(f'non-manifold boundary at vertex {u}: two outgoing boundary edges')
    nxt[u] = v
  loops, seen = [], set()
  for start in sorted(nxt):
    if start in seen:
      continue
    loop, u = [], start
    while u not in seen:
      seen.add(u)
      loop.append(u)
      if u not in nxt:
        raise ValueError(f'boundary is not closed at vertex {u}')
      u = nxt[u]
    if u != start:
      raise ValueError(f'boundary loops cross at vertex {u}')
    loops.append(np.asarray(loop, np.int64))
  return loops


@dataclasses.dataclass(frozen=True, eq=False)
class Sealer:
  """Seals one topology: new vertices are fixed linear mixes of the old ones.

  Each boundary loop gets a vertex at its centroid and `n_rings - 1` rings
  between rim and centroid (n_rings=1 is the plain centroid fan; more rings
  give the same surface with smaller triangles). Cap faces reuse each rim
  edge reversed, so the cap faces outward when the mesh does.
  """
  num_vertices: int
  faces: np.ndarray  # (F', 3) sealed faces; the first F are the input faces
  mix: np.ndarray  # (N_new, V) weights: new vertices = mix @ vertices
  num_loops: int

  def __call__(self, vertices):
    """vertices (..., V, 3) -> (sealed vertices (..., V + N_new, 3), faces (F', 3)).

    numpy in: numpy out in its dtype (float64 geometry on the CPU, e.g. the
    synthetic set's contact placement); anything else: jax (jit/grad safe)."""
    if vertices.shape[-2] != self.num_vertices:
      raise ValueError(f'Sealer built for {self.num_vertices} vertices, got '
                       f'vertices of shape {vertices.shape}')
    if self.mix.shape[0] == 0:
      return vertices, self.faces
    xp = np if isinstance(vertices, np.ndarray) else jnp
    new = xp.einsum('nv,...vd->...nd', xp.asarray(self.mix, vertices.dtype), vertices)
    return xp.concatenate([vertices, new], axis=-2), self.faces


def _cap(loop, first_new, num_vertices, n_rings):
  """Mix rows and faces for one loop; new vertex ids start at first_new."""
  k = len(loop)
  centre_w = np.zeros(num_vertices)
  centre_w[loop] = 1.0 / k
  rows, rings = [], [loop]
  for r in range(1, n_rings):
    t = r / n_rings
    ids = first_new + len(rows) + np.arange(k)
    for i in range(k):  # k rim vertices, topology time only
      w = t * centre_w
      w[loop[i]] += 1.0 - t
      rows.append(w)
    rings.append(ids)
  centre = first_new + len(rows)
  rows.append(centre_w)
  faces = []
  for a_ring, b_ring in zip(rings[:-1], rings[1:]):
    a1, b1 = np.roll(a_ring, -1), np.roll(b_ring, -1)
    faces += [np.stack([a1, a_ring, b_ring], 1), np.stack([a1, b_ring, b1], 1)]
  last = rings[-1]
  faces.append(np.stack([np.roll(last, -1), last, np.full(k, centre)], 1))
  return np.stack(rows), np.concatenate(faces)


@functools.lru_cache(maxsize=64)
def _make_sealer_cached(faces_bytes, num_faces, num_vertices, n_rings):
  faces = np.frombuffer(faces_bytes, np.int64).reshape(num_faces, 3)
  rows, new_faces, nxt = [], [faces], num_vertices
  loops = boundary_loops(faces)
  for loop in loops:
    r, f = _cap(loop, nxt, num_vertices, n_rings)
    rows.append(r)
    new_faces.append(f)
    nxt += len(r)
  mix = np.concatenate(rows) if rows else np.zeros((0, num_vertices))
  return Sealer(num_vertices, np.concatenate(new_faces), mix, len(loops))


def make_sealer(faces, num_vertices=None, n_rings=1):
  """Sealer for this topology (cached). num_vertices defaults to faces.max() + 1."""
  faces = static_faces(faces)
  if num_vertices is None:
    num_vertices = int(faces.max()) + 1
  if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
    raise ValueError(f'faces index outside [0, {num_vertices})')
  if n_rings < 1:
    raise ValueError(f'n_rings must be >= 1, got {n_rings}')
  return _make_sealer_cached(np.ascontiguousarray(faces).tobytes(), len(faces),
                             int(num_vertices), int(n_rings))


def seal(vertices, faces):
  """Closes every boundary loop with an outward centroid fan.

  vertices (..., V, 3) m, faces (F, 3) concrete int -> (vertices (..., V + L, 3),
  faces (F + sum of loop lengths, 3)) with L loops; the input comes first, so
  vertex and face ids are unchanged. Jit-able in the vertices; numpy vertices
  give numpy (`Sealer.__call__`).
  """
  return make_sealer(faces, vertices.shape[-2])(vertices)
