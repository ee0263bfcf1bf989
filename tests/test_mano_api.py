"""mano_jax public API: shapes, transformations, errors, joint orders, mirroring."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mano_jax
from mano_jax import joints as joints_lib


@pytest.fixture(scope='module')
def right():
  return mano_jax.load_procedural('right').astype(jnp.float32)


@pytest.fixture(scope='module')
def left():
  return mano_jax.load_procedural('left').astype(jnp.float32)


@pytest.mark.parametrize('batch', [(), (2,), (2, 3)])
def test_batch_shapes(right, batch):
  nv = right.num_vertices
  pose = jnp.full(batch + (48,), 0.1)
  out = mano_jax.forward(right, pose)
  assert out.vertices.shape == batch + (nv, 3)
  assert out.joints.shape == batch + (21, 3)
  assert out.transforms.shape == batch + (16, 4, 4)
  # Batched result equals the unbatched one, element by element.
  single = mano_jax.forward(right, pose.reshape(-1, 48)[0])
  np.testing.assert_allclose(out.vertices.reshape(-1, nv, 3)[0], single.vertices,
                             atol=1e-6)


def test_betas_and_transl_broadcast(right):
  pose = jnp.zeros((48,))
  betas = jnp.linspace(-1, 1, 30).reshape(3, 10)
  transl = jnp.array([0.1, 0.0, 0.0])
  out = mano_jax.forward(right, pose, betas, transl)
  assert out.vertices.shape == (3, right.num_vertices, 3)
  one = mano_jax.forward(right, pose, betas[1], transl)
  np.testing.assert_allclose(out.vertices[1], one.vertices, atol=1e-6)
  # Fewer betas than the model has = trailing zeros.
  five = mano_jax.forward(right, pose, betas[:, :5])
  padded = mano_jax.forward(right, pose, betas.at[:, 5:].set(0.0))
  np.testing.assert_allclose(five.vertices, padded.vertices, atol=1e-7)


def test_jit_vmap_single_trace(right):
  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(pose, betas):
    return mano_jax.forward(right, pose, betas).vertices

  rng = np.random.default_rng(0)
  for _ in range(3):
    pose = jnp.asarray(rng.normal(0, 0.3, (4, 48)), jnp.float32)
    betas = jnp.asarray(rng.normal(0, 1, (4, 10)), jnp.float32)
    out = f(pose, betas)
  vm = jax.vmap(lambda p, b: mano_jax.forward(right, p, b).vertices)(pose, betas)
  np.testing.assert_allclose(out, vm, atol=1e-6)


def test_model_passes_through_jit_as_argument(right):
  f = jax.jit(lambda m, p: mano_jax.forward(m, p).joints)
  a = f(right, jnp.zeros(48))
  b = mano_jax.forward(right, jnp.zeros(48)).joints
  np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize('pose_repr,flat', [
    ('axis_angle', True), ('axis_angle', False), ('pca', True),
    ('rotmat', True), ('rotmat', False), ('rot6d', False)])
def test_gradients_finite_at_identity(right, pose_repr, flat):
  # The exact zero rotation is where naive Rodrigues / log maps give NaN.
  pose = {'axis_angle': jnp.zeros(48), 'pca': jnp.zeros(9),
          'rotmat': jnp.broadcast_to(jnp.eye(3), (16, 3, 3)),
          'rot6d': jnp.broadcast_to(jnp.eye(3)[:2].reshape(6), (16, 6))}[pose_repr]

  def loss(p, b):
    out = mano_jax.forward(right, p, b, pose_repr=pose_repr, flat_hand_mean=flat)
    return jnp.sum(out.vertices ** 2) + jnp.sum(out.joints ** 2)

  gp, gb = jax.grad(loss, argnums=(0, 1))(pose, jnp.zeros(10))
  assert np.all(np.isfinite(gp)) and np.all(np.isfinite(gb))
  assert np.any(gp != 0) and np.any(gb != 0)


def test_gradient_matches_finite_differences():
  model = mano_jax.load_procedural('right')
  rng = np.random.default_rng(3)
  pose = rng.normal(0, 0.4, 48)
  betas = rng.normal(0, 1, 10)
  w = rng.normal(0, 1, (model.num_vertices, 3))
  with jax.enable_x64(True):
    f = lambda p, b: jnp.sum(mano_jax.forward(model, p, b).vertices * w)
    gp, gb = jax.grad(f, argnums=(0, 1))(pose, betas)
    eps = 1e-6
    for i in (0, 5, 20, 47):
      e = np.zeros(48)
      e[i] = eps
      fd = (f(pose + e, betas) - f(pose - e, betas)) / (2 * eps)
      np.testing.assert_allclose(gp[i], fd, rtol=1e-5, atol=1e-8)
    e = np.zeros(10)
    e[2] = eps
    fd = (f(pose, betas + e) - f(pose, betas - e)) / (2 * eps)
    np.testing.assert_allclose(gb[2], fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize('kwargs,match', [
    (dict(pose=np.zeros(47)), r'\(\.\.\., 48\)'),
    (dict(pose=np.zeros(48), betas=np.zeros(11)), 'betas'),
    (dict(pose=np.zeros(48), transl=np.zeros(2)), 'transl'),
    (dict(pose=np.zeros(3 + 46), pose_repr='pca'), 'pca'),
    (dict(pose=np.zeros(3), pose_repr='pca'), 'pca'),
    (dict(pose=np.zeros((16, 3)), pose_repr='rotmat'), r'16, 3, 3'),
    (dict(pose=np.zeros((15, 6)), pose_repr='rot6d'), r'16, 6'),
    (dict(pose=np.zeros(48), pose_repr='quat'), 'pose_repr'),
    (dict(pose=np.zeros(48), joint_order='coco'), 'joint_order'),
    (dict(pose=np.full(48, np.nan)), 'NaN'),
    (dict(pose=np.zeros((2, 48)), betas=np.zeros((3, 10))), 'broadcast'),
])
def test_bad_input_raises(right, kwargs, match):
  with pytest.raises(ValueError, match=match):
    mano_jax.forward(right, **kwargs)


def test_joint_orders(right):
  rng = np.random.default_rng(4)
  pose = jnp.asarray(rng.normal(0, 0.3, 48), jnp.float32)
  out = {o: mano_jax.forward(right, pose, joint_order=o).joints
         for o in ('mano', 'openpose', 'interhand')}
  j = np.asarray(out['mano'])
  # Tips are the tip vertices; the 16 kinematic joints are the frames' origins.
  verts = np.asarray(mano_jax.forward(right, pose).vertices)
  np.testing.assert_allclose(j[16:], verts[list(right.tip_ids)], atol=1e-7)
  frames = np.asarray(mano_jax.forward(right, pose).transforms)
  np.testing.assert_allclose(j[:16], frames[:, :3, 3], atol=1e-7)
  names = joints_lib.MANO_21_NAMES
  for order in ('openpose', 'interhand'):
    for k, name in enumerate(joints_lib.JOINT_NAMES_BY_ORDER[order]):
      np.testing.assert_allclose(out[order][k], j[names.index(name)], atol=1e-7)
  # InterHand2.6M: thumb tip first, wrist last; OpenPose: wrist first.
  np.testing.assert_allclose(out['interhand'][0], j[16], atol=1e-7)
  np.testing.assert_allclose(out['interhand'][20], j[0], atol=1e-7)
  np.testing.assert_allclose(out['openpose'][4], j[16], atol=1e-7)
  back = joints_lib.convert(out['interhand'], 'interhand', 'mano')
  np.testing.assert_allclose(back, j, atol=1e-7)


def test_mirror_pose_left_is_mirror_of_right(right, left):
  # The procedural left hand is the exact mirror (x -> -x) of the right, so
  # mirrored parameters must give the mirrored mesh and joints.
  rng = np.random.default_rng(5)
  pose = jnp.asarray(rng.normal(0, 0.5, (3, 48)), jnp.float32)
  betas = jnp.asarray(rng.normal(0, 1, (3, 10)), jnp.float32)
  transl = jnp.asarray(rng.normal(0, 0.1, (3, 3)), jnp.float32)
  flip = jnp.array([-1.0, 1.0, 1.0])
  flip_t = jnp.broadcast_to(flip, transl.shape)
  flip_v = jnp.broadcast_to(flip, (3, right.num_vertices, 3))
  flip_j = jnp.broadcast_to(flip, (3, 21, 3))
  r = mano_jax.forward(right, pose, betas, transl)
  l = mano_jax.forward(left, mano_jax.mirror_pose(pose), betas, transl * flip_t)
  np.testing.assert_allclose(l.vertices, r.vertices * flip_v, atol=1e-6)
  np.testing.assert_allclose(l.joints, r.joints * flip_j, atol=1e-6)
  np.testing.assert_allclose(mano_jax.mirror_pose(mano_jax.mirror_pose(pose)), pose)


def test_flat_hand_mean_adds_hands_mean(right):
  pose = jnp.zeros(48)
  mean_pose = jnp.concatenate([jnp.zeros(3), jnp.asarray(right.hands_mean)])
  a = mano_jax.forward(right, pose, flat_hand_mean=False)
  b = mano_jax.forward(right, mean_pose, flat_hand_mean=True)
  np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-6)
  c = mano_jax.forward(right, pose, flat_hand_mean=True)
  np.testing.assert_allclose(c.vertices, right.v_template, atol=1e-6)


def test_global_orient_rotates_about_wrist(right):
  # MANO's root rotation turns the hand about the wrist joint, not the origin.
  rot = jnp.zeros(48).at[:3].set(jnp.array([0.3, -1.1, 0.5]))
  a = mano_jax.forward(right, rot, flat_hand_mean=True)
  b = mano_jax.forward(right, jnp.zeros(48), flat_hand_mean=True)
  np.testing.assert_allclose(a.joints[0], b.joints[0], atol=1e-6)
  r = mano_jax.axis_angle_to_matrix(jnp.array([0.3, -1.1, 0.5]))
  j0 = jnp.broadcast_to(b.joints[0], b.vertices.shape)
  expected = (b.vertices - j0) @ r.T + j0
  np.testing.assert_allclose(a.vertices, expected, atol=1e-6)
