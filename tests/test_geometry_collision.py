"""Collision guidance loss: zero for separation and contact, pushes apart."""

import jax
import jax.numpy as jnp
import numpy as np

from a2p_jax import geometry

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
