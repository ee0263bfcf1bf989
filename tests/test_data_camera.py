"""Camera transforms, float64 rotations and moving MANO fits into camera space."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mano_jax
from a2p_jax.data import camera
from a2p_jax.data.hands import load_hand_models
from a2p_jax.geometry.camera import project


def random_rotation(rng, n=None):
  q = rng.normal(size=(4,) if n is None else (n, 4))
  q /= np.linalg.norm(q, axis=-1, keepdims=True)
  w, x, y, z = np.moveaxis(q, -1, 0)
  return np.stack([
      np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
      np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
      np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], -2)


def test_world_camera_round_trip():
  rng = np.random.default_rng(0)
  rot, pos = random_rotation(rng), rng.normal(0, 500, 3)
  pts = rng.normal(0, 300, (5, 7, 3))
  cam = camera.world_to_camera(pts, pos, rot)
  np.testing.assert_allclose(cam[2, 3], rot @ (pts[2, 3] - pos), atol=1e-9)
  np.testing.assert_allclose(camera.camera_to_world(cam, pos, rot), pts, atol=1e-9)


def test_project_vs_reference():
  rng = np.random.default_rng(1)
  pts = rng.normal(0, 0.1, (10, 3)) + [0, 0, 0.8]
  focal, princpt = np.array([1200.0, 1210.0]), np.array([160.0, 250.0])
  u = focal[0] * pts[:, 0] / pts[:, 2] + princpt[0]
  v = focal[1] * pts[:, 1] / pts[:, 2] + princpt[1]
  got = project(pts, focal, princpt)
  np.testing.assert_allclose(got, np.stack([u, v], -1), rtol=1e-12)
  # numpy in any dtype: float64 out; jax in: jax out in its dtype.
  assert project(pts.astype(np.float32), list(focal), princpt).dtype == np.float64
  # (1, 2) intrinsics: the tests run with jax_numpy_rank_promotion='raise'.
  got_jax = project(jnp.asarray(pts, jnp.float32), focal[None], princpt[None])
  assert isinstance(got_jax, jax.Array) and got_jax.dtype == jnp.float32
  np.testing.assert_allclose(got_jax, got, rtol=1e-5)


def test_rotations_vs_reference():
  rng = np.random.default_rng(2)
  aa = rng.normal(size=(64, 3))
  aa /= np.linalg.norm(aa, axis=-1, keepdims=True)
  # Angles from 0 to pi, including the hard ends.
  angles = np.concatenate([[0.0, 1e-10, 1e-5, np.pi - 1e-9, np.pi], rng.uniform(0, np.pi, 59)])
  aa = aa * angles[:, None]
  with jax.enable_x64(True):
    ref_mat = np.asarray(mano_jax.axis_angle_to_matrix(aa))
  mat = camera.axis_angle_to_matrix(aa)
  np.testing.assert_allclose(mat, ref_mat, atol=1e-12)
  back = camera.matrix_to_axis_angle(mat)
  # Same rotation (axis sign is ambiguous at exactly pi).
  np.testing.assert_allclose(camera.axis_angle_to_matrix(back), mat, atol=1e-12)
  not_pi = np.arange(len(aa)) != 4
  np.testing.assert_allclose(back[not_pi], aa[not_pi], atol=1e-9)


def test_rotation_checks():
  rng = np.random.default_rng(3)
  rot = random_rotation(rng)
  assert camera.rotation_error(rot) < 1e-12
  assert camera.rotation_error(rot * [1, 1, -1]) == float('inf')      # reflection
  assert camera.rotation_error(rot * 1.01) > 1e-3                   # scaled
  assert camera.rotation_error(np.full((3, 3), np.nan)) == float('inf')
  noisy = rot + 1e-6 * rng.normal(size=(3, 3))
  fixed = camera.nearest_rotation(noisy)
  assert camera.rotation_error(fixed) < 1e-12
  assert np.abs(fixed - rot).max() < 1e-5


def test_root_joint_is_forward_wrist():
  right, left = load_hand_models()
  rng = np.random.default_rng(4)
  for model in (right, left):
    shape = rng.normal(size=(2, 10))
    with jax.enable_x64(True):
      out = mano_jax.forward(model, rng.normal(0, 0.3, (2, 48)), shape, np.zeros((2, 3)))
      wrist = np.asarray(out.joints)[:, 0]
    np.testing.assert_allclose(camera.root_joint(model, shape), wrist, atol=1e-12)


@pytest.mark.parametrize('side', [0, 1])
def test_mano_fit_to_camera_exact(side):
  """MANO on the moved fit == the world mesh moved by the camera, to 1e-9 m."""
  model = load_hand_models()[side]
  rng = np.random.default_rng(5 + side)
  pose = rng.normal(0, 0.4, 48)
  pose[:3] = rng.normal(size=3)
  pose[:3] *= 2.9 / np.linalg.norm(pose[:3])      # large global orient
  shape, trans = rng.normal(0, 1, 10), rng.normal(0, 0.3, 3)
  rot, campos = random_rotation(rng), rng.normal(0, 1000, 3)
  pose_c, trans_c = camera.mano_fit_to_camera(pose, trans, camera.root_joint(model, shape),
                                              campos, rot)
  np.testing.assert_array_equal(pose_c[3:], pose[3:])
  with jax.enable_x64(True):
    world = mano_jax.forward(model, pose, shape, trans)
    cam = mano_jax.forward(model, pose_c, shape, trans_c)
    want_v = camera.world_to_camera(np.asarray(world.vertices) * 1000, campos, rot) / 1000
    want_j = camera.world_to_camera(np.asarray(world.joints) * 1000, campos, rot) / 1000
    np.testing.assert_allclose(np.asarray(cam.vertices), want_v, atol=1e-9)
    np.testing.assert_allclose(np.asarray(cam.joints), want_j, atol=1e-9)


def test_bbox_of_points():
  uv = np.array([[10.0, 20.0], [30.0, 5.0], [np.nan, 1.0], [100.0, 100.0]])
  np.testing.assert_allclose(camera.bbox_of_points(uv, [1, 1, 1, 0]), [10, 5, 20, 15])
  assert camera.bbox_of_points(uv, [0, 0, 0, 0]) is None
