"""Sealing and normals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from a2p_jax import geometry

try:
  from tests import geometry_meshes as meshes
except ImportError:
  import geometry_meshes as meshes


def _trimesh(v, f):
  return trimesh.Trimesh(np.asarray(v, np.float64), np.asarray(f), process=False)


def test_boundary_loops_open_sphere():
  v, f = meshes.open_sphere()
  loops = geometry.boundary_loops(f)
  assert len(loops) == 1
  assert len(geometry.boundary_loops(meshes.sphere()[1])) == 0


def test_seal_is_watertight_and_outward():
  v, f = meshes.open_sphere()
  sv, sf = geometry.seal(jnp.asarray(v), f)
  loop = geometry.boundary_loops(f)[0]
  assert sv.shape == (len(v) + 1, 3) and sf.shape == (len(f) + len(loop), 3)
  np.testing.assert_array_equal(sf[:len(f)], f)
  m = _trimesh(sv, sf)
  assert m.is_watertight and m.is_winding_consistent
  assert m.volume > 0  # outward
  np.testing.assert_allclose(sv[-1], v[loop].mean(0), atol=1e-7)


def test_seal_numpy_in_numpy_out():
  """numpy vertices (CPU geometry in float64, e.g. the synthetic set's contact
  placement) get numpy back: the same outward caps as the jax path."""
  v, f = meshes.open_sphere()
  v64 = np.asarray(v, np.float64)
  sv, sf = geometry.seal(v64, f)
  assert isinstance(sv, np.ndarray) and sv.dtype == np.float64
  jv, jf = geometry.seal(jnp.asarray(v), f)
  np.testing.assert_array_equal(sf, jf)
  np.testing.assert_allclose(sv, jv, atol=1e-7)
  np.testing.assert_allclose(sv[-1], v64[geometry.boundary_loops(f)[0]].mean(0), atol=1e-15)
  m = _trimesh(sv, sf)
  assert m.is_watertight and m.is_winding_consistent and m.volume > 0


def test_seal_closed_mesh_is_identity():
  v, f = meshes.sphere()
  sv, sf = geometry.seal(jnp.asarray(v), f)
  np.testing.assert_array_equal(sv, v)
  np.testing.assert_array_equal(sf, f)


def test_seal_two_loops_and_rings_same_volume():
  tube = trimesh.creation.cylinder(radius=0.01, height=0.04, sections=16)
  v, f = np.asarray(tube.vertices, np.float32), np.asarray(tube.faces)
  # Drop both end caps (faces whose normal is along z).
  n = np.asarray(tube.face_normals)
  f = f[np.abs(n[:, 2]) < 0.5]
  assert len(geometry.boundary_loops(f)) == 2
  closed = _trimesh(*geometry.seal(jnp.asarray(v), f))
  ringed = _trimesh(*geometry.make_sealer(f, len(v), n_rings=4)(jnp.asarray(v)))
  assert closed.is_watertight and ringed.is_watertight
  np.testing.assert_allclose(ringed.volume, closed.volume, rtol=1e-5)
  np.testing.assert_allclose(closed.volume, tube.volume, rtol=1e-4)


def test_seal_jit_vmap_grad():
  v, f = meshes.open_sphere()
  sealer = geometry.make_sealer(f, len(v))
  batch = jnp.stack([v, v * 2.0])
  out = jax.jit(lambda x: sealer(x)[0])(batch)
  np.testing.assert_allclose(out[1], 2.0 * out[0], rtol=1e-6)
  g = jax.grad(lambda x: jnp.sum(sealer(x)[0][-1]))(jnp.asarray(v))
  assert np.all(np.isfinite(g))


def test_seal_errors():
  v, f = meshes.open_sphere()
  with pytest.raises(TypeError, match='static topology'):
    jax.jit(lambda x, ff: geometry.seal(x, ff)[0])(jnp.asarray(v), jnp.asarray(f))
  with pytest.raises(ValueError, match='vertices'):
    geometry.make_sealer(f, len(v))(jnp.zeros((len(v) + 1, 3)))


def test_vertex_normals_sphere_radial_and_finite_grad():
  v, f = meshes.sphere()
  n = geometry.vertex_normals(jnp.asarray(v), f)
  radial = v / np.linalg.norm(v, axis=1, keepdims=True)
  assert np.min(np.sum(np.asarray(n) * radial, 1)) > 0.99
  # A degenerate mesh (all vertices at one point) must not give NaN gradients.
  g = jax.grad(lambda x: jnp.sum(geometry.vertex_normals(x, f)))(jnp.zeros_like(jnp.asarray(v)))
  assert np.all(np.isfinite(g))
