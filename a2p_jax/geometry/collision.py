"""A2P's collision guidance loss between two hand meshes (differentiable)."""

import functools

import jax
import jax.numpy as jnp
import numba
import numpy as np

from a2p_jax.geometry import cpu_ffi
from a2p_jax.geometry import nearest as nearest_lib
from a2p_jax.geometry import normals as normals_lib

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
  """Squared distances (P, Q) without gradient (nearest.sq_dists)."""
  return nearest_lib.sq_dists(p, q)


def nearest_vertex(p_Px3, q_Qx3):
  """Index (P,) int32 of the nearest q for each p (the first on ties); no
  gradient (a choice, not a value)."""
  return nearest_lib.nearest_both_ways(p_Px3, q_Qx3)[0]


def nearest_both_ways(p_Px3, q_Qx3, *, max_dist=None, faces_p=None, faces_q=None):
  """(nearest q for each p (P,), nearest p for each q (Q,)) int32, exactly the
  dense argmin (first index on ties); no gradient. max_dist (m): look only
  for neighbours closer than that, -1 where there is none (much cheaper);
  faces_*: concrete faces, used only to prune faster. See nearest.py."""
  return nearest_lib.nearest_both_ways(p_Px3, q_Qx3, max_dist=max_dist, faces_p=faces_p,
                                       faces_q=faces_q)


# --- which vertex pairs penetrate: the dense reference, and the CPU kernel ----


def _oriented_normals(v, faces):
  # Normals only select pairs, so they need no gradient; the orientation
  # factor makes inward-facing face lists behave like outward ones.
  n = normals_lib.vertex_normals(v, faces) * normals_lib.orientation(v, faces)
  return jax.lax.stop_gradient(n)


def _candidates_dense(va, vb, faces_a, faces_b, params):
  """(j_ab, ok_ab, j_ba, ok_ba) for (N, V, 3) pairs: each vertex's nearest on
  the other mesh and whether its normal opposes and it lies behind the other
  tangent plane (the distance test is left to the loss)."""
  _, cos_threshold = params[0], params[1]

  def one(a, b):
    na, nb = _oriented_normals(a, faces_a), _oriented_normals(b, faces_b)
    j_ab, j_ba = nearest_lib.nearest_brute(a, b)

    def ok(p, q, n_p, n_q, j):
      diff = jax.lax.stop_gradient(p - q[j])
      return (jnp.sum(n_p * n_q[j], -1) < cos_threshold) & (
          jnp.sum(diff * n_q[j], -1) < -CONTACT_EPS)

    return j_ab, ok(a, b, na, nb, j_ab), j_ba, ok(b, a, nb, na, j_ba)

  return jax.vmap(one)(va, vb)


@functools.lru_cache(maxsize=64)
def _incidence_cached(faces_bytes, num_faces, num_vertices):
  faces = np.frombuffer(faces_bytes, np.int64).reshape(num_faces, 3)
  order = np.argsort(faces.reshape(-1), kind='stable')
  start = np.searchsorted(faces.reshape(-1)[order], np.arange(num_vertices + 1))
  return start.astype(np.int32), (order // 3).astype(np.int32)


def _incidence(faces, num_vertices):
  """(start (V+1,), face ids (3F,)) int32: the faces of vertex v are
  ids[start[v]:start[v+1]]. Concrete faces: numpy, once; traced: jnp."""
  if isinstance(faces, jax.core.Tracer):
    flat = jnp.asarray(faces, jnp.int32).reshape(-1)
    order = jnp.argsort(flat, stable=True)
    start = jnp.searchsorted(flat[order], jnp.arange(num_vertices + 1, dtype=jnp.int32))
    return start.astype(jnp.int32), (order // 3).astype(jnp.int32)
  faces = np.ascontiguousarray(np.asarray(faces, np.int64))
  return tuple(jnp.asarray(x) for x in _incidence_cached(faces.tobytes(), len(faces),
                                                         int(num_vertices)))


@numba.njit(nogil=True, cache=True)
def _face_normals(v, faces, out):
  """Face normals (F, 3) float64 (length 2 area) into out; returns the
  orientation sign (normals.orientation: +1 if the faces point outward)."""
  cx = cy = cz = 0.0
  for i in range(v.shape[0]):
    cx += v[i, 0]
    cy += v[i, 1]
    cz += v[i, 2]
  cx, cy, cz = cx / v.shape[0], cy / v.shape[0], cz / v.shape[0]
  vol = 0.0
  for f in range(faces.shape[0]):
    a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
    ax, ay, az = np.float64(v[a, 0]), np.float64(v[a, 1]), np.float64(v[a, 2])
    ux, uy, uz = v[b, 0] - ax, v[b, 1] - ay, v[b, 2] - az
    wx, wy, wz = v[c, 0] - ax, v[c, 1] - ay, v[c, 2] - az
    nx, ny, nz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
    out[f, 0], out[f, 1], out[f, 2] = nx, ny, nz
    # det(a - c, b - c, e - c) = (a - c) . ((b - a) x (e - a))
    vol += (ax - cx) * nx + (ay - cy) * ny + (az - cz) * nz
  return 1.0 if vol >= 0 else -1.0


@numba.njit(nogil=True, cache=True, inline='always')
def _normal(face_n, start, incident, sign, i, out):
  """Unit normal of vertex i (area-weighted sum of its faces' normals, times
  the orientation sign: mano_jax.vertex_normals * normals.orientation in
  float64) into out (3,); 0 if it has no face area."""
  nx = ny = nz = 0.0
  for k in range(start[i], start[i + 1]):
    f = incident[k]
    nx += face_n[f, 0]
    ny += face_n[f, 1]
    nz += face_n[f, 2]
  sq = nx * nx + ny * ny + nz * nz
  r = sign / np.sqrt(sq) if sq > 0 else 0.0
  out[0], out[1], out[2] = nx * r, ny * r, nz * r


@numba.njit(nogil=True, cache=True)
def _mark(p, q, side_p, side_q, dist, j, lim, cos_threshold, ok):
  """ok[i]: the nearest q of p[i] is within lim, their normals oppose (cosine
  under cos_threshold) and p[i] is behind q's tangent plane. side_*: (face
  normals, incidence start, incident faces, orientation sign)."""
  n_p = np.empty(3)
  n_q = np.empty(3)
  for i in range(p.shape[0]):
    k = j[i]
    if not dist[i] < lim:
      ok[i], j[i] = False, 0  # any valid index: the loss ignores it
      continue
    _normal(side_p[0], side_p[1], side_p[2], side_p[3], i, n_p)
    _normal(side_q[0], side_q[1], side_q[2], side_q[3], k, n_q)
    cos = n_p[0] * n_q[0] + n_p[1] * n_q[1] + n_p[2] * n_q[2]
    behind = ((p[i, 0] - np.float64(q[k, 0])) * n_q[0] + (p[i, 1] - np.float64(q[k, 1])) * n_q[1]
              + (p[i, 2] - np.float64(q[k, 2])) * n_q[2])
    ok[i] = cos < cos_threshold and behind < -CONTACT_EPS


@numba.njit(nogil=True, cache=True)
def _candidates_pair(va, vb, mesh_a, mesh_b, ids_a, ids_b, max_sq, cos_threshold, j_ab, ok_ab,
                     j_ba, ok_ba):
  faces_a, start_a, inc_a = mesh_a
  faces_b, start_b, inc_b = mesh_b
  fn_a = np.empty((faces_a.shape[0], 3))
  fn_b = np.empty((faces_b.shape[0], 3))
  da = np.empty(va.shape[0], np.float32)
  db = np.empty(vb.shape[0], np.float32)
  nearest_lib.nearest_pair(va, vb, ids_a, ids_b, max_sq, da, j_ab, db, j_ba)
  side_a = (fn_a, start_a, inc_a, _face_normals(va, faces_a, fn_a))
  side_b = (fn_b, start_b, inc_b, _face_normals(vb, faces_b, fn_b))
  # Pairs just over the threshold are kept (the loss tests the distance).
  lim = max_sq * np.float32(1 + 2.0 ** -20)
  _mark(va, vb, side_a, side_b, da, j_ab, lim, cos_threshold, ok_ab)
  _mark(vb, va, side_b, side_a, db, j_ba, lim, cos_threshold, ok_ba)


@numba.njit(nogil=True, cache=True)
def _loss_one_way(p, q, j, ok, max_sq, rho_sq, g_p, g_q):
  """_one_way's value (float64) and its gradient, added into g_p and g_q:
  gmof(r^2) over the marked pairs within the threshold, r^2 in float32 as
  the jnp loss computes it."""
  total = 0.0
  for i in range(p.shape[0]):
    if not ok[i]:
      continue
    k = j[i]
    dx, dy, dz = p[i, 0] - q[k, 0], p[i, 1] - q[k, 1], p[i, 2] - q[k, 2]
    r_sq = dx * dx + dy * dy + dz * dz  # float32
    if not r_sq < max_sq:
      continue
    r = np.float64(r_sq)
    den = r + rho_sq
    total += rho_sq * r / den
    g = 2.0 * rho_sq * rho_sq / (den * den)  # d gmof / d r^2, times d r^2 / d diff = 2 diff
    gx, gy, gz = g * np.float64(dx), g * np.float64(dy), g * np.float64(dz)
    g_p[i, 0] += gx
    g_p[i, 1] += gy
    g_p[i, 2] += gz
    g_q[k, 0] -= gx
    g_q[k, 1] -= gy
    g_q[k, 2] -= gz
  return total


@numba.njit(nogil=True, cache=True)
def _loss_pair(va, vb, mesh_a, mesh_b, ids_a, ids_b, max_sq, cos_threshold, rho_sq, loss, g_a,
               g_b, j_ab, ok_ab, j_ba, ok_ba):
  """One pair: its marked pairs (_candidates_pair) into j_*/ok_*, then the
  loss into loss[0] and its gradient into g_a, g_b."""
  _candidates_pair(va, vb, mesh_a, mesh_b, ids_a, ids_b, max_sq, cos_threshold, j_ab, ok_ab,
                   j_ba, ok_ba)
  ga = np.zeros((va.shape[0], 3))
  gb = np.zeros((vb.shape[0], 3))
  total = (_loss_one_way(va, vb, j_ab, ok_ab, max_sq, rho_sq, ga, gb)
           + _loss_one_way(vb, va, j_ba, ok_ba, max_sq, rho_sq, gb, ga))
  loss[0] = total
  for i in range(va.shape[0]):
    for c in range(3):
      g_a[i, c] = ga[i, c]
  for i in range(vb.shape[0]):
    for c in range(3):
      g_b[i, c] = gb[i, c]


@numba.njit(nogil=True, cache=True)
def _loss_item(n, va, vb, fa, sa, ia_f, fb, sb, ib_f, ids_a, ids_b, max_sq, cos_threshold, rho_sq,
               loss, g_a, g_b, j_ab, ok_ab, j_ba, ok_ba):
  # Meshes as separate arrays: numba's parallel loop takes no tuple arguments.
  _loss_pair(va[n], vb[n], (fa, sa, ia_f), (fb, sb, ib_f), ids_a, ids_b, max_sq, cos_threshold,
             rho_sq, loss[n:n + 1], g_a[n], g_b[n], j_ab[n], ok_ab[n], j_ba[n], ok_ba[n])


_loss_batch = cpu_ffi.batch_loop(_loss_item)


def _make_loss_handler():
  threads = cpu_ffi.threads_ok()

  @numba.cfunc(cpu_ffi.HANDLER_SIG)
  def handler(frame):
    if not cpu_ffi.begin(frame):
      return cpu_ffi.null()
    d_a, d_b = cpu_ffi.dims(frame, 0), cpu_ffi.dims(frame, 1)
    d_ia, d_ib = cpu_ffi.dims(frame, 2), cpu_ffi.dims(frame, 3)
    n, nv, nw = d_a[0], d_a[1], d_b[1]
    va = numba.carray(cpu_ffi.data(frame, 0), (n, nv, 3), np.float32)
    vb = numba.carray(cpu_ffi.data(frame, 1), (n, nw, 3), np.float32)
    ia = numba.carray(cpu_ffi.data(frame, 2), (d_ia[0], d_ia[1]), np.int32)
    ib = numba.carray(cpu_ffi.data(frame, 3), (d_ib[0], d_ib[1]), np.int32)
    params = numba.carray(cpu_ffi.data(frame, 4), (3,), np.float32)
    fa, fb = cpu_ffi.dims(frame, 5)[0], cpu_ffi.dims(frame, 8)[0]
    mesh_a = (numba.carray(cpu_ffi.data(frame, 5), (fa, 3), np.int32),
              numba.carray(cpu_ffi.data(frame, 6), (nv + 1,), np.int32),
              numba.carray(cpu_ffi.data(frame, 7), (3 * fa,), np.int32))
    mesh_b = (numba.carray(cpu_ffi.data(frame, 8), (fb, 3), np.int32),
              numba.carray(cpu_ffi.data(frame, 9), (nw + 1,), np.int32),
              numba.carray(cpu_ffi.data(frame, 10), (3 * fb,), np.int32))
    loss = numba.carray(cpu_ffi.data(frame, 0, True), (n,), np.float32)
    g_a = numba.carray(cpu_ffi.data(frame, 1, True), (n, nv, 3), np.float32)
    g_b = numba.carray(cpu_ffi.data(frame, 2, True), (n, nw, 3), np.float32)
    j_ab = numba.carray(cpu_ffi.data(frame, 3, True), (n, nv), np.int32)
    ok_ab = numba.carray(cpu_ffi.data(frame, 4, True), (n, nv), np.bool_)
    j_ba = numba.carray(cpu_ffi.data(frame, 5, True), (n, nw), np.int32)
    ok_ba = numba.carray(cpu_ffi.data(frame, 6, True), (n, nw), np.bool_)
    rho_sq = np.float64(params[2]) * np.float64(params[2])
    _loss_batch(threads, n, va, vb, mesh_a[0], mesh_a[1], mesh_a[2], mesh_b[0], mesh_b[1],
                mesh_b[2], ia, ib, params[0], np.float64(params[1]), rho_sq, loss, g_a, g_b, j_ab,
                ok_ab, j_ba, ok_ba)
    return cpu_ffi.null()

  return handler


def _kernel_cpu(va, vb, faces_a, faces_b, params, ids_a, ids_b, inc_a, inc_b):
  """The CPU kernel, one call: (loss (N,), d loss / d va, d loss / d vb,
  j_ab, ok_ab, j_ba, ok_ba). params: (squared distance threshold, cos
  threshold, rho)."""
  n, nv, nw = va.shape[0], va.shape[1], vb.shape[1]
  shapes = (jax.ShapeDtypeStruct((n,), jnp.float32),
            jax.ShapeDtypeStruct((n, nv, 3), jnp.float32),
            jax.ShapeDtypeStruct((n, nw, 3), jnp.float32),
            jax.ShapeDtypeStruct((n, nv), jnp.int32), jax.ShapeDtypeStruct((n, nv), jnp.bool_),
            jax.ShapeDtypeStruct((n, nw), jnp.int32), jax.ShapeDtypeStruct((n, nw), jnp.bool_))
  return tuple(cpu_ffi.call('a2p_collision_loss', _make_loss_handler, shapes, va, vb, ids_a,
                            ids_b, params, faces_a, *inc_a, faces_b, *inc_b))


def _loss_grads_cpu(*args):
  """(loss, d loss / d va, d loss / d vb) of _one_way over the pairs the
  kernel marks."""
  return _kernel_cpu(*args)[:3]


def _candidates_cpu(va, vb, faces_a, faces_b, params, ids_a, ids_b, inc_a, inc_b):
  """(j_ab, ok_ab, j_ba, ok_ba) the kernel marks; params: (squared distance
  threshold, cos threshold)."""
  params = jnp.concatenate([params[:2], jnp.ones((1,), params.dtype)])
  return _kernel_cpu(va, vb, faces_a, faces_b, params, ids_a, ids_b, inc_a, inc_b)[3:]


# --- the loss ------------------------------------------------------------------


def _one_way(p, q, j, ok, max_sq, rho):
  """Loss from vertices p penetrating the surface sampled by q; j (P,): the
  nearest q of each p; ok (P,): normals oppose and p is behind q's plane;
  max_sq: the squared distance threshold."""
  diff = p - q[j]  # recomputed exactly so the gradient is the true one
  r_sq = jnp.sum(diff * diff, -1)
  hit = (r_sq < max_sq) & ok
  return jnp.sum(jnp.where(hit, gmof(r_sq, rho), 0.0))


def _dense_loss(va, vb, faces_a, faces_b, params):
  """(N,) loss of the dense search's pairs, plain jnp (any order of
  differentiation). params: (squared distance threshold, cos threshold, rho)."""
  cand = _candidates_dense(jax.lax.stop_gradient(va), jax.lax.stop_gradient(vb), faces_a,
                           faces_b, params[:2])

  def pair(a, b, j_ab, ok_ab, j_ba, ok_ba):
    return (_one_way(a, b, j_ab, ok_ab, params[0], params[2])
            + _one_way(b, a, j_ba, ok_ba, params[0], params[2]))

  return jax.vmap(pair)(va, vb, *cand)


def _dense_loss_grads(va, vb, faces_a, faces_b, params, *_):
  loss, pullback = jax.vjp(lambda a, b: _dense_loss(a, b, faces_a, faces_b, params), va, vb)
  return (loss,) + pullback(jnp.ones_like(loss))


def _loss_grads(va, vb, aux):
  return cpu_ffi.on_cpu(_loss_grads_cpu, _dense_loss_grads, va, vb, *aux)


@jax.custom_vjp
def _first_order_loss(va, vb, aux):
  """Float32 loss (N,) whose gradient comes with the value (one kernel call
  on the CPU); differentiable once, in reverse mode. aux: (faces_a,
  faces_b, params, ids_a, ids_b, incidence_a, incidence_b)."""
  return _loss_grads(va, vb, aux)[0]


def _first_order_fwd(va, vb, aux):
  value, ga, gb = _loss_grads(va, vb, aux)
  return value, (ga, gb)


def _first_order_bwd(res, ct):
  ga, gb = res
  return ct[:, None, None] * ga, ct[:, None, None] * gb, None


_first_order_loss.defvjp(_first_order_fwd, _first_order_bwd)


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

  On the CPU the pairs come from a pruned exact search (nearest.py) with
  float64 normals, and for float32 inputs the value and its gradient from
  that same kernel call (differentiable once, in reverse mode; float64
  inputs take the plain jnp loss, any order). Elsewhere the pairs come from
  the dense search; the pairs are the same
  (a float32 normal could flip a test whose cosine or depth is within ~1e-7
  of its threshold, as it can between batch sizes).
  """
  verts_a, verts_b = jnp.asarray(verts_a), jnp.asarray(verts_b)
  for name, v in (('verts_a', verts_a), ('verts_b', verts_b)):
    if v.ndim < 2 or v.shape[-1] != 3:
      raise ValueError(f'{name} must have shape (..., V, 3), got {v.shape}')
  # Topology-only inputs of the CPU search, computed once per face array.
  prune = [(jnp.asarray(nearest_lib.clusters(f, v.shape[-2])), _incidence(f, v.shape[-2]))
           for f, v in ((faces_a, verts_a), (faces_b, verts_b))]
  return _collision_jit(verts_a, jnp.asarray(faces_a, jnp.int32), verts_b,
                        jnp.asarray(faces_b, jnp.int32), prune, dist_threshold, cos_threshold, rho)


@jax.jit
def _collision_jit(verts_a, faces_a, verts_b, faces_b, prune, dist_threshold, cos_threshold,
                   rho):
  # Faces and thresholds are traced: one compilation per shape, not per value.
  batch = jnp.broadcast_shapes(verts_a.shape[:-2], verts_b.shape[:-2])
  va = jnp.broadcast_to(verts_a, batch + verts_a.shape[-2:]).reshape((-1,) + verts_a.shape[-2:])
  vb = jnp.broadcast_to(verts_b, batch + verts_b.shape[-2:]).reshape((-1,) + verts_b.shape[-2:])
  dtype = jnp.result_type(va.dtype, vb.dtype)
  params = jnp.stack([jnp.square(jnp.asarray(dist_threshold, jnp.float32)),
                      jnp.asarray(cos_threshold, jnp.float32), jnp.asarray(rho, jnp.float32)])
  if dtype != jnp.float32:
    return _dense_loss(va, vb, faces_a, faces_b, params).reshape(batch)
  (ids_a, inc_a), (ids_b, inc_b) = prune
  aux = (faces_a, faces_b, params, ids_a, ids_b, inc_a, inc_b)
  return _first_order_loss(va, vb, aux).reshape(batch)
