"""Collision guidance loss: zero for separation and contact, pushes apart."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mano_jax
from a2p_jax import geometry
from a2p_jax.geometry import collision as coll_lib
from a2p_jax.geometry import nearest

try:
  from tests import geometry_meshes as meshes
except ImportError:
  import geometry_meshes as meshes


def _loss_at(shift, va, fa, vb, fb, **kw):
  return geometry.collision_loss(va + shift[None], fa, vb, fb, **kw)


def test_separated_is_zero():
  v, f = meshes.sphere()
  assert float(geometry.collision_loss(v, f, v + np.float32([0.021, 0, 0]), f)) == 0.0


def test_touching_boxes_are_contact():
  # Face-to-face contact: opposing normals, nothing behind the other surface.
  va, fa = meshes.box()
  vb, fb = meshes.box(centre=(0.02, 0.0, 0.0))
  assert float(geometry.collision_loss(va, fa, vb, fb)) == 0.0


def test_aligned_normals_are_not_penetration():
  # A slightly smaller concentric sphere: every vertex is just inside the other
  # surface, but the normals are aligned (sliding contact), so no cost...
  v, f = meshes.sphere()
  inner = v * np.float32(0.97)
  assert float(geometry.collision_loss(inner, f, v, f)) == 0.0
  # ...and it is the normal test that says so: accept any normals and it costs.
  assert float(geometry.collision_loss(inner, f, v, f, cos_threshold=1.01)) > 0.0
  # Face lists of either orientation give the same loss (orientation is detected).
  vb = v + np.float32([0.017, 0.0, 0.0])
  np.testing.assert_allclose(geometry.collision_loss(v, f[:, ::-1], vb, f),
                             geometry.collision_loss(v, f, vb, f), rtol=1e-6)


def test_penetrating_spheres_positive_and_pushed_apart():
  v, f = meshes.sphere()
  vb = v + np.float32([0.017, 0.0, 0.0])
  loss, grad = jax.value_and_grad(_loss_at)(jnp.zeros(3), jnp.asarray(v), f, jnp.asarray(vb), f)
  assert float(loss) > 0
  # Sphere a sits at -x of sphere b: descending the loss moves a towards -x.
  assert grad[0] > 0 and abs(grad[1]) < 0.1 * grad[0] and abs(grad[2]) < 0.1 * grad[0]
  # A few gradient steps reduce the loss.
  shift = jnp.zeros(3)
  for _ in range(5):
    shift = shift - 2.0 * jax.grad(_loss_at)(shift, v, f, vb, f)
  assert float(_loss_at(shift, v, f, vb, f)) < float(loss)


def test_batch_jit_vmap_matches_single_and_finite():
  v, f = meshes.sphere(subdivisions=2)
  shifts = np.float32([[0.015, 0, 0], [0.019, 0.001, 0], [0.03, 0, 0], [0.0, 0.0, 0.0]])
  vb = v[None] + shifts[:, None]
  fn = jax.jit(jax.value_and_grad(lambda a, b: jnp.sum(geometry.collision_loss(a, f, b, f)),
                                  argnums=(0, 1)))
  va = jnp.broadcast_to(v, vb.shape)
  total, (ga, gb) = fn(va, vb)
  singles = [float(geometry.collision_loss(v, f, vb[i], f)) for i in range(len(shifts))]
  np.testing.assert_allclose(float(total), sum(singles), rtol=1e-5)
  per_pair = geometry.collision_loss(va, f, vb, f)
  assert per_pair.shape == (4,)
  np.testing.assert_allclose(per_pair, singles, rtol=1e-5)
  # Pair 4 is two coincident meshes (zero distances): still no NaN.
  assert np.all(np.isfinite(ga)) and np.all(np.isfinite(gb))


def test_gmof():
  r2 = jnp.asarray([0.0, 1e-6, 1.0])
  np.testing.assert_allclose(geometry.gmof(r2, 0.01), [0.0, 1e-6 * 1e-4 / (1e-6 + 1e-4), 1e-4 / 1.0001],
                             rtol=1e-5)
  assert np.isfinite(jax.grad(lambda x: geometry.gmof(x, 0.01))(0.0))


def test_nearest_both_ways_is_numpy_argmin_both_directions():
  from a2p_jax.geometry import collision as coll
  rng = np.random.default_rng(7)
  for p_n, q_n in ((50, 70), (70, 50)):
    a = rng.normal(size=(p_n, 3)).astype(np.float32)
    b = rng.normal(size=(q_n, 3)).astype(np.float32)
    b[:3] = a[:3]  # exact zero distances
    b[3] = b[4]    # a tie: the first index wins
    i, j = coll.nearest_both_ways(a, b)
    sq = ((a[:, None].astype(np.float64) - b[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(i, np.argmin(sq, 1))
    np.testing.assert_array_equal(j, np.argmin(sq, 0))
    np.testing.assert_array_equal(coll.nearest_vertex(a, b), np.argmin(sq, 1))


# --- The loss before issue 20 in float64 numpy: the reference for the pruned search.


def _reference_normals(v, f):
  """mano_jax.vertex_normals * normals.orientation, float64."""
  fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
  n = np.zeros_like(v)
  for k in range(3):
    np.add.at(n, f[:, k], fn)
  length = np.linalg.norm(n, axis=-1, keepdims=True)
  n = np.where(length > 0, n / np.where(length > 0, length, 1.0), 0.0)
  t = v[f] - v.mean(0)
  vol = np.sum(t[:, 0] * np.cross(t[:, 1], t[:, 2]))
  return n * (1.0 if vol >= 0 else -1.0)


def _reference_loss(va, fa, vb, fb, dist=0.02, cos=0.0, rho=0.01):
  """(loss, d loss / d va, d loss / d vb) of one pair, float64."""
  va, vb = np.asarray(va, np.float64), np.asarray(vb, np.float64)
  na, nb = _reference_normals(va, fa), _reference_normals(vb, fb)
  sq = ((va[:, None] - vb[None]) ** 2).sum(-1)
  loss, ga, gb = 0.0, np.zeros_like(va), np.zeros_like(vb)
  for p, q, n_p, n_q, j, gp, gq in ((va, vb, na, nb, sq.argmin(1), ga, gb),
                                    (vb, va, nb, na, sq.argmin(0), gb, ga)):
    diff = p - q[j]
    r2 = (diff * diff).sum(-1)
    hit = ((r2 < dist ** 2) & ((n_p * n_q[j]).sum(-1) < cos)
           & ((diff * n_q[j]).sum(-1) < -coll_lib.CONTACT_EPS))
    loss += np.sum(np.where(hit, rho ** 2 * r2 / (r2 + rho ** 2), 0.0))
    g = np.where(hit, rho ** 4 / (r2 + rho ** 2) ** 2, 0.0)[:, None] * 2 * diff
    gp += g
    np.add.at(gq, j, -g)
  return loss, ga, gb


@pytest.fixture(scope='module')
def hand_pairs():
  """12 procedural-hand pairs (NOT MANO) in random poses, the left pushed into
  the right by 0 to ~2 cm."""
  rng = np.random.default_rng(1)
  right, left = mano_jax.load_procedural('right'), mano_jax.load_procedural('left')
  pose = lambda: jnp.asarray(rng.normal(size=(12, 48)) * 0.1, jnp.float32)  # noqa: E731
  vr = np.asarray(mano_jax.forward(right, pose()).vertices)
  vl = np.asarray(mano_jax.forward(left, pose()).vertices)
  shift = np.stack([rng.uniform(0.0, 0.1, 12), rng.uniform(-0.01, 0.01, 12),
                    rng.uniform(0.062, 0.075, 12)], 1).astype(np.float32)
  return vr, np.asarray(right.faces), vl + shift[:, None], np.asarray(left.faces)


def test_loss_and_grad_equal_the_float64_reference(hand_pairs):
  vr, fr, vl, fl = hand_pairs
  fn = jax.jit(jax.vmap(jax.value_and_grad(
      lambda a, b: geometry.collision_loss(a, fr, b, fl), argnums=(0, 1))))
  loss, (ga, gb) = fn(vr, vl)
  # Batched (one kernel call for all pairs) and one pair at a time agree.
  single = jax.jit(jax.value_and_grad(
      lambda a, b: geometry.collision_loss(a, fr, b, fl), argnums=(0, 1)))
  assert np.sum(np.asarray(loss) > 0) >= 8
  for k in range(len(vr)):
    ref, ref_a, ref_b = _reference_loss(vr[k], fr, vl[k], fl)
    np.testing.assert_allclose(float(loss[k]), ref, rtol=1e-6, err_msg=f'pair {k}')
    scale = max(np.abs(ref_a).max(), np.abs(ref_b).max(), 1e-30)
    np.testing.assert_allclose(ga[k], ref_a, rtol=0, atol=1e-6 * scale, err_msg=f'pair {k}')
    np.testing.assert_allclose(gb[k], ref_b, rtol=0, atol=1e-6 * scale, err_msg=f'pair {k}')
    one, (one_a, one_b) = single(vr[k], vl[k])  # sums may round differently
    np.testing.assert_allclose(float(one), float(loss[k]), rtol=1e-6)
    np.testing.assert_allclose(one_a, ga[k], rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(one_b, gb[k], rtol=0, atol=1e-6 * scale)


def test_cpu_kernel_pairs_equal_the_dense_path(hand_pairs):
  # The CPU search (pruned, float64 normals) and the dense search of other
  # backends mark the same pairs.
  vr, fr, vl, fl = hand_pairs
  params = jnp.asarray([0.02 ** 2, 0.0], jnp.float32)
  fa, fb = jnp.asarray(fr, jnp.int32), jnp.asarray(fl, jnp.int32)
  dense = jax.jit(coll_lib._candidates_dense)(vr, vl, fa, fb, params)
  ids = [jnp.asarray(nearest.clusters(f, 833)) for f in (fr, fl)]
  inc = [coll_lib._incidence(f, 833) for f in (fr, fl)]
  cpu = jax.jit(coll_lib._candidates_cpu)(vr, vl, fa, fb, params, *ids, *inc)
  dist2 = nearest.sq_dists(vr, vl)
  for j_d, ok_d, j_c, ok_c, near in ((dense[0], dense[1], cpu[0], cpu[1], dist2.min(-1)),
                                      (dense[2], dense[3], cpu[2], cpu[3], dist2.min(-2))):
    within = np.asarray(near < 0.02 ** 2)
    np.testing.assert_array_equal(np.asarray(ok_c), np.asarray(ok_d) & within)
    np.testing.assert_array_equal(np.asarray(j_c)[within], np.asarray(j_d)[within])


def test_traced_faces_and_vmap_give_the_same_loss(hand_pairs):
  vr, fr, vl, fl = hand_pairs
  want = np.asarray(geometry.collision_loss(vr, fr, vl, fl))
  # Faces as jit arguments: index-order clusters and a traced incidence table.
  traced = jax.jit(lambda a, fa, b, fb: geometry.collision_loss(a, fa, b, fb))(vr, fr, vl, fl)
  np.testing.assert_allclose(np.asarray(traced), want, rtol=1e-6)
  mapped = jax.vmap(lambda a, b: geometry.collision_loss(a, fr, b, fl))(vr, vl)
  np.testing.assert_allclose(np.asarray(mapped), want, rtol=1e-6)
  # Broadcast leading dims: one right hand against all left hands.
  np.testing.assert_allclose(np.asarray(geometry.collision_loss(vr[0], fr, vl, fl))[0], want[0],
                             rtol=1e-6)
