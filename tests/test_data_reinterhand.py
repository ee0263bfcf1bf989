"""Re:InterHand reader: the official layout as InterWild reads it, exact
camera-space joints, 2D and MANO fits against the values the fixture started
from, splits, frames from the 5 fps image folders, the index cache, missing
images and every malformed-file error."""

import logging
import os
import pickle
import shutil

import jax
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import mano_jax
from a2p_jax.data import reinterhand
from a2p_jax.data.interhand26m import AnnotationError
from a2p_jax.data.reinterhand import ReInterHand
from tests import reinterhand_fixtures as fx
from tests.mano_like import mano_like

SIDES = ('right', 'left')
CAP, CAM, FRAME = fx.TEST[0], '400262', fx.FRAMES[0]


@pytest.fixture(scope='module')
def hands(models):
  """The fixture's hand models: the procedural hand moved like MANO's (its rest
  wrist ~10 cm from the origin), so the root-joint term is tested."""
  return mano_like(models)


@pytest.fixture(autouse=True)
def reader_uses_fixture_hands(hands, monkeypatch):
  monkeypatch.setattr(reinterhand, 'load_hand_models', lambda mano_dir=None: hands)


@pytest.fixture(scope='module')
def base(tmp_path_factory, models):
  root = str(tmp_path_factory.mktemp('reih'))
  return root, fx.write(root, models)


@pytest.fixture
def data(base, tmp_path):
  """A private copy of the base set, free to edit."""
  return fx.private_copy(base, tmp_path)


def open_ds(root, split='test', **kw):
  kw.setdefault('cache', False)
  kw.setdefault('progress', False)
  return ReInterHand(root, split, **kw)


def examples(ds):
  return [ds[i] for i in range(len(ds))]


def split_images(truth, split):
  caps = fx.TEST if split == 'test' else fx.TRAIN
  return sorted(im for im in truth['images'] if im[0] in caps)


# ----------------------------------------------------------------------------
# InterWild's formulas, written out here as the reference.

def interwild_world2cam(world, rot, t):
  return np.dot(rot, world.transpose(1, 0)).transpose(1, 0) + t.reshape(1, 3)


def interwild_cam2pixel(cam, focal, princpt):
  return np.stack([cam[:, 0] / cam[:, 2] * focal[0] + princpt[0],
                   cam[:, 1] / cam[:, 2] * focal[1] + princpt[1]], 1)


def interwild_get_bbox(uv, valid, extend_ratio=1.2):
  x, y = uv[valid == 1, 0], uv[valid == 1, 1]
  xc, w = (x.min() + x.max()) / 2.0, x.max() - x.min()
  yc, h = (y.min() + y.max()) / 2.0, y.max() - y.min()
  x0, x1 = xc - 0.5 * w * extend_ratio, xc + 0.5 * w * extend_ratio
  y0, y1 = yc - 0.5 * h * extend_ratio, yc + 0.5 * h * extend_ratio
  return np.array([x0, y0, x1 - x0, y1 - y0])


def test_keypoint_map_is_interwilds_by_name_map():
  """InterWild maps the 24 file joints by name onto Wrist, Thumb_1..4, ...:
  Thumb_0, Pinky_0 and Forearm_Stub are dropped."""
  ih_names = [f'{f}_{k}' for f in ('Thumb', 'Index', 'Middle', 'Ring', 'Pinky')
              for k in (4, 3, 2, 1)] + ['Wrist']
  by_name = [reinterhand.KEYPOINT_NAMES.index(n) for n in ih_names]
  assert tuple(by_name) == reinterhand.KEYPOINT_TO_INTERHAND
  assert sorted(set(range(24)) - set(by_name)) == [1, 18, 23]
  assert [reinterhand.KEYPOINT_NAMES[i] for i in (1, 18, 23)] == [
      'Thumb_0', 'Pinky_0', 'Forearm_Stub']


@pytest.mark.parametrize('split', ['test', 'train'])
def test_views_in_camera_space_vs_reference(base, split):
  root, truth = base
  ds = open_ds(root, split)
  exs = examples(ds)
  # One example per image in the 5 fps image folders of the split's cameras.
  got = sorted((e['capture_id'], e['camera_id'], e['frame_idx']) for e in exs)
  assert got == split_images(truth, split)
  assert len({e['annot_id'] for e in exs}) == len(exs)
  np.testing.assert_array_equal(ds.annot_ids, [e['annot_id'] for e in exs])
  kinds = set()
  for ex in exs:
    cap, camid, frame = ex['capture_id'], ex['camera_id'], ex['frame_idx']
    cam = truth['cameras'][(cap, camid)]
    ref = interwild_world2cam(truth['joints'][(cap, frame)], cam['R'], cam['t'])
    assert ex['joints_cam'].shape == (42, 3) and ex['joints_cam'].dtype == np.float64
    np.testing.assert_allclose(ex['joints_cam'], ref, rtol=0, atol=1e-6)      # mm
    np.testing.assert_array_equal(ex['joint_valid'], np.ones(42, np.float32))
    uv = interwild_cam2pixel(ref, cam['focal'], cam['princpt'])
    np.testing.assert_allclose(ex['joints_img'], uv, rtol=0, atol=1e-6)       # px
    h, w = fx.SIZES[camid]
    trunc = ((uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)).astype(float)
    np.testing.assert_array_equal(ex['joints_img_valid'], trunc)
    exist = [s for k, s in enumerate(SIDES) if trunc[21 * k:21 * k + 21].sum() > 0]
    assert ex['hand_type'] == (exist[0] if len(exist) == 1 else 'interacting')
    assert ex['hand_type_valid'] == int(bool(exist))
    for k, side in enumerate(SIDES):
      box = ex['hand_bbox'][side]
      if side not in exist:
        assert box is None
        continue
      part = slice(21 * k, 21 * k + 21)
      np.testing.assert_allclose(box, interwild_get_bbox(uv[part], trunc[part]), atol=1e-6)
    union = interwild_get_bbox(uv, trunc) if exist else np.array([0.0, 0.0, w, h])
    np.testing.assert_allclose(ex['bbox'], union, atol=1e-6)
    assert ex['image_size'] == (h, w)
    assert ex['image_path'] == os.path.join(root, cap, 'Mugsy_cameras', 'envmap_per_frame',
                                            'images', camid, f'{frame:06d}.png')
    assert os.path.isfile(ex['image_path'])
    np.testing.assert_array_equal(ex['camera']['focal'], cam['focal'])
    np.testing.assert_array_equal(ex['camera']['princpt'], cam['princpt'])
    partial = 0 < trunc[:21].sum() < 21 or 0 < trunc[21:].sum() < 21
    kinds.add((ex['hand_type'], ex['hand_type_valid'], partial))
  # The fixture's views cover both hands, one hand (sometimes cut by the
  # image border) and no hand.
  assert {('interacting', 1), ('right', 1), ('interacting', 0)} <= {k[:2] for k in kinds}
  if split == 'test':
    assert any(k[2] for k in kinds)


def _forward(model, pose, shape, trans):
  with jax.enable_x64(True):
    out = mano_jax.forward(model, np.asarray(pose), np.asarray(shape), np.asarray(trans),
                           joint_order='interhand')
    return np.asarray(out.vertices), np.asarray(out.joints)


def _stacked(exs, truth):
  """Per side: camera fits, world fits and cameras of all examples, stacked."""
  out = {}
  for side in SIDES:
    fits = [e['mano'][side] for e in exs]
    world = [truth['fits'][(e['capture_id'], e['frame_idx'])][side] for e in exs]
    cams = [truth['cameras'][(e['capture_id'], e['camera_id'])] for e in exs]
    out[side] = ({k: np.stack([f[k] for f in fits]) for k in ('pose', 'shape', 'trans')},
                 {k: np.stack([f[k] for f in world]) for k in ('pose', 'shape', 'trans',
                                                               'verts')},
                 np.stack([c['R'] for c in cams]), np.stack([c['t'] for c in cams]))
  return out


def test_mano_fits_in_camera_space_are_exact(base, hands):
  """mano_jax on the returned fit == the world fit's mesh moved by the camera:
  joints (vs the camera-space keypoints) < 1e-3 mm, meshes < 0.1 mm."""
  root, truth = base
  exs = examples(open_ds(root))
  for k, (side, (fit, world, rot, t)) in enumerate(_stacked(exs, truth).items()):
    assert fit['pose'].shape == (len(exs), 48) and fit['trans'].shape == (len(exs), 3)
    np.testing.assert_array_equal(fit['shape'], world['shape'])
    np.testing.assert_array_equal(fit['pose'][:, 3:], world['pose'][:, 3:])
    verts, joints = _forward(hands[k], fit['pose'], fit['shape'], fit['trans'])
    ref_verts = np.einsum('nij,nvj->nvi', rot, world['verts']) + t[:, None] / 1000.0
    assert np.abs(verts - ref_verts).max() * 1000.0 < 1e-6          # mm (needed: 0.1)
    keypoints = np.stack([e['joints_cam'][21 * k:21 * k + 21] for e in exs])
    assert np.abs(joints * 1000.0 - keypoints).max() < 1e-6          # mm (needed: 1e-3)


def test_camera_fit_vs_interwild_recipe(base, hands):
  """InterWild's get_mano_data: root pose R @ root, pose the mesh with the
  world trans, then mesh - root + R root + t (root: the wrist joint; the
  kinematic one here, see the module doc)."""
  root, truth = base
  exs = examples(open_ds(root))
  for k, (side, (fit, world, rot, t)) in enumerate(_stacked(exs, truth).items()):
    pose = world['pose'].copy()
    root_rot = rot @ Rotation.from_rotvec(pose[:, :3]).as_matrix()
    pose[:, :3] = Rotation.from_matrix(root_rot).as_rotvec()
    mesh, joints = _forward(hands[k], pose, world['shape'], world['trans'])
    wrist = joints[:, 20:21]
    ref = mesh - wrist + np.einsum('nij,nvj->nvi', rot, wrist) + t[:, None] / 1000.0
    got, _ = _forward(hands[k], fit['pose'], fit['shape'], fit['trans'])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(Rotation.from_rotvec(fit['pose'][:, :3]).as_matrix(), root_rot,
                               atol=1e-12)


def test_fixture_would_catch_wrong_conventions(base, hands):
  """The checks above can fail: every convention changes the numbers here by
  far more than their tolerances."""
  _, truth = base
  for cam in truth['cameras'].values():
    rot, t = cam['R'], cam['t']
    assert np.linalg.norm(t) > 100.0                         # t in mm, not m; sign matters
    assert np.abs(rot - rot.T).max() > 0.1                   # R vs R^T
    assert np.abs(rot - np.eye(3)).max() > 0.1
    assert abs(cam['focal'][0] - cam['focal'][1]) > 1e-3     # fx vs fy
  for (cap, frame, side), dropped in truth['extra'].items():
    joints = truth['joints'][(cap, frame)][(0 if side == 'right' else 21):][:21]
    dist = np.linalg.norm(dropped[:, None] - joints[None], axis=-1)
    assert dist.min() > 3.0                                  # a shifted joint map fails
  # Ignoring the root joint in the translation (trans' = R trans + t) moves
  # the hand by (R - I) J0: millimetres, not 1e-3 mm.
  for (cap, cam), c in truth['cameras'].items():
    fit = truth['fits'][(cap, fx.FRAMES[0])]['right']
    j0 = reinterhand.cam_lib.root_joint(hands[0], fit['shape'])
    assert np.linalg.norm((c['R'] - np.eye(3)) @ j0) > 0.01
  # MANO trans is in metres (the hands sit ~1 m from the rig origin).
  assert 0.5 < abs(truth['fits'][(fx.TEST[0], FRAME)]['right']['trans'][2]) < 2.0
  # The keypoints are those of the moved hands: the wrist is at J0 + trans.
  for (cap, frame), fits in truth['fits'].items():
    for k, side in enumerate(SIDES):
      j0 = reinterhand.cam_lib.root_joint(hands[k], fits[side]['shape'])
      np.testing.assert_allclose(truth['joints'][(cap, frame)][21 * k + 20],
                                 (j0 + fits[side]['trans']) * 1000.0, atol=1e-9)


def test_points_behind_the_camera_are_not_in_the_image():
  cam = np.array([[10.0, 10.0, 100.0], [-10.0, -10.0, -100.0], [0.0, 0.0, 0.0]])
  uv, valid = reinterhand.image_joints(cam, np.ones(3), [1000.0, 1000.0], [500.0, 500.0],
                                       (1000, 1000))
  # The second would land at (600, 600) in InterWild's cam2pixel.
  np.testing.assert_array_equal(valid, [1, 0, 0])
  np.testing.assert_allclose(uv[0], [600.0, 600.0])
  assert np.all(np.isfinite(uv))


# ----------------------------------------------------------------------------
# Splits and where frames come from.

def test_splits_frames_and_summary(base, caplog):
  root, _ = base
  with caplog.at_level(logging.WARNING):
    test = open_ds(root, 'test')
  assert 'NKC880' in caplog.text          # a test capture not downloaded is named
  assert {e['capture_id'] for e in examples(test)} == set(fx.TEST)
  train = open_ds(root, 'train')
  assert {e['capture_id'] for e in examples(train)} == set(fx.TRAIN)
  frames = {e['frame_idx'] for e in examples(test)}
  assert frames == set(fx.FRAMES)         # not the 30 fps frame_list.txt frames
  cams = {e['camera_id'] for e in examples(test)}
  assert cams == {'400262', '400263', '400264'}   # 400265 has no images, 400299 no params
  assert test.summary == {'captures': 2, 'cameras': 8, 'frames': 6, 'images': 16,
                          'image_folders_without_camera': 2, 'missing_images': 0,
                          'examples': 16}
  with pytest.raises(ValueError, match='split'):
    ReInterHand(root, 'val')
  with pytest.raises(IndexError):
    test[len(test)]
  assert test[-1]['annot_id'] == examples(test)[-1]['annot_id']


def test_no_capture_of_the_split(tmp_path, base, models):
  root = str(tmp_path / 'only_train')
  os.makedirs(root)
  shutil.copytree(os.path.join(base[0], fx.TRAIN[0]), os.path.join(root, fx.TRAIN[0]))
  with pytest.raises(FileNotFoundError, match='no capture folder'):
    open_ds(root, 'test')
  assert len(open_ds(root, 'train')) == 8


# ----------------------------------------------------------------------------
# The index cache, missing images.

def test_index_cache_reused_rebuilt_and_picklable(data, tmp_path, monkeypatch):
  root, _ = data
  cache = str(tmp_path / 'cache')
  ds = open_ds(root, cache=True, cache_dir=cache)
  first = ds[3]
  assert os.listdir(cache)

  def no_build(*a, **k):
    raise AssertionError('index rebuilt although the cache is up to date')
  monkeypatch.setattr(reinterhand, 'build_index', no_build)
  ds2 = open_ds(root, cache=True, cache_dir=cache)
  assert isinstance(ds2._arrays['frame_world'], np.memmap)
  np.testing.assert_array_equal(ds2[3]['joints_cam'], first['joints_cam'])
  blob = pickle.dumps(ds2)
  assert len(blob) < 20000
  ds3 = pickle.loads(blob)
  np.testing.assert_array_equal(ds3[3]['mano']['left']['trans'], first['mano']['left']['trans'])
  monkeypatch.undo()
  # A changed cam_params.json rebuilds the index.
  rel = os.path.join(CAP, reinterhand.CAMERA_FILE)
  fx.rewrite(root, rel, lambda o: o[CAM].__setitem__('focal', [1234.0, 1235.0]))
  ds4 = open_ds(root, cache=True, cache_dir=cache)
  assert next(e['camera']['focal'].tolist() for e in examples(ds4)
              if (e['capture_id'], e['camera_id']) == (CAP, CAM)) == [1234.0, 1235.0]
  # A new image (the render 400263 lacked) rebuilds it too.
  cam, frame = fx.NO_RENDER
  src = os.path.join(root, reinterhand.image_file(CAP, cam, fx.FRAMES[0]))
  shutil.copy(src, os.path.join(root, reinterhand.image_file(CAP, cam, frame)))
  ds5 = open_ds(root, cache=True, cache_dir=cache)
  assert len(ds5) == len(ds4) + 1
  assert ds5.summary['missing_images'] == 0


def test_missing_images_are_counted_logged_or_strict(data, tmp_path, caplog):
  root, _ = data
  cache = str(tmp_path / 'cache')
  n = len(open_ds(root, cache=True, cache_dir=cache))
  gone = os.path.join(root, reinterhand.image_file(CAP, CAM, FRAME))
  os.remove(gone)
  with caplog.at_level(logging.WARNING):
    ds = open_ds(root, cache=True, cache_dir=cache)
  assert ds.summary['missing_images'] == 1 and len(ds) == n - 1
  assert gone in caplog.text
  assert (CAP, CAM, FRAME) not in {(e['capture_id'], e['camera_id'], e['frame_idx'])
                                   for e in examples(ds)}
  np.testing.assert_array_equal(ds.annot_ids, [e['annot_id'] for e in examples(ds)])
  with pytest.raises(FileNotFoundError, match='no longer on disk'):
    open_ds(root, cache=True, cache_dir=cache, strict=True)
  # A fresh index lists the images that exist: nothing is missing.
  assert open_ds(root).summary['missing_images'] == 0


def test_default_cache_beside_the_data_else_user_cache(data, tmp_path, monkeypatch):
  root, _ = data
  ds = ReInterHand(root, 'test', progress=False)
  assert os.path.isdir(os.path.join(root, '.a2p_jax_index', 'reinterhand_test'))
  assert len(ReInterHand(root, 'test', progress=False)) == len(ds)
  shutil.rmtree(os.path.join(root, '.a2p_jax_index'))
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  # A file where the index folder would go: the cache cannot be written there.
  open(os.path.join(root, '.a2p_jax_index'), 'w').close()
  assert len(ReInterHand(root, 'train', progress=False)) == 8
  assert os.listdir(tmp_path / 'home' / '.cache' / 'a2p_jax')


# ----------------------------------------------------------------------------
# Errors: clear, naming the file and the key.

KP = reinterhand.keypoint_file(CAP, 'right', FRAME)
MANO = reinterhand.mano_file(CAP, 'left', FRAME)
CAMS = os.path.join(CAP, reinterhand.CAMERA_FILE)


def _set(key, value, cam=CAM):
  return lambda o: o[cam].__setitem__(key, value)


def _scaled_rot(scale):
  return lambda o: o[CAM].__setitem__('R', (np.array(o[CAM]['R']) * scale).tolist())


def _row(i, value):
  return lambda o: o.__setitem__(i, value)


ERRORS = [
    (CAMS, lambda o: o[CAM].pop('R'), 'cam_params.json', "'R'"),
    (CAMS, _set('R', [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), 'cam_params.json', "'R'"),
    (CAMS, _scaled_rot(1.1), 'cam_params.json', 'not a rotation'),
    (CAMS, _scaled_rot([1.0, 1.0, -1.0]), 'cam_params.json', 'not a rotation'),
    (CAMS, _set('t', [1.0, float('nan'), 3.0]), 'cam_params.json', "'t'"),
    (CAMS, _set('focal', [0.0, 1000.0]), 'cam_params.json', "'focal'"),
    (CAMS, _set('princpt', [1.0]), 'cam_params.json', "'princpt'"),
    (CAMS, _set('D', [0.1, 0.0, 0.0, 0.0]), 'cam_params.json', "'D'"),
    (CAMS, lambda o: o.clear(), 'cam_params.json', 'keyed by camera'),
    (KP, lambda o: o.pop(), 'keypoint-009012.json', 'keypoints'),
    (KP, _row(5, [0.0, float('nan'), 0.0]), 'keypoint-009012.json', "'Thumb_4'"),
    (KP, _row(0, [0.0, 0.0, float('inf')]), 'keypoint-009012.json', "'Wrist'"),
    (MANO, lambda o: o.pop('shape'), '9012_left.json', "'shape'"),
    (MANO, lambda o: o.__setitem__('pose', o['pose'][:45]), '9012_left.json', "'pose'"),
    (MANO, lambda o: o.__setitem__('trans', [0.0, None, 1.0]), '9012_left.json', "'trans'"),
    (MANO, lambda o: o.__setitem__('trans', [0.0, float('nan'), 1.0]), '9012_left.json',
     "'trans'"),
    (MANO, lambda o: o.clear(), '9012_left.json', "'pose'"),
]


@pytest.mark.parametrize('rel,edit,file,what', ERRORS,
                         ids=[f'{os.path.basename(e[0])}-{e[3]}' for e in ERRORS])
def test_malformed_files_raise_naming_file_and_key(data, rel, edit, file, what):
  root, _ = data
  fx.rewrite(root, rel, edit)
  with pytest.raises(AnnotationError) as e:
    open_ds(root)
  assert file in str(e.value) and what in str(e.value), str(e.value)


@pytest.mark.parametrize('rel,file', [(CAMS, 'cam_params.json'), (KP, 'keypoint-009012.json'),
                                      (MANO, '9012_left.json')])
def test_missing_or_invalid_json_files(data, rel, file):
  root, _ = data
  path = os.path.join(root, rel)
  with open(path) as fh:
    text = fh.read()
  fx.replace_text(path, text[:len(text) // 2])
  with pytest.raises(AnnotationError, match='invalid JSON') as e:
    open_ds(root)
  assert file in str(e.value)
  os.remove(path)
  with pytest.raises(AnnotationError, match='file not found') as e:
    open_ds(root)
  assert file in str(e.value)


def test_tolerated_quirks(data, base):
  """A NaN in a dropped joint, D all zeros and extra keys read fine."""
  root, truth = data
  fx.rewrite(root, KP, _row(23, [float('nan')] * 3))
  fx.rewrite(root, KP, _row(1, [float('nan')] * 3))
  fx.rewrite(root, CAMS, _set('D', [0.0, 0.0, 0.0, 0.0]))
  fx.rewrite(root, MANO, lambda o: o.__setitem__('hand_type', 'left'))
  ex = next(e for e in examples(open_ds(root)) if (e['capture_id'], e['camera_id'],
                                                   e['frame_idx']) == (CAP, CAM, FRAME))
  cam = truth['cameras'][(CAP, CAM)]
  ref = interwild_world2cam(truth['joints'][(CAP, FRAME)], cam['R'], cam['t'])
  np.testing.assert_allclose(ex['joints_cam'], ref, atol=1e-6)
