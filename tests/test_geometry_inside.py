"""The CPU kernels of geometry/inside.py (winding number, point-to-surface
distance) against a float64 numpy transcription of the same tests and
against the jnp paths, on procedural-hand pairs, batched and under vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mano_jax
from a2p_jax.geometry import inside


@pytest.fixture(scope='module')
def pair():
  """A right and a left procedural hand (NOT MANO) pushed into each other,
  rotated into the generic frame, and query points around both."""
  rng = np.random.default_rng(5)
  right, left = mano_jax.load_procedural('right'), mano_jax.load_procedural('left')
  pose = lambda: jnp.asarray(rng.normal(size=(3, 48)) * 0.1, jnp.float32)  # noqa: E731
  vr = np.asarray(mano_jax.forward(right, pose()).vertices)
  vl = np.asarray(mano_jax.forward(left, pose()).vertices) + np.float32([0.03, 0.0, 0.066])
  rot = inside.GENERIC_ROTATION
  tri = (vr @ rot.T)[:, np.asarray(right.faces)].astype(np.float32)  # (3, F, 3, 3)
  lo, hi = vr.min((0, 1)), vr.max((0, 1))
  box = rng.uniform(lo - 0.01, hi + 0.01, (3, 400, 3))
  points = np.concatenate([vl, box], 1) @ rot.T
  return points.astype(np.float32), tri


def _winding64(points, tri):
  """+z ray crossings in float64: +1 for an up-facing face above the point,
  -1 for a down-facing one (a point strictly inside the face's xy shadow)."""
  p = points.astype(np.float64)[:, None]
  t = tri.astype(np.float64)[None]
  a, b, c = t[..., 0, :] - p, t[..., 1, :] - p, t[..., 2, :] - p
  w0 = b[..., 0] * c[..., 1] - b[..., 1] * c[..., 0]
  w1 = c[..., 0] * a[..., 1] - c[..., 1] * a[..., 0]
  w2 = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
  up, down = (w0 > 0) & (w1 > 0) & (w2 > 0), (w0 < 0) & (w1 < 0) & (w2 < 0)
  height = w0 * a[..., 2] + w1 * b[..., 2] + w2 * c[..., 2]
  return np.sum(up & (height > 0), -1) - np.sum(down & (height < 0), -1)


def _surface64(points, tri):
  with jax.enable_x64():
    t = jnp.asarray(tri, jnp.float64)
    sq = inside.point_triangle_sqdist(jnp.asarray(points, jnp.float64)[:, None], t[None, :, 0],
                                      t[None, :, 1], t[None, :, 2])
    return np.asarray(jnp.min(sq, -1))


def test_winding_kernel_equals_float64_crossings(pair):
  points, tri = pair
  # One kernel call over the batch under vmap, and one per pair.
  got = np.asarray(jax.jit(jax.vmap(inside.winding))(points, tri))
  assert got.shape == points.shape[:2]
  for n in range(len(points)):
    want = _winding64(points[n], tri[n])
    np.testing.assert_array_equal(got[n], want)
    assert 20 < np.sum(want == 1) < len(want) - 20  # both sides are exercised
  # The jnp path (other backends) agrees but for points within float32
  # rounding of a face's shadow edge or plane: none here.
  dense = np.asarray(inside.crossing_winding(jnp.asarray(points[0]),
                                             inside.ray_tables(jnp.asarray(tri[0]))))
  np.testing.assert_array_equal(got[0], dense)
  np.testing.assert_array_equal(np.asarray(jax.jit(inside.winding)(points[1], tri[1])), got[1])


def test_surface_sqdist_kernel_equals_float64_min_over_faces(pair):
  points, tri = pair
  verts = tri.reshape(len(tri), -1, 3)
  # The bound the callers pass: the squared distance to the nearest vertex.
  bound = np.min(((points[:, :, None] - verts[:, None]) ** 2).sum(-1), -1).astype(np.float32)
  got = np.asarray(jax.jit(jax.vmap(inside.surface_sqdist))(points, tri, bound))
  single = np.asarray(jax.jit(inside.surface_sqdist)(points[1], tri[1], bound[1]))
  np.testing.assert_array_equal(single, got[1])
  for n in range(len(points)):
    want = _surface64(points[n], tri[n])
    np.testing.assert_allclose(got[n], want, rtol=1e-5, atol=1e-12)
    assert np.all(got[n] <= bound[n] * (1 + 1e-5))
  # A bound that is no surface point's still gives the true distance.
  loose = np.asarray(inside.surface_sqdist(points[0], tri[0], np.zeros_like(bound[0])))
  np.testing.assert_allclose(loose, _surface64(points[0], tri[0]), rtol=1e-5, atol=1e-12)
