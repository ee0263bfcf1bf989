"""HO-3D reader: the official layout and its conventions (OpenGL axes, the
flat_hand_mean=True pose, HO-3D's joint order), evaluation's partial
annotations, unannotated frames, missing images, the cache and every error."""

import logging
import os
import pickle
import shutil

import jax
import numpy as np
import pytest

import mano_jax
from a2p_jax.data import ho3d
from a2p_jax.data.interhand26m import AnnotationError
from tests import ho3d_fixtures as fx
from tests.mano_like import mano_like_hand

D = np.diag([1.0, -1.0, -1.0])
# InterHand order (thumb4..1, index4..1, middle, ring, pinky, wrist) from
# HO-3D's handJoints3D, written out from the toolbox's jointsMapManoToSimple
# [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
# (wrist, then per finger thumb..pinky from the base to the tip), reversed
# per finger, wrist last.
IH_FROM_HO3D = [16, 15, 14, 13, 17, 3, 2, 1, 18, 6, 5, 4, 19, 12, 11, 10, 20, 9, 8, 7, 0]


@pytest.fixture(scope='module')
def hand(models):
  """The right model of every test here: the procedural hand with MANO's wrist."""
  return mano_like_hand(models[0])


@pytest.fixture(autouse=True)
def _reader_uses_hand(monkeypatch, hand, models):
  # MANO itself is licensed; the reader gets the test's model as if from mano_dir.
  monkeypatch.setattr(ho3d, 'load_hand_models', lambda mano_dir=None: (hand, models[1]))


@pytest.fixture(scope='module')
def base(tmp_path_factory, hand):
  root = str(tmp_path_factory.mktemp('ho3d'))
  truth = {s: fx.write(root, hand, s) for s in ho3d.SPLITS}
  return root, truth


@pytest.fixture
def data(base, tmp_path):
  """A private copy, free to edit."""
  root = str(tmp_path / 'ho3d')
  shutil.copytree(base[0], root)
  return root, base[1]


def open_ds(root, split='train', **kw):
  kw.setdefault('cache', False)
  kw.setdefault('progress', False)
  return ho3d.HO3D(root, split, **kw)


def annotated(truth, split):
  return [(line, t) for line, t in enumerate(truth[split]['frames']) if t['kind'] == 'hand']


# ----------------------------------------------------------------------------
# Train split.

def test_train_records_vs_toolbox_formulas(base):
  root, truth = base
  ds = open_ds(root, strict=True)
  expected = annotated(truth, 'train')
  assert len(ds) == len(expected) == 4
  np.testing.assert_array_equal(ds.annot_ids, [line for line, _ in expected])
  for i, (line, t) in enumerate(expected):
    ex = ds[i]
    assert ex['image_path'] == t['image'] and os.path.exists(ex['image_path'])
    assert ex['image_path'].endswith(t['ext'])
    assert ex['image_size'] == fx.IMAGE_HW
    assert (ex['seq_name'], ex['frame'], ex['annot_id']) == (t['seq'], t['frame'], line)
    assert ex['hand_type'] == 'right' and ex['hand_type_valid'] == 1
    # OpenGL -> OpenCV (flip y and z), metres -> mm, InterHand order.
    ref = (t['joints'] * [1.0, -1.0, -1.0] * 1000.0)[IH_FROM_HO3D]
    assert ex['joints_cam'].shape == (42, 3) and ex['joints_cam'].dtype == np.float64
    assert np.abs(ex['joints_cam'][:21] - ref).max() < 1e-3
    assert np.all(ex['joints_cam'][:21, 2] > 0)           # in front of an OpenCV camera
    assert not ex['joints_cam'][21:].any() and not ex['joint_valid'][21:].any()
    np.testing.assert_array_equal(ex['joint_valid'][:21], 1.0)
    assert ex['joint_valid'].dtype == np.float32
    # 2D: the toolbox's project_3D_points(camMat, handJoints3D, is_OpenGL_coords=True).
    uv = fx.project_gl(t['joints'], t['cam'])[IH_FROM_HO3D]
    assert np.abs(ex['joints_img'][:21] - uv).max() < 1e-3
    np.testing.assert_array_equal(ex['joints_img_valid'], ex['joint_valid'])
    assert not ex['joints_img'][21:].any()
    box = [uv[:, 0].min(), uv[:, 1].min(), np.ptp(uv[:, 0]), np.ptp(uv[:, 1])]
    np.testing.assert_allclose(ex['bbox'], box, atol=1e-6)
    np.testing.assert_array_equal(ex['camera']['focal'], t['cam'][[0, 1], [0, 1]])
    np.testing.assert_array_equal(ex['camera']['princpt'], t['cam'][:2, 2])
    assert ex['mano']['left'] is None


def test_mano_is_d_times_the_original_mesh(base, hand):
  """forward(converted, flat_hand_mean=False) == D forward(file's, flat_hand_mean=True)."""
  root, truth = base
  ds = open_ds(root)
  model = hand
  for i, (_, t) in enumerate(annotated(truth, 'train')):
    fit = ds[i]['mano']['right']
    assert {k: v.shape for k, v in fit.items()} == {'pose': (48,), 'shape': (10,),
                                                     'trans': (3,)}
    np.testing.assert_array_equal(fit['shape'], t['beta'])
    with jax.enable_x64(True):
      got = mano_jax.forward(model, fit['pose'], fit['shape'], fit['trans'])
      ref = mano_jax.forward(model, t['pose'], t['beta'], t['trans'], flat_hand_mean=True)
    verts, ref_verts = np.asarray(got.vertices), np.asarray(ref.vertices) @ D.T
    joints, ref_joints = np.asarray(got.joints), np.asarray(ref.joints) @ D.T
    assert verts.dtype == np.float64
    assert np.abs(verts - ref_verts).max() * 1000.0 < 0.1
    assert np.abs(joints - ref_joints).max() * 1000.0 < 1e-3
    # And it lands on the annotated joints (kinematic joints + tips, as HO-3D's).
    ih = mano_jax.joints.reorder(joints, 'interhand') * 1000.0
    assert np.abs(ih - ds[i]['joints_cam'][:21]).max() < 1e-3


def test_wrong_conventions_would_be_caught(base, hand):
  """Each convention matters by far more than the tolerances above."""
  root, truth = base
  model = hand
  t = annotated(truth, 'train')[0][1]
  fit = open_ds(root)[0]['mano']['right']
  with jax.enable_x64(True):
    ref = np.asarray(mano_jax.forward(model, t['pose'], t['beta'], t['trans'],
                                      flat_hand_mean=True).vertices) @ D.T
    def err_mm(pose, trans, **kw):
      out = mano_jax.forward(model, pose, t['beta'], trans, **kw)
      return np.abs(np.asarray(out.vertices) - ref).max() * 1000.0
    assert err_mm(fit['pose'], fit['trans']) < 0.1
    # Hand mean not subtracted (pose used as flat_hand_mean=False as is).
    raw = fit['pose'].copy()
    raw[3:] = t['pose'][3:]
    assert err_mm(raw, fit['trans']) > 5.0
    # Translation flipped alone, ignoring the rotation about the wrist j0.
    assert err_mm(fit['pose'], D @ t['trans']) > 5.0
    # No axis flip at all (OpenGL kept).
    assert err_mm(t['pose'], t['trans'], flat_hand_mean=True) > 100.0
  # Projecting OpenGL points without the flip lands elsewhere.
  wrong = t['joints'] @ t['cam'].T
  assert np.abs(wrong[:, :2] / wrong[:, 2:] - fx.project_gl(t['joints'], t['cam'])).max() > 10


def test_unannotated_frames_are_skipped_and_counted(base, caplog):
  root, truth = base
  with caplog.at_level(logging.INFO, logger='a2p_jax.data.ho3d'):
    ds = open_ds(root)
  kinds = [t['kind'] for t in truth['train']['frames']]
  assert ds.summary == {'listed': len(kinds), 'unannotated': 3, 'missing_images': 0,
                        'examples': kinds.count('hand')}
  assert 'no hand annotation' in caplog.text
  with pytest.raises(IndexError):
    ds[len(ds)]
  assert ds[-1]['annot_id'] == ds.annot_ids[-1]


def test_joints_behind_the_camera_are_not_projected(data):
  root, truth = data
  t = truth['train']['frames'][0]
  _edit_meta(root, t, lambda m: m['handJoints3D'].__setitem__((5, 2), 0.1))   # OpenGL z > 0
  ex = open_ds(root)[0]
  k = IH_FROM_HO3D.index(5)
  assert ex['joint_valid'][k] == 1 and ex['joints_img_valid'][k] == 0
  assert not ex['joints_img'][k].any() and ex['joints_img_valid'].sum() == 20
  _edit_meta(root, t, lambda m: m['handJoints3D'].__setitem__((slice(None), 2), 0.5))
  ex = open_ds(root)[0]
  assert not ex['joints_img_valid'].any()
  np.testing.assert_array_equal(ex['bbox'], [0, 0, fx.IMAGE_HW[1], fx.IMAGE_HW[0]])


# ----------------------------------------------------------------------------
# Evaluation split: the wrist and the hand box only.

def test_evaluation_wrist_and_box_only(base):
  root, truth = base
  ds = open_ds(root, 'evaluation', strict=True)
  expected = annotated(truth, 'evaluation')
  assert len(ds) == len(expected) and ds.summary['unannotated'] == 1
  for i, (line, t) in enumerate(expected):
    ex = ds[i]
    assert ex['annot_id'] == line and ex['image_path'] == t['image']
    assert ex['mano'] == {'right': None, 'left': None}
    assert ex['hand_type'] == 'right'
    valid = np.zeros(42, np.float32)
    valid[20] = 1.0                                       # the right wrist
    np.testing.assert_array_equal(ex['joint_valid'], valid)
    np.testing.assert_array_equal(ex['joints_img_valid'], valid)
    assert np.abs(ex['joints_cam'][20] - D @ t['root'] * 1000.0).max() < 1e-3
    assert not np.delete(ex['joints_cam'], 20, 0).any()
    uv = fx.project_gl(t['root'][None], t['cam'])[0]
    assert np.abs(ex['joints_img'][20] - uv).max() < 1e-3
    x1, y1, x2, y2 = t['hand_bbox']
    np.testing.assert_allclose(ex['bbox'], [x1, y1, x2 - x1, y2 - y1], atol=1e-9)


# ----------------------------------------------------------------------------
# Pickles: python 2, latin1, an allow-list.

def test_meta_pickles_need_latin1_like_the_toolbox(base):
  root, truth = base
  t = truth['train']['frames'][0]
  path = ho3d.meta_path(root, 'train', t['seq'], t['frame'])
  with open(path, 'rb') as fh:
    raw = fh.read()
  with pytest.raises(UnicodeDecodeError):
    pickle.loads(raw)
  plain = pickle.loads(raw, encoding='latin1')
  ours = ho3d.read_meta(path)
  assert sorted(plain) == sorted(ours)
  for key in ('handPose', 'handBeta', 'handTrans', 'handJoints3D', 'camMat'):
    np.testing.assert_array_equal(ours[key], plain[key])
  assert ours['objName'] == '006_mustard_bottle'
  np.testing.assert_array_equal(ours['handPose'], t['pose'])


class _Evil:
  def __reduce__(self):
    return (os.system, ('echo pwned',))


@pytest.mark.parametrize('raw,msg', [
    (b'not a pickle', 'not a readable meta pickle'),
    (None, 'not a readable meta pickle'),                 # truncated
    (pickle.dumps({'x': _Evil()}, protocol=2), 'refusing global'),
    (pickle.dumps([1, 2], protocol=2), 'expected a dict'),
])
def test_bad_pickles_name_the_file(data, raw, msg):
  root, truth = data
  t = truth['train']['frames'][2]
  path = ho3d.meta_path(root, 'train', t['seq'], t['frame'])
  if raw is None:
    with open(path, 'rb') as fh:
      raw = fh.read()[:-40]
  with open(path, 'wb') as fh:
    fh.write(raw)
  with pytest.raises(AnnotationError, match=msg) as e:
    open_ds(root)
  assert path in str(e.value)


# ----------------------------------------------------------------------------
# Bad annotations.

def _edit_meta(root, t, edit, split='train'):
  path = ho3d.meta_path(root, split, t['seq'], t['frame'])
  meta = ho3d.read_meta(path)
  edit(meta)
  return fx.write_meta(root, split, t['seq'], t['frame'], meta)


@pytest.mark.parametrize('edit,msg', [
    (lambda m: m.pop('camMat'), "missing key 'camMat'"),
    (lambda m: m.pop('handBeta'), "missing key 'handBeta'"),
    (lambda m: m.__setitem__('handTrans', None), "'handTrans'.*None"),
    (lambda m: m.__setitem__('handPose', m['handPose'][:45]), r"'handPose'.*\(48,\)"),
    (lambda m: m.__setitem__('handJoints3D', m['handJoints3D'][:20]), "'handJoints3D'"),
    (lambda m: m['handTrans'].__setitem__(1, np.nan), "'handTrans'.*NaN"),
    (lambda m: m['camMat'].__setitem__((2, 2), 0.0), "'camMat'"),
    (lambda m: m.__setitem__('handBeta', 'abc'), "'handBeta'"),
])
def test_bad_train_meta_names_file_and_key(data, edit, msg):
  root, truth = data
  path = _edit_meta(root, truth['train']['frames'][3], edit)
  with pytest.raises(AnnotationError, match=msg) as e:
    open_ds(root)
  assert path in str(e.value)


@pytest.mark.parametrize('edit,msg', [
    (lambda m: m.pop('handBoundingBox'), "missing key 'handBoundingBox'"),
    (lambda m: m.__setitem__('handBoundingBox', m['handBoundingBox'][[2, 3, 0, 1]]),
     'x2 >= x1'),
    (lambda m: m.__setitem__('handJoints3D', np.zeros(21 * 3)), "'handJoints3D'"),
])
def test_bad_evaluation_meta(data, edit, msg):
  root, truth = data
  path = _edit_meta(root, truth['evaluation']['frames'][0], edit, 'evaluation')
  with pytest.raises(AnnotationError, match=msg) as e:
    open_ds(root, 'evaluation')
  assert path in str(e.value)


def test_missing_list_or_meta_file_and_bad_lines(data):
  root, truth = data
  t = truth['train']['frames'][2]
  path = ho3d.meta_path(root, 'train', t['seq'], t['frame'])
  os.remove(path)
  with pytest.raises(AnnotationError, match='not found') as e:
    open_ds(root)
  assert path in str(e.value)
  with open(os.path.join(root, 'train.txt'), 'a') as fh:
    fh.write('ABF10-0009\n')
  with pytest.raises(AnnotationError, match="line 8: expected SEQ/frame, got 'ABF10-0009'"):
    open_ds(root)
  os.remove(os.path.join(root, 'train.txt'))
  for cache in (False, True):
    with pytest.raises(AnnotationError, match='train.txt'):
      open_ds(root, cache=cache)
  with pytest.raises(ValueError, match="'test'"):
    open_ds(root, 'test')


def test_missing_images_skipped_counted_or_strict(data, caplog):
  root, truth = data
  t = truth['train']['frames'][3]
  os.remove(os.path.join(root, 'train', t['seq'], 'rgb', t['frame'] + t['ext']))
  with caplog.at_level(logging.WARNING):
    ds = open_ds(root)
  assert ds.summary['missing_images'] == 1 and len(ds) == 3
  assert os.path.join(t['seq'], 'rgb', t['frame']) in caplog.text
  assert truth['train']['frames'].index(t) not in ds.annot_ids
  with pytest.raises(FileNotFoundError, match='1 image files are missing'):
    open_ds(root, strict=True)


# ----------------------------------------------------------------------------
# The index cache and worker pickling.

def test_cache_is_used_and_rebuilt_when_a_meta_changes(data):
  root, truth = data
  first = open_ds(root, cache=True)
  assert first._index_path is not None
  assert os.path.isdir(os.path.join(root, '.a2p_jax_index', 'ho3d_train'))
  assert not os.path.exists(os.path.join(root, 'train', '.a2p_jax_index'))
  again = open_ds(root, cache=True)
  assert isinstance(again._arrays['pose'], np.memmap)
  np.testing.assert_array_equal(again[1]['joints_cam'], first[1]['joints_cam'])
  t = truth['train']['frames'][2]
  _edit_meta(root, t, lambda m: m['handTrans'].__setitem__(2, m['handTrans'][2] - 0.1))
  st = os.stat(ho3d.meta_path(root, 'train', t['seq'], t['frame']))
  os.utime(ho3d.meta_path(root, 'train', t['seq'], t['frame']),
           ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
  moved = open_ds(root, cache=True)
  assert abs(moved[1]['mano']['right']['trans'][2] - first[1]['mano']['right']['trans'][2]
             - 0.1) < 1e-6                                  # OpenCV z = -OpenGL z


def test_dataset_pickles_for_workers(data):
  root, _ = data
  ds = open_ds(root, cache=True)
  clone = pickle.loads(pickle.dumps(ds))
  a, b = ds[2], clone[2]
  np.testing.assert_array_equal(a['joints_cam'], b['joints_cam'])
  np.testing.assert_array_equal(a['mano']['right']['pose'], b['mano']['right']['pose'])
