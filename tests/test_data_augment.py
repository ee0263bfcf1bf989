"""Augmentation consistency: flips, rotations and crops agree in 2D and 3D."""

import jax
import numpy as np
import pytest

import mano_jax
from a2p_jax.data import augment
from a2p_jax.data.hands import load_hand_models
from a2p_jax.geometry.camera import project

W, H = 334, 512
FOCAL = np.array([1200.0, 1190.0])
PRINCPT = np.array([170.0, 250.0])


def _mano_joints_mm(model, fit):
  with jax.enable_x64(True):
    out = mano_jax.forward(model, fit['pose'], fit['shape'], fit['trans'],
                           joint_order='interhand')
    return np.asarray(out.joints) * 1000.0


@pytest.fixture(scope='module')
def example():
  rng = np.random.default_rng(0)
  models = load_hand_models()
  mano, joints = {}, []
  for side, model, x in (('right', models[0], -0.03), ('left', models[1], 0.04)):
    fit = {'pose': rng.normal(0, 0.4, 48), 'shape': rng.normal(0, 1, 10),
           'trans': np.array([x, 0.01, 0.55]) + rng.normal(0, 0.01, 3)}
    mano[side] = fit
    joints.append(_mano_joints_mm(model, fit))
  ex = {'joints_cam': np.concatenate(joints), 'joint_valid': np.ones(42),
        'hand_type': 'interacting', 'camera': {'focal': FOCAL, 'princpt': PRINCPT},
        'bbox': np.array([40.0, 60.0, 200.0, 180.0]), 'mano': mano}
  return ex, models


def test_flip_twice_is_identity(example):
  ex, models = example
  ex2 = augment.flip(augment.flip(ex, models, W), models, W)
  np.testing.assert_allclose(ex2['joints_cam'], ex['joints_cam'], atol=1e-9)
  np.testing.assert_allclose(ex2['camera']['princpt'], PRINCPT, atol=1e-12)
  np.testing.assert_allclose(ex2['bbox'], ex['bbox'], atol=1e-12)
  assert ex2['hand_type'] == 'interacting'
  for side in ('right', 'left'):
    for k in ('pose', 'shape', 'trans'):
      np.testing.assert_allclose(ex2['mano'][side][k], ex['mano'][side][k], atol=1e-12)


def test_flipped_mano_lands_on_flipped_joints(example):
  ex, models = example
  fl = augment.flip(ex, models, W)
  for k, (side, model) in enumerate(zip(('right', 'left'), models)):
    joints = _mano_joints_mm(model, fl['mano'][side])
    np.testing.assert_allclose(joints, fl['joints_cam'][21 * k:21 * (k + 1)], atol=1e-6 * 1e3)


def test_flip_matches_mirrored_pixels(example):
  ex, models = example
  fl = augment.flip(ex, models, W)
  uv = project(ex['joints_cam'], FOCAL, PRINCPT)
  uv_f = project(fl['joints_cam'], FOCAL, fl['camera']['princpt'])
  swapped = np.concatenate([uv_f[21:], uv_f[:21]])
  np.testing.assert_allclose(swapped[:, 0], W - 1 - uv[:, 0], atol=1e-9)
  np.testing.assert_allclose(swapped[:, 1], uv[:, 1], atol=1e-9)
  # One affine does flip + crop: same as cropping the flipped keypoints.
  a_flip = augment.crop_affine((150.0, 230.0), 220.0, (256, 256), rot_rad=0.3, flip=True,
                               image_width=W)
  a_plain = augment.crop_affine((150.0, 230.0), 220.0, (256, 256), rot_rad=0.3)
  np.testing.assert_allclose(augment.apply_affine(a_flip, uv),
                             augment.apply_affine(a_plain, swapped), atol=1e-9)


def test_rotate_3d_matches_crop_rotation(example):
  ex, models = example
  angle = 0.4
  rot = augment.rot_z(angle)
  ro = augment.rotate_3d(ex, rot, models)
  for k, (side, model) in enumerate(zip(('right', 'left'), models)):
    np.testing.assert_allclose(_mano_joints_mm(model, ro['mano'][side]),
                               ro['joints_cam'][21 * k:21 * (k + 1)], atol=1e-3)
  # Rotating the crop about the principal point by `angle` is exactly the
  # 3D rotation rot_z(angle) about the optical axis.
  a = augment.crop_affine(PRINCPT, 300.0, (300, 300), rot_rad=angle)
  a0 = augment.crop_affine(PRINCPT, 300.0, (300, 300))
  # (Exact for equal focal lengths: use one focal length for the check.)
  f = FOCAL.mean()
  uv = project(ex['joints_cam'], (f, f), PRINCPT)
  uv_r = project(ro['joints_cam'], (f, f), PRINCPT)
  np.testing.assert_allclose(augment.apply_affine(a, uv), augment.apply_affine(a0, uv_r),
                             atol=1e-6)


def test_crop_affine_maps_box_to_crop():
  a = augment.crop_affine((100.0, 200.0), 50.0, (64, 64))
  np.testing.assert_allclose(augment.apply_affine(a, np.array([100.0, 200.0])), [31.5, 31.5])
  np.testing.assert_allclose(augment.apply_affine(a, np.array([125.0, 200.0])),
                             [31.5 + 32.0, 31.5])


def test_warp_image_and_maps_follow_the_affine():
  img = np.zeros((H, W, 3), np.uint8)
  img[300:304, 100:104] = 255  # a 4x4 dot centred at (101.5, 301.5)
  a = augment.crop_affine((220.0, 290.0), 128.0, (128, 128), rot_rad=0.5, flip=True,
                          image_width=W)
  out = augment.warp_image(img, a, (128, 128))
  ys, xs = np.nonzero(out[..., 0] > 60)
  centre = augment.apply_affine(a, np.array([101.5, 301.5]))
  np.testing.assert_allclose([xs.mean(), ys.mean()], centre, atol=0.25)
  # A map at 1/8 of the image resolution, warped to a 1/4-resolution output.
  small = np.zeros((H // 8, W // 8), np.float32)
  small[301 // 8, 101 // 8] = 1.0
  a_map = augment.scale_affine(a, 8.0, 4.0)
  m = augment.warp_map(small, a_map, (32, 32))
  src = (np.array([101 // 8, 301 // 8]) + 0.5) * 8 - 0.5
  expect = augment.apply_affine(a, src)
  expect = (expect + 0.5) / 4.0 - 0.5
  ys, xs = np.nonzero(m > 0.2)
  w = m[ys, xs]
  np.testing.assert_allclose([np.sum(xs * w) / w.sum(), np.sum(ys * w) / w.sum()], expect,
                             atol=0.7)
  seg = np.zeros((H, W), np.uint8)
  seg[280:300, 100:140] = 7
  s = augment.warp_map(seg, a, (128, 128), nearest=True)
  assert set(np.unique(s)) <= {0, 7} and np.any(s == 7)


def test_hands_box():
  uv = np.array([[10.0, 20.0], [30.0, 60.0], [500.0, 500.0]])
  box = augment.hands_box(uv, np.array([1, 1, 0]), extend=1.0)
  np.testing.assert_allclose(box, [20.0, 40.0, 40.0])
  assert augment.hands_box(uv, np.zeros(3)) is None
