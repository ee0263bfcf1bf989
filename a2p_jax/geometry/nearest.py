"""Exact nearest vertices between two point sets, both ways.

The answer is always the brute force's: for each p the q minimising the
float32 squared distance `sq_dists` (the same formula and rounding as the
dense argmin), the lowest index on ties. On the CPU it is found by a numba
kernel (an XLA FFI call, see cpu_ffi) that prunes with boxes: each mesh's
vertices are split once per topology into clusters of CLUSTER vertices that
are small surface patches in any pose (grown breadth-first on the mesh
graph); per call each cluster gets its bounding box, and a point visits a
cluster only when the box could hold a nearer point than the best so far
(or one within `max_dist`). Bounds are computed from the box corners with
float32 operations that are monotone in their inputs and then loosened by
2^-20 relative, so a box is never skipped that holds a candidate. Other
backends run the dense argmin.

`sq_dists` matches XLA:CPU's rounding of the dense formula bit for bit: XLA
contracts it to fma(dz, dz, fma(dx, dx, dy * dy)), and the kernel computes
exactly that (tests/test_geometry_nearest.py checks it against the jitted
dense matrix).
"""

import functools

import jax
import jax.numpy as jnp
import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from a2p_jax.geometry import cpu_ffi

# Vertices per cluster (16 and 32 measured alike on hand pairs, 8 slower).
CLUSTER = 16
_BIG = np.iinfo(np.int32).max
# Bounds loosened by 2^-20 relative: far above float32 rounding differences
# between formulas (~2^-23), far below anything that changes the pruning.
_UP = np.float32(1 + 2.0 ** -20)
_DOWN = np.float32(1 - 2.0 ** -20)


def sq_dists(p_Px3, q_Qx3):
  """Squared distances (..., P, Q), coordinate by coordinate, no gradient
  (the distances every search here ranks)."""
  p = jax.lax.stop_gradient(p_Px3)
  q = jax.lax.stop_gradient(q_Qx3)
  return ((p[..., :, None, 0] - q[..., None, :, 0]) ** 2
          + (p[..., :, None, 1] - q[..., None, :, 1]) ** 2
          + (p[..., :, None, 2] - q[..., None, :, 2]) ** 2)


# --- clusters (numpy, once per topology) -----------------------------------


def _adjacency(faces, num_vertices):
  edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
  edges = np.unique(np.concatenate([edges, edges[:, ::-1]]), axis=0)
  start = np.searchsorted(edges[:, 0], np.arange(num_vertices + 1))
  return edges[:, 1], start


def _bfs(root, nbrs, start, allowed, limit=None):
  """Vertices reached from root through allowed ones, breadth first (each
  level by ascending id), the first `limit` of them."""
  seen = {root}
  seq, frontier = [root], [root]
  while frontier and (limit is None or len(seq) < limit):
    frontier = sorted({int(w) for u in frontier for w in nbrs[start[u]:start[u + 1]]
                       if allowed[w] and int(w) not in seen})
    seen.update(frontier)
    seq += frontier
  return seq if limit is None else seq[:limit]


def _grow(faces, num_vertices, size):
  """Clusters of up to `size` vertices grown breadth first on the mesh
  graph from seeds taken in a sweep out of a peripheral vertex of each
  connected component: connected patches, a few smaller than `size`."""
  nbrs, start = _adjacency(faces, num_vertices)
  everything = np.ones(num_vertices, bool)
  sweep, seen = [], np.zeros(num_vertices, bool)
  for s in range(num_vertices):
    if not seen[s]:
      component = _bfs(s, nbrs, start, everything)
      order = _bfs(component[-1], nbrs, start, everything)
      seen[order] = True
      sweep += order
  free = np.ones(num_vertices, bool)
  groups = []
  for seed in sweep:
    if free[seed]:
      got = _bfs(seed, nbrs, start, free, limit=size)
      free[got] = False
      groups.append(np.sort(np.asarray(got)))
  return groups


@functools.lru_cache(maxsize=64)
def _clusters_cached(faces_bytes, num_faces, num_vertices, size):
  if num_faces:
    faces = np.frombuffer(faces_bytes, np.int64).reshape(num_faces, 3)
    groups = _grow(faces, num_vertices, size)
  else:
    groups = [np.arange(i, min(i + size, num_vertices)) for i in range(0, num_vertices, size)]
  # Short clusters repeat their first vertex: the same box, the same answers.
  return np.stack([np.concatenate([g, np.full(size - len(g), g[0])])
                   for g in groups]).astype(np.int32)


def clusters(faces, num_vertices, size=CLUSTER):
  """(C, size) int32 vertex ids: every vertex in exactly one row (ascending,
  short rows padded with their own first id). faces None (or traced):
  consecutive ids, still exact, slower (less compact boxes)."""
  if faces is None or isinstance(faces, jax.core.Tracer):
    faces = np.zeros((0, 3), np.int64)
  faces = np.ascontiguousarray(np.asarray(faces, np.int64))
  if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
    raise ValueError(f'faces index outside [0, {num_vertices})')
  return _clusters_cached(faces.tobytes(), len(faces), int(num_vertices), int(size))


# --- the CPU kernel (numba) --------------------------------------------------


@intrinsic
def _fma32(typingctx, a, b, c):
  sig = types.float32(types.float32, types.float32, types.float32)

  def codegen(context, builder, signature, args):
    import llvmlite.ir as ir
    f32 = ir.FloatType()
    fn = builder.module.declare_intrinsic('llvm.fma', [f32], ir.FunctionType(f32, [f32] * 3))
    return builder.call(fn, args)

  return sig, codegen


@numba.njit(nogil=True, cache=True)
def _gather(p, ids, out, lo, hi):
  """Cluster coordinates out (C, 3, S) and boxes lo, hi (3, C)."""
  for i in range(ids.shape[0]):
    for k in range(3):
      low, high = np.float32(np.inf), np.float32(-np.inf)
      for t in range(ids.shape[1]):
        v = p[ids[i, t], k]
        out[i, k, t] = v
        low = v if v < low else low
        high = v if v > high else high
      lo[k, i] = low
      hi[k, i] = high


@numba.njit(nogil=True, cache=True)
def _box_bounds(lo_a, hi_a, lo_b, hi_b, box, box_t):
  """box[i, j] = box_t[j, i]: squared gap between cluster boxes i and j,
  loosened (never above a squared distance between their points)."""
  cb = lo_b.shape[1]
  g = np.empty(cb, np.float32)
  for i in range(lo_a.shape[1]):
    g[:cb] = 0.0
    for k in range(3):
      lo, hi = lo_a[k, i], hi_a[k, i]
      for j in range(cb):  # vectorised (run-time trip count)
        gap = lo_b[k, j] - hi
        other = lo - hi_b[k, j]
        gap = other if other > gap else gap
        gap = gap if gap > 0 else np.float32(0.0)
        g[j] += gap * gap
    for j in range(cb):
      box[i, j] = g[j] * _DOWN
      box_t[j, i] = g[j] * _DOWN


@numba.njit(nogil=True, cache=True, inline='always')
def _min_loop(d):
  low = d[0]
  for t in range(1, d.size):
    low = d[t] if d[t] < low else low
  return low


@numba.njit(nogil=True, cache=True, inline='always')
def _pick(a, b):
  return a if a < b else b


@numba.njit(nogil=True, cache=True, inline='always')
def _min16(d):
  """min of d[:16] as a tree (depth 4, not a 16-long dependency chain)."""
  e0, e1, e2, e3 = _pick(d[0], d[8]), _pick(d[1], d[9]), _pick(d[2], d[10]), _pick(d[3], d[11])
  e4, e5, e6, e7 = _pick(d[4], d[12]), _pick(d[5], d[13]), _pick(d[6], d[14]), _pick(d[7], d[15])
  f0, f1, f2, f3 = _pick(e0, e4), _pick(e1, e5), _pick(e2, e6), _pick(e3, e7)
  return _pick(_pick(f0, f2), _pick(f1, f3))


@numba.njit(nogil=True, cache=True)
def _one_way(xs, ids_a, ys, lo_b, hi_b, ids_b, box, lim, dist, idx):
  """Nearest y (within squared distance lim) of every point of xs.

  xs (Ca, 3, S), ys (Cb, 3, S) cluster coordinates; box (Ca, Cb) bounds
  from _box_bounds. Writes dist (squared; inf when none within lim) and idx
  (-1 when none) at the points' vertex ids.
  """
  ca, s = ids_a.shape
  cb, sb = ids_b.shape
  order = np.empty(cb, np.int64)
  d = np.empty(sb, np.float32)
  near = np.empty(s, np.float32)
  best = np.empty(s, np.float32)
  bid = np.empty(s, np.int32)
  for i in range(ca):
    m = 0
    for j in range(cb):
      if box[i, j] <= lim:
        order[m] = j
        m += 1
    # Nearest boxes first, so that the search can stop at the first box
    # farther than every point's best so far.
    if m > 12:
      order[:m] = order[:m][np.argsort(box[i][order[:m]], kind='mergesort')]
    else:
      for a in range(1, m):
        key = order[a]
        b = a - 1
        while b >= 0 and box[i, order[b]] > box[i, key]:
          order[b + 1] = order[b]
          b -= 1
        order[b + 1] = key
    best[:s] = lim
    bid[:s] = _BIG
    worst = lim
    for a in range(m):
      j = order[a]
      if box[i, j] > worst:
        break
      # Each point's gap to box j (vectorised over the cluster's points).
      near[:s] = 0.0
      for k in range(3):
        lo, hi = lo_b[k, j], hi_b[k, j]
        for u in range(s):
          x = xs[i, k, u]
          gap = lo - x
          other = x - hi
          gap = other if other > gap else gap
          gap = gap if gap > 0 else np.float32(0.0)
          near[u] += gap * gap
      for u in range(s):
        if near[u] * _DOWN > best[u]:
          continue
        x, y, z = xs[i, 0, u], xs[i, 1, u], xs[i, 2, u]
        for t in range(sb):  # vectorised (run-time trip count)
          dx = x - ys[j, 0, t]
          dy = y - ys[j, 1, t]
          dz = z - ys[j, 2, t]
          d[t] = _fma32(dz, dz, _fma32(dx, dx, dy * dy))
        low = _min16(d) if sb == 16 else _min_loop(d)
        if low <= best[u]:
          for t in range(sb):
            if d[t] == low and (low < best[u] or ids_b[j, t] < bid[u]):
              best[u], bid[u] = low, ids_b[j, t]
      worst = best[0]
      for u in range(1, s):
        worst = best[u] if best[u] > worst else worst
    for u in range(s):
      p = ids_a[i, u]
      if bid[u] == _BIG:
        dist[p], idx[p] = np.inf, -1
      else:
        dist[p], idx[p] = best[u], bid[u]


@numba.njit(nogil=True, cache=True)
def nearest_pair(pa, pb, ids_a, ids_b, lim, da, ja, db, jb):
  """Both ways for one pair: pa (P, 3), pb (Q, 3) float32; ids_* clusters;
  lim: squared distance bound (inf: every point). Writes da/ja (P,) and
  db/jb (Q,): squared distance and index of the nearest point of the other
  set when it is <= lim (and possibly a little beyond), else inf and -1."""
  ca, s = ids_a.shape
  cb, sb = ids_b.shape
  xs = np.empty((ca, 3, s), np.float32)
  ys = np.empty((cb, 3, sb), np.float32)
  lo_a = np.empty((3, ca), np.float32)
  hi_a = np.empty((3, ca), np.float32)
  lo_b = np.empty((3, cb), np.float32)
  hi_b = np.empty((3, cb), np.float32)
  _gather(pa, ids_a, xs, lo_a, hi_a)
  _gather(pb, ids_b, ys, lo_b, hi_b)
  box = np.empty((ca, cb), np.float32)
  box_t = np.empty((cb, ca), np.float32)
  _box_bounds(lo_a, hi_a, lo_b, hi_b, box, box_t)
  bound = lim * _UP if lim < np.inf else np.float32(np.inf)
  _one_way(xs, ids_a, ys, lo_b, hi_b, ids_b, box, bound, da, ja)
  _one_way(ys, ids_b, xs, lo_a, hi_a, ids_a, box_t, bound, db, jb)


@numba.njit(nogil=True, cache=True)
def _nearest_one(p, q, ids_p, ids_q, max_sq, j_pq, j_qp):
  da = np.empty(p.shape[0], np.float32)
  db = np.empty(q.shape[0], np.float32)
  nearest_pair(p, q, ids_p, ids_q, max_sq, da, j_pq, db, j_qp)
  for i in range(p.shape[0]):
    if not da[i] < max_sq:
      j_pq[i] = -1
  for i in range(q.shape[0]):
    if not db[i] < max_sq:
      j_qp[i] = -1


@numba.njit(nogil=True, cache=True)
def _nearest_item(n, p, q, ids_p, ids_q, max_sq, j_pq, j_qp):
  bound = max_sq[min(n, max_sq.size - 1)]
  _nearest_one(p[n], q[n], ids_p, ids_q, bound, j_pq[n], j_qp[n])


_nearest_batch = cpu_ffi.batch_loop(_nearest_item)



def _make_nearest_handler():
  threads = cpu_ffi.threads_ok()

  @numba.cfunc(cpu_ffi.HANDLER_SIG)
  def handler(frame):
    if not cpu_ffi.begin(frame):
      return cpu_ffi.null()
    # Under vmap ('broadcast_all') every argument has the same leading dims;
    # the clusters are the same for all pairs: use the first.
    dp, dq = cpu_ffi.dims(frame, 0), cpu_ffi.dims(frame, 1)
    di, dj = cpu_ffi.dims(frame, 2), cpu_ffi.dims(frame, 3)
    n, num_p, num_q = cpu_ffi.lead(dp, 2), dp[dp.size - 2], dq[dq.size - 2]
    p = numba.carray(cpu_ffi.data(frame, 0), (n, num_p, 3), np.float32)
    q = numba.carray(cpu_ffi.data(frame, 1), (n, num_q, 3), np.float32)
    ids_p = numba.carray(cpu_ffi.data(frame, 2), (di[di.size - 2], di[di.size - 1]), np.int32)
    ids_q = numba.carray(cpu_ffi.data(frame, 3), (dj[dj.size - 2], dj[dj.size - 1]), np.int32)
    bounds = cpu_ffi.lead(cpu_ffi.dims(frame, 4), 1)
    max_sq = numba.carray(cpu_ffi.data(frame, 4), (bounds,), np.float32)
    j_pq = numba.carray(cpu_ffi.data(frame, 0, True), (n, num_p), np.int32)
    j_qp = numba.carray(cpu_ffi.data(frame, 1, True), (n, num_q), np.int32)
    _nearest_batch(threads, n, p, q, ids_p, ids_q, max_sq, j_pq, j_qp)
    return cpu_ffi.null()

  return handler


# --- public ----------------------------------------------------------------


def nearest_brute(p_Px3, q_Qx3, max_sq=None):
  """The dense search (..., P) and (..., Q) int32: an argmin along each axis
  of one distance matrix; -1 where the nearest is not under max_sq."""
  sq = sq_dists(p_Px3, q_Qx3)
  j_pq, j_qp = jnp.argmin(sq, axis=-1), jnp.argmin(sq, axis=-2)
  if max_sq is not None:
    j_pq = jnp.where(jnp.min(sq, axis=-1) < max_sq, j_pq, -1)
    j_qp = jnp.where(jnp.min(sq, axis=-2) < max_sq, j_qp, -1)
  return j_pq.astype(jnp.int32), j_qp.astype(jnp.int32)


def _nearest_cpu(p, q, ids_p, ids_q, max_sq):
  shapes = (jax.ShapeDtypeStruct(p.shape[:-1], jnp.int32),
            jax.ShapeDtypeStruct(p.shape[:-2] + q.shape[-2:-1], jnp.int32))
  return tuple(cpu_ffi.call('a2p_nearest', _make_nearest_handler, shapes, p, q, ids_p,
                            ids_q, max_sq, vmap_method='broadcast_all'))


def nearest_both_ways(p_Px3, q_Qx3, *, max_dist=None, faces_p=None, faces_q=None):
  """(nearest q of each p (..., P), nearest p of each q (..., Q)) int32, no
  gradient; exactly the dense argmin of `sq_dists` (lowest index on ties).

  p (..., P, 3), q (..., Q, 3), the same leading dims. max_dist (m): only
  neighbours at distance under max_dist are looked for, -1 where there is
  none (far cheaper for meshes that barely touch). faces_*: the meshes'
  faces (concrete), only to cluster the vertices for pruning (faster, same
  answer).
  """
  p = jax.lax.stop_gradient(jnp.asarray(p_Px3))
  q = jax.lax.stop_gradient(jnp.asarray(q_Qx3))
  if p.ndim < 2 or p.shape[-1] != 3 or q.shape[-1:] != (3,) or p.shape[:-2] != q.shape[:-2]:
    raise ValueError(f'need p (..., P, 3) and q (..., Q, 3) with the same leading dims, '
                     f'got {p.shape} and {q.shape}')
  max_sq = None if max_dist is None else jnp.square(jnp.asarray(max_dist, jnp.float32))
  if p.dtype != jnp.float32 or q.dtype != jnp.float32:
    return nearest_brute(p, q, max_sq)
  ids_p = jnp.asarray(clusters(faces_p, p.shape[-2]))
  ids_q = jnp.asarray(clusters(faces_q, q.shape[-2]))
  lim = jnp.full((1,), jnp.inf, jnp.float32) if max_sq is None else jnp.reshape(max_sq, (1,))
  return cpu_ffi.on_cpu(
      _nearest_cpu, lambda p, q, _, __, lim: nearest_brute(p, q, lim[0]), p, q, ids_p, ids_q, lim)
