"""Rotation conversions vs scipy, gradients at 0 and pi, normals, export."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

import mano_jax
from mano_jax import rotations


def _random_aa(rng, n, max_angle=np.pi):
  axis = rng.normal(size=(n, 3))
  axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
  return axis * rng.uniform(0, max_angle, (n, 1))


def test_conversions_vs_scipy():
  rng = np.random.default_rng(0)
  aa = np.concatenate([_random_aa(rng, 200), np.zeros((1, 3)),
                       [[1e-9, 0, 0], [0, np.pi - 1e-7, 0], [1e-4, -2e-4, 3e-4]]])
  with jax.enable_x64(True):
    rm = np.asarray(rotations.axis_angle_to_matrix(aa))
    np.testing.assert_allclose(rm, Rotation.from_rotvec(aa).as_matrix(), atol=1e-13)
    back = np.asarray(rotations.matrix_to_axis_angle(rm))
    np.testing.assert_allclose(Rotation.from_rotvec(back.copy()).as_matrix(), rm, atol=1e-12)
    small = np.linalg.norm(aa, axis=-1) < np.pi - 1e-3
    np.testing.assert_allclose(back[small], aa[small], atol=1e-12)
    q = np.asarray(rotations.axis_angle_to_quaternion(aa))
    sq = Rotation.from_rotvec(aa).as_quat()[:, [3, 0, 1, 2]]  # scipy is (x, y, z, w)
    sq *= np.sign(sq[:, :1] + 1e-300)
    np.testing.assert_allclose(q * np.sign(q[:, :1] + 1e-300), sq, atol=1e-13)
    d6 = np.asarray(rotations.matrix_to_rot6d(rm))
    np.testing.assert_allclose(np.asarray(rotations.rot6d_to_matrix(d6)), rm, atol=1e-13)
    # Any non-degenerate 6-vector decodes to a proper rotation.
    r = np.asarray(rotations.rot6d_to_matrix(rng.normal(size=(50, 6))))
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)


@pytest.mark.parametrize('fn,x', [
    (rotations.axis_angle_to_matrix, np.zeros(3)),
    (rotations.axis_angle_to_quaternion, np.zeros(3)),
    (rotations.matrix_to_axis_angle, np.eye(3)),
    (rotations.matrix_to_axis_angle, Rotation.from_rotvec([0, 0, np.pi - 1e-6]).as_matrix()),
    (rotations.rot6d_to_matrix, np.eye(3)[:2].ravel()),
])
def test_gradients_finite(fn, x):
  g = jax.grad(lambda y: jnp.sum(jnp.sin(fn(y))))(jnp.asarray(x, jnp.float32))
  assert np.all(np.isfinite(np.asarray(g)))


def test_matrix_to_axis_angle_gradient_at_identity_is_exact():
  # d log(R) / dR at R = I is the vee of the skew part: check one entry.
  with jax.enable_x64(True):
    g = jax.jacobian(rotations.matrix_to_axis_angle)(jnp.eye(3))
  np.testing.assert_allclose(g[0, 2, 1], 0.5, atol=1e-8)
  np.testing.assert_allclose(g[0, 1, 2], -0.5, atol=1e-8)


def test_vertex_normals_sphere_and_hand():
  s = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
  n = np.asarray(mano_jax.vertex_normals(jnp.asarray(s.vertices, jnp.float32), s.faces))
  radial = s.vertices / np.linalg.norm(s.vertices, axis=-1, keepdims=True)
  assert np.min(np.sum(n * radial, -1)) > 0.999
  # Procedural hand: normals point out, so the normals' flux out of the mesh
  # is positive (outward winding), and every vertex gets a unit normal.
  m = mano_jax.load_procedural('right')
  n = np.asarray(mano_jax.vertex_normals(m.v_template, m.faces))
  np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
  c = m.v_template.mean(0)
  assert np.mean(np.sum(n * (m.v_template - c), -1) > 0) > 0.8
  # Batched input.
  nb = mano_jax.vertex_normals(np.stack([m.v_template] * 2), m.faces)
  assert nb.shape == (2, m.num_vertices, 3)


@pytest.mark.parametrize('ext', ['obj', 'ply'])
def test_export_round_trip(tmp_path, ext):
  m = mano_jax.load_procedural('left')
  out = mano_jax.forward(m, np.zeros(48))
  path = tmp_path / f'hand.{ext}'
  mano_jax.export_mesh(path, out.vertices, m.faces)
  back = trimesh.load(path, process=False)
  np.testing.assert_allclose(back.vertices, out.vertices, atol=1e-6)
  np.testing.assert_array_equal(back.faces, m.faces)
  with pytest.raises(ValueError, match='extension'):
    mano_jax.export_mesh(tmp_path / 'hand.stl', out.vertices, m.faces)


def test_procedural_hand_is_a_closed_hand_open_at_the_wrist():
  for side in ('right', 'left'):
    m = mano_jax.load_procedural(side)
    mesh = trimesh.Trimesh(np.asarray(m.v_template), np.asarray(m.faces), process=False)
    assert mesh.is_winding_consistent
    # Every edge is shared by two faces except one boundary loop (the wrist).
    edges, counts = np.unique(mesh.edges_sorted, axis=0, return_counts=True)
    boundary = edges[counts == 1]
    assert set(np.unique(counts)) == {1, 2}
    assert len(boundary) == len(np.unique(boundary))  # a single simple loop
    assert 'NOT MANO' in m.name
    # Hand-sized: 15-25 cm long, the fingertips are the extreme vertices.
    ext = np.ptp(np.asarray(m.v_template), axis=0)
    assert 0.15 < ext.max() < 0.25
    j = np.asarray(mano_jax.forward(m, np.zeros(48), flat_hand_mean=True).joints)
    assert np.all(np.linalg.norm(j[16:] - j[0], axis=-1) > 0.07)
