"""mano_jax.forward against the independent float64 numpy reference."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import mano_jax
from tests import mano_reference as ref


def _random_inputs(model, pose_repr, n, rng, *, pca_comps=None):
  aa = rng.normal(0.0, 0.6, (n, 16, 3))
  aa *= np.minimum(1.0, 3.0 / np.linalg.norm(aa, axis=-1, keepdims=True))
  if pose_repr == 'axis_angle':
    pose = aa.reshape(n, 48)
  elif pose_repr == 'pca':
    pose = np.concatenate([rng.normal(0, 0.6, (n, 3)),
                           rng.normal(0, 1.0, (n, pca_comps))], -1)
  elif pose_repr == 'rotmat':
    pose = Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix().reshape(n, 16, 3, 3)
  else:  # rot6d: arbitrary (non-orthonormal) 6-vectors are valid input
    pose = rng.normal(0, 1.0, (n, 16, 6))
  betas = rng.normal(0, 1.0, (n, model.num_betas))
  transl = rng.normal(0, 0.2, (n, 3))
  return pose, betas, transl


REPRS = ('axis_angle', 'pca', 'rotmat', 'rot6d')


@pytest.mark.parametrize('side', ['right', 'left'])
@pytest.mark.parametrize('flat', [False, True])
@pytest.mark.parametrize('precision', ['float64', 'float32'])
def test_forward_vs_reference(side, flat, precision):
  """All four pose representations, random poses/betas/transl, one jit."""
  model = mano_jax.load_procedural(side)
  rng = np.random.default_rng(zlib.crc32(f'{side}{flat}{precision}'.encode()))
  comps = int(rng.integers(1, 46))
  inputs = {r: _random_inputs(model, r, 3, rng, pca_comps=comps) for r in REPRS}
  dtype = np.float64 if precision == 'float64' else np.float32
  inputs = jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), inputs)

  def run_all(m, inputs):
    return {r: mano_jax.forward(m, *inputs[r], pose_repr=r, flat_hand_mean=flat)
            for r in REPRS}

  with jax.enable_x64(precision == 'float64'):
    m = model if precision == 'float64' else model.astype(jnp.float32)
    out = jax.jit(run_all)(m, inputs)
    out = jax.tree_util.tree_map(np.asarray, out)
  tol = 1e-9 if precision == 'float64' else 1e-5
  for r in REPRS:
    assert out[r].vertices.dtype == dtype
    expected = [ref.forward(model, p, b, t, r, flat) for p, b, t in zip(*inputs[r])]
    for k, name in enumerate(('vertices', 'joints', 'transforms')):
      exp = np.stack([e[k] for e in expected])
      np.testing.assert_allclose(getattr(out[r], name), exp, rtol=0, atol=tol,
                                 err_msg=f'{r} {name}')


def test_pca_full_basis_equals_axis_angle():
  # 45 PCA components span the whole pose space: same result as axis-angle
  # (no silent switch at 45, the basis is used as given).
  model = mano_jax.load_procedural('right')
  rng = np.random.default_rng(0)
  coeffs = rng.normal(0, 1, 45)
  go = rng.normal(0, 0.5, 3)
  hand = coeffs @ np.asarray(model.hands_components)
  with jax.enable_x64(True):
    a = mano_jax.forward(model, np.concatenate([go, coeffs]), pose_repr='pca')
    b = mano_jax.forward(model, np.concatenate([go, hand]))
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-12)


def test_rotmat_and_axis_angle_agree():
  model = mano_jax.load_procedural('right')
  rng = np.random.default_rng(1)
  aa = rng.normal(0, 0.7, (4, 16, 3))
  # Keep angles below pi: the log map of a matrix returns angles in [0, pi].
  norm = np.linalg.norm(aa, axis=-1, keepdims=True)
  aa = aa * np.minimum(1.0, 3.0 / norm)
  rotm = Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix().reshape(4, 16, 3, 3)
  def run(aa, rotm):
    out = []
    for flat in (False, True):
      a = mano_jax.forward(model, aa.reshape(4, 48), flat_hand_mean=flat)
      b = mano_jax.forward(model, rotm, pose_repr='rotmat', flat_hand_mean=flat)
      c = mano_jax.forward(model, rotm[..., :2, :].reshape(4, 16, 6),
                           pose_repr='rot6d', flat_hand_mean=flat)
      out.append((a.vertices, b.vertices, c.vertices))
    return out

  with jax.enable_x64(True):
    for a, b, c in jax.jit(run)(aa, rotm):
      np.testing.assert_allclose(a, b, atol=1e-10)
      np.testing.assert_allclose(a, c, atol=1e-10)


@pytest.mark.parametrize('side', ['right', 'left'])
def test_regressed_joints_vs_reference(side):
  """joints='regressed': J_regressor on the reference's posed mesh plus the
  tip vertices (float64, 1e-9 m), in every joint order; they differ from
  the kinematic joints on posed hands and equal them at the flat rest pose
  (no pose blend shapes, J = J_regressor @ v_shaped)."""
  model = mano_jax.load_procedural(side)
  rng = np.random.default_rng(7 if side == 'right' else 8)
  pose, betas, transl = rng.normal(0, 0.4, (2, 48)), rng.normal(0, 1, (2, 10)), \
      rng.normal(0, 0.1, (2, 3))
  with jax.enable_x64(True):
    got = {o: np.asarray(mano_jax.forward(model, pose, betas, transl, joint_order=o,
                                          joints='regressed').joints)
           for o in ('mano', 'interhand')}
    kin = np.asarray(mano_jax.forward(model, pose, betas, transl).joints)
    rest = mano_jax.forward(model, np.zeros(48), betas[0], transl[0], flat_hand_mean=True)
    rest_reg = mano_jax.forward(model, np.zeros(48), betas[0], transl[0], flat_hand_mean=True,
                                joints='regressed')
  for i in range(2):
    verts = ref.forward(model, pose[i], betas[i], transl[i])[0]
    want = np.concatenate([np.asarray(model.J_regressor, np.float64) @ verts,
                           verts[list(model.tip_ids)]])
    np.testing.assert_allclose(got['mano'][i], want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got['interhand'][i],
                               mano_jax.joints.convert(want, 'mano', 'interhand'), atol=1e-9)
  assert np.abs(got['mano'][:, :16] - kin[:, :16]).max() > 1e-4   # they are different joints
  np.testing.assert_array_equal(got['mano'][:, 16:], kin[:, 16:])   # the same tips
  np.testing.assert_allclose(np.asarray(rest_reg.joints), np.asarray(rest.joints), atol=1e-12)
  with pytest.raises(ValueError, match="'kinematic' or 'regressed'"):
    mano_jax.forward(model, pose[0], joints='mesh')
