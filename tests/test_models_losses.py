"""Stage-1 losses on batches made by the real input pipeline: ~0 when the
predictions are the ground truth (catches flat_hand_mean, rot6d, joint
order, left hand, camera conventions), and masked entries never count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mano_jax
from a2p_jax.data import pipeline
from a2p_jax.data.hands import load_hand_models
from a2p_jax.models import losses
from a2p_jax.models.stage1 import normalize_images

W_IMG, H_IMG = 334, 512
WEIGHTS = dict.fromkeys(losses.LOSS_TERMS, 1.0)


def _source(n, rng, models):
  src = []
  for i in range(n):
    joints, mano = [], {}
    for side, model, x in (('right', models[0], -0.04), ('left', models[1], 0.05)):
      fit = {'pose': rng.normal(0, 0.3, 48), 'shape': rng.normal(0, 1, 10),
             'trans': np.array([x, 0.0, 0.8]) + rng.normal(0, 0.02, 3)}
      mano[side] = fit
      with jax.enable_x64(True):
        joints.append(np.asarray(mano_jax.forward(model, fit['pose'], fit['shape'],
                                                  fit['trans'], joint_order='interhand').joints))
    src.append({'image': np.zeros((H_IMG, W_IMG, 3), np.uint8), 'annot_id': i,
                'joints_cam': np.concatenate(joints) * 1000, 'joint_valid': np.ones(42),
                'hand_type': 'interacting', 'hand_type_valid': 1,
                'bbox': np.array([50.0, 100.0, 200.0, 250.0]),
                'camera': {'focal': np.array([1100.0, 1050.0]),
                           'princpt': np.array([170.0, 250.0])},
                'mano': mano})
  return src


@pytest.fixture(scope='module')
def data():
  models = load_hand_models()
  rng = np.random.default_rng(0)
  src = _source(4, rng, models)
  cfg = pipeline.AugmentConfig(input_hw=(128, 128), rotation_prob=1.0, flip_prob=0.5)
  exs = [pipeline.process(ex, np.random.default_rng(s), cfg=cfg, models=models, training=True)
         for s, ex in zip((1, 2, 3, 4), src)]
  assert {int(e['flipped']) for e in exs} == {0, 1}
  batch = {k: np.stack([e[k] for e in exs]) for k in exs[0]}
  batch['image'] = np.asarray(normalize_images(batch['image']))
  # One compiled loss + gradient for every test here (compiling is the slow part).
  vg = jax.jit(jax.value_and_grad(
      lambda out, batch, mano: losses.stage1_loss(out, batch, mano, WEIGHTS), has_aux=True))
  return batch, models, vg


def _gt_predictions(batch, models):
  """Stage1-shaped outputs that are the ground truth."""
  b = batch['mano_pose'].shape[0]
  aa = jnp.asarray(batch['mano_pose']).reshape(b, 2, 16, 3)
  roots = []
  for k, model in enumerate(models):
    j = mano_jax.forward(model, batch['mano_pose'][:, k], batch['mano_shape'][:, k],
                         batch['mano_trans'][:, k], joint_order='interhand').joints
    roots.append(j[:, losses.WRIST])
  return {'pose_6d': mano_jax.matrix_to_rot6d(mano_jax.axis_angle_to_matrix(aa)),
          'betas': jnp.asarray(batch['mano_shape']), 'root_cam': jnp.stack(roots, 1),
          'rel_root': jnp.asarray(batch['rel_root']),
          'f_fae': jnp.zeros((b, 4, 4, 8)), 'f_p': jnp.zeros((b, 4, 4, 8))}


def test_loss_is_zero_at_the_ground_truth(data):
  batch, models, vg = data
  out = _gt_predictions(batch, models)
  (total, metrics), _ = vg(out, batch, models)
  for k in losses.LOSS_TERMS:
    assert float(metrics[f'loss_{k}']) < 2e-5, (k, metrics)
  assert float(total) < 1e-4
  assert float(metrics['mpjpe_mm']) < 0.01 and float(metrics['joints_2d_px']) < 0.01
  assert float(metrics['camera_reflected']) == 0.0
  # The meshes are the GT meshes in camera space (both hands, their roots).
  mesh = losses.mano_outputs(out, models)
  for k, model in enumerate(models):
    gt = mano_jax.forward(model, batch['mano_pose'][:, k], batch['mano_shape'][:, k],
                          batch['mano_trans'][:, k], joint_order='interhand')
    np.testing.assert_allclose(mesh['vertices'][:, k], gt.vertices, atol=2e-6)
  # A wrong convention shows: e.g. rot6d taken as final rotations
  # (flat_hand_mean=True) or the hands swapped.
  swapped = dict(out, pose_6d=out['pose_6d'][:, ::-1], betas=out['betas'][:, ::-1])
  assert float(vg(swapped, batch, models)[0][1]['loss_joints_3d']) > 1e-3


def test_masked_entries_do_not_count(data):
  batch, models, vg = data
  out = _gt_predictions(batch, models)
  # Predictions off the ground truth so every term is non-zero.
  out = jax.tree.map(lambda x: x + 0.03 * jnp.cos(jnp.arange(x.size).reshape(x.shape)), out)
  out['f_p'] = out['f_p'] + 0.1
  masked = dict(batch)
  masked['mano_valid'] = batch['mano_valid'] * np.array([[1, 0], [1, 1], [0, 1], [1, 1]],
                                                         np.float32)
  jv = batch['joint_valid'].copy()
  jv[0, 21:] = 0
  jv[1, 3:9] = 0
  masked['joint_valid'] = jv
  masked['joints_2d_valid'] = jv   # the 2D targets have their own mask
  masked['rel_root_valid'] = np.array([0, 1, 1, 1], np.float32)
  garbage = dict(masked)
  for key, where in (('mano_pose', np.s_[0, 1]), ('mano_shape', np.s_[2, 0]),
                     ('joints_rel', np.s_[0, 21:]), ('joints_2d', np.s_[1, 3:9]),
                     ('depth_rel', np.s_[0, 21:]), ('rel_root', np.s_[0])):
    garbage[key] = garbage[key].copy()
    garbage[key][where] = np.nan if key in ('mano_pose', 'joints_2d') else 1e6
  (l_clean, m_clean), g_clean = vg(out, masked, models)
  (l_garb, m_garb), g_garb = vg(out, garbage, models)
  assert np.isfinite(float(l_garb))
  np.testing.assert_allclose(l_garb, l_clean, rtol=1e-6)
  for k in m_clean:
    np.testing.assert_allclose(m_garb[k], m_clean[k], rtol=1e-6, err_msg=k)
  for a, b in zip(jax.tree.leaves(g_garb), jax.tree.leaves(g_clean)):
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
  # Means over valid entries: an example with all joints invalid weighs nothing.
  (l_all, m_all), _ = vg(out, dict(masked, joint_valid=np.zeros_like(jv)), models)
  assert float(m_all['loss_joints_3d']) == 0.0 and np.isfinite(float(l_all))
  # 2D supervision without 3D (COCO-like): only the 2D mask gates the 2D term.
  assert float(m_all['loss_joints_2d']) == float(m_clean['loss_joints_2d']) > 0
  (_, m_2d), _ = vg(out, dict(masked, joints_2d_valid=np.zeros_like(jv)), models)
  assert float(m_2d['loss_joints_2d']) == 0.0
  assert float(m_2d['loss_joints_3d']) == float(m_clean['loss_joints_3d']) > 0
  # The prior term is an unmasked MSE (F_p stop-gradiented: no gradient to it).
  np.testing.assert_allclose(m_clean['loss_prior'],
                             np.mean(np.square(out['f_fae'] - out['f_p'])), rtol=1e-5)
  assert not np.any(g_clean['f_p']) and np.any(g_clean['f_fae'])


def test_regressed_joints_are_interwilds_of_the_same_meshes(data):
  """mano_joints='regressed': the meshes do not change; the joints are
  J_regressor on the camera-space mesh + the tip vertices (float64 numpy
  reference), and joints_rel is relative to that regressed wrist."""
  from a2p_jax.eval import regress
  batch, models, _ = data
  out = _gt_predictions(batch, models)
  kin = losses.mano_outputs(out, models, 'kinematic')
  reg = losses.mano_outputs(out, models, 'regressed')
  np.testing.assert_array_equal(np.asarray(reg['vertices']), np.asarray(kin['vertices']))
  verts = np.asarray(reg['vertices'], np.float64)
  want = np.concatenate([regress.mesh_joints(models[k], verts[:, k], regress.INTERWILD_TIPS)
                         for k in range(2)], 1)
  np.testing.assert_allclose(reg['joints_cam'], want, atol=2e-6)
  wrists = want[:, [20, 41]].repeat(21, axis=1)
  np.testing.assert_allclose(reg['joints_rel'], want - wrists, atol=2e-6)
  assert np.abs(np.asarray(reg['joints_cam']) - np.asarray(kin['joints_cam'])).max() > 1e-4
  with pytest.raises(ValueError, match='kinematic'):
    losses.mano_outputs(out, models, 'mesh')


@pytest.mark.parametrize('joints', losses.MANO_JOINTS)
def test_place_by_rel_root_is_one_consistent_placement(joints):
  """After placing, the wrist joints differ by rel_root exactly, the right
  hand is untouched, and the placed root_cam regenerates the placed meshes
  (so stage 2's state, built from root_cam, sees the hands PenVol scores)."""
  models = load_hand_models()
  rng = np.random.default_rng(3)
  rot = mano_jax.axis_angle_to_matrix(jnp.asarray(rng.normal(0, 0.4, (2, 2, 16, 3)),
                                                  jnp.float32))
  out = {'pose_6d': mano_jax.matrix_to_rot6d(rot),
         'betas': jnp.asarray(rng.normal(0, 1, (2, 2, 10)), jnp.float32),
         'root_cam': jnp.asarray([[[-0.04, 0, 0.8], [0.05, 0.01, 0.82]]] * 2, jnp.float32)}
  rel_root = jnp.asarray(rng.normal(0, 0.05, (2, 3)), jnp.float32)
  mesh = losses.mano_outputs(out, models, joints)
  placed, root_cam = losses.place_by_rel_root(mesh, out['root_cam'], rel_root)
  wr = np.asarray(placed['joints_cam'])[:, losses.WRIST::21]
  np.testing.assert_allclose(wr[:, 1] - wr[:, 0], rel_root, atol=2e-6)
  np.testing.assert_array_equal(placed['joints_cam'][:, :21], mesh['joints_cam'][:, :21])
  np.testing.assert_array_equal(placed['vertices'][:, 0], mesh['vertices'][:, 0])
  np.testing.assert_array_equal(root_cam[:, 0], out['root_cam'][:, 0])
  again = losses.mano_outputs(dict(out, root_cam=root_cam), models, joints)
  for k in ('joints_cam', 'vertices'):
    np.testing.assert_allclose(again[k], placed[k], atol=2e-6)
  np.testing.assert_allclose(placed['joints_rel'], mesh['joints_rel'])
