"""COCO-WholeBody hands reader: InterWild's selection rules, 2D keypoints in
InterHand order, hand boxes, NeuralAnnot fits in camera space with their own
cameras, the streamed and memory-mapped index, and every error."""

import logging
import os
import pickle

import jax
import numpy as np
import pytest

import mano_jax
from a2p_jax.data import coco_wholebody
from a2p_jax.data.coco_wholebody import COCOWholeBody, MissingFileError
from a2p_jax.data.interhand26m import AnnotationError
from tests import coco_wholebody_fixtures as fx

# InterHand position j (thumb4..1, index4..1, middle, ring, pinky, wrist) ->
# COCO-WholeBody keypoint (wrist, thumb1..4, forefinger1..4, ...), by hand.
IH_FROM_COCO = [4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9, 16, 15, 14, 13, 20, 19, 18, 17, 0]


@pytest.fixture(scope='module')
def base(tmp_path_factory, models):
  root = str(tmp_path_factory.mktemp('coco'))
  return root, fx.write(root, models)


@pytest.fixture
def data(base, tmp_path):
  return fx.private_copy(base, tmp_path)


def open_ds(root, split='train', **kw):
  kw.setdefault('cache', False)
  kw.setdefault('progress', False)
  return COCOWholeBody(root, split, **kw)


def examples(ds):
  return {ex['annot_id']: ex for ex in (ds[i] for i in range(len(ds)))}


def sanitize_ref(box, width, height):
  """InterWild's sanitize_bbox, written out (None when the box is dropped)."""
  x, y, w, h = box
  x1, y1 = max(0, x), max(0, y)
  x2 = min(width - 1, x1 + max(0, w - 1))
  y2 = min(height - 1, y1 + max(0, h - 1))
  if w * h > 0 and x2 > x1 and y2 > y1:
    return np.array([x1, y1, x2 - x1, y2 - y1])
  return None


def project_fit(model, fit, camera):
  """InterHand-order joints (21, 2) px and vertices (V, 3) m of a fit."""
  with jax.enable_x64(True):
    out = mano_jax.forward(model, np.asarray(fit['pose']), np.asarray(fit['shape']),
                           np.asarray(fit['trans']), joint_order='interhand')
    joints, verts = np.asarray(out.joints), np.asarray(out.vertices)
  uv = joints[:, :2] / joints[:, 2:] * camera['focal'] + camera['princpt']
  return uv, verts


# ----------------------------------------------------------------------------
# Checks shared by the tests and the mutation tests (which show they fail on
# a wrong convention).

def check_keypoints(ds, truth):
  got = examples(ds)
  assert sorted(got) == sorted(truth['examples'])
  for aid, t in truth['examples'].items():
    ex = got[aid]
    for k, side in enumerate(fx.SIDES):
      hand = t['hands'][side]
      uv, valid = ex['joints_img'][21 * k:21 * k + 21], ex['joints_img_valid'][21 * k:21 * k + 21]
      if hand is None:
        assert not valid.any()
        continue
      np.testing.assert_array_equal(valid, hand['labelled'][IH_FROM_COCO].astype(np.float32))
      np.testing.assert_allclose(uv, hand['xy'][IH_FROM_COCO], atol=1e-3)
      # Wrist labelled (v = 2), thumb1 a low confidence (> 0), thumb2 v = 0.
      assert valid[20] == 1 and valid[3] == 1 and valid[2] == 0


def check_fits(ds, truth, models):
  got = examples(ds)
  checked = 0
  for aid, t in truth['examples'].items():
    ex = got[aid]
    for k, side in enumerate(fx.SIDES):
      fit = ex['mano'][side]
      if side not in t['fits']:
        assert fit is None
        continue
      truth_fit = t['fits'][side]
      assert fit['pose'].shape == (48,) and fit['shape'].shape == (10,)
      assert fit['trans'].shape == (3,) and fit['pose'].dtype == np.float64
      np.testing.assert_allclose(fit['camera']['focal'], truth_fit['focal'], rtol=1e-12)
      np.testing.assert_allclose(fit['camera']['princpt'], truth_fit['princpt'], rtol=1e-12)
      uv, verts = project_fit(models[k], fit, fit['camera'])
      assert np.abs(verts - truth_fit['verts']).max() < 1e-4          # 0.1 mm
      checked += 1
      valid = ex['joints_img_valid'][21 * k:21 * k + 21] > 0
      if t['hands'][side] is None:          # a fit of a hand flagged invalid: no keypoints
        assert not valid.any()
        continue
      assert valid.sum() >= 10
      # The file's keypoints are the projections of the fit with its camera.
      np.testing.assert_allclose(ex['joints_img'][21 * k:21 * k + 21][valid], uv[valid],
                                 atol=1e-3)
  assert checked >= 7


# ----------------------------------------------------------------------------
# Reading the official format.

def test_examples_vs_truth(base):
  root, truth = base
  ds = open_ds(root)
  t_train = truth['train']
  assert len(ds) == len(t_train['examples']) == 7
  # File order, with the skipped annotations left out.
  np.testing.assert_array_equal(ds.annot_ids, list(t_train['examples']))
  for aid, t in t_train['examples'].items():
    ex = ds[list(ds.annot_ids).index(aid)]
    assert ex['annot_id'] == aid and ex['image_id'] == t['image_id']
    assert ex['image_path'] == os.path.join(root, 'images', 'train2017', t['file_name'])
    assert os.path.exists(ex['image_path'])
    assert ex['image_size'] == fx.IMAGE_HW
    want_type = {(True, True): 'interacting', (True, False): 'right',
                 (False, True): 'left'}[t['valid']]
    assert ex['hand_type'] == want_type and ex['hand_type_valid'] == 1
    assert ex['joints_cam'].shape == (42, 3) and not ex['joints_cam'].any()
    assert ex['joint_valid'].shape == (42,) and not ex['joint_valid'].any()
    assert ex['joints_img'].shape == (42, 2) and ex['joints_img'].dtype == np.float64
    assert ex['joints_img_valid'].dtype == np.float32
    h, w = fx.IMAGE_HW
    boxes = {}
    for side, ok in zip(fx.SIDES, t['valid']):
      boxes[side] = sanitize_ref(t['rec'][f'{side}hand_box'], w, h) if ok else None
      if boxes[side] is None:
        assert ex['hand_bbox'][side] is None
      else:
        np.testing.assert_allclose(ex['hand_bbox'][side], boxes[side], atol=1e-9)
    present = [b for b in boxes.values() if b is not None]
    lo = np.min([b[:2] for b in present], 0)
    hi = np.max([b[:2] + b[2:] for b in present], 0)
    np.testing.assert_allclose(ex['bbox'], np.concatenate([lo, hi - lo]), atol=1e-9)
    np.testing.assert_array_equal(ex['body_bbox'], t['rec']['bbox'])
  check_keypoints(ds, t_train)


def test_box_rules(base):
  root, truth = base
  by_case = {t['case']: aid for aid, t in truth['train']['examples'].items()}
  ds = examples(open_ds(root))
  outside = ds[by_case['right_box_outside']]
  assert outside['hand_type'] == 'interacting' and outside['hand_bbox']['right'] is None
  np.testing.assert_allclose(outside['bbox'], outside['hand_bbox']['left'])
  clipped = ds[by_case['left_box_clipped']]
  # [-12.5, 470, 40, 30] in a 640 x 480 image: clipped to x >= 0, y <= 479.
  np.testing.assert_allclose(clipped['hand_bbox']['left'], [0.0, 470.0, 39.0, 9.0])
  np.testing.assert_allclose(clipped['bbox'], [0.0, 470.0, 39.0, 9.0])


def test_fits_are_camera_space_with_their_own_cameras(base, models):
  root, truth = base
  check_fits(open_ds(root), truth['train'], models)


def test_record_camera_is_the_right_fits_else_the_left_fits(base):
  root, truth = base
  ds = examples(open_ds(root))
  seen = set()
  for aid, t in truth['train']['examples'].items():
    ex = ds[aid]
    src = 'right' if 'right' in t['fits'] else 'left' if 'left' in t['fits'] else None
    if src is None:
      assert ex['camera_valid'] == 0
      assert ex['mano'] == {'right': None, 'left': None}
      np.testing.assert_array_equal(ex['camera']['focal'], [640.0, 640.0])
      np.testing.assert_array_equal(ex['camera']['princpt'], [319.5, 239.5])
    else:
      assert ex['camera_valid'] == 1
      np.testing.assert_array_equal(ex['camera']['focal'], t['fits'][src]['focal'])
      np.testing.assert_array_equal(ex['camera']['princpt'], t['fits'][src]['princpt'])
    seen.add((src, tuple(sorted(t['fits']))))
  # Covered: both fits, right only, left only, none.
  assert {('right', ('left', 'right')), ('right', ('right',)), ('left', ('left',)),
          (None, ())} <= seen
  # A fit is read whatever the hand's *_valid flag says (as InterWild does).
  aid = next(a for a, t in truth['train']['examples'].items()
             if t['case'] == 'right_with_left_fit')
  assert ds[aid]['hand_type'] == 'right' and ds[aid]['mano']['left'] is not None


def test_skip_rules_are_counted(base):
  root, truth = base
  for split in ('train', 'val'):
    ds = open_ds(root, split)
    t = truth[split]
    s = ds.summary
    assert s['annotations'] == t['annotations']
    for rule, aids in t['skipped'].items():
      assert s[f'skipped_{rule}'] == len(aids) == 1
      assert not set(aids) & set(ds.annot_ids)
    assert s['examples'] == len(ds) == len(t['examples'])
  assert open_ds(root).summary['mano_entries_unmatched'] == 1     # the no-valid-hand entry
  assert open_ds(root).summary['without_mano_fit'] == 2


def test_val_reads_no_fits_and_needs_no_mano_file(data):
  root, truth = data
  os.remove(fx.mano_path(root))
  ds = open_ds(root, 'val')
  assert len(ds) == 3
  for i in range(len(ds)):
    ex = ds[i]
    assert ex['mano'] == {'right': None, 'left': None} and ex['camera_valid'] == 0
    assert '/images/val2017/' in ex['image_path']
  check_keypoints(ds, truth['val'])
  with pytest.raises(MissingFileError, match='MSCOCO_train_MANO_NeuralAnnot.json'):
    open_ds(root, 'train')


def test_annotations_before_images_and_int_flags(data):
  root, truth = data
  def edit(obj):
    for ann in obj['annotations']:
      for side in fx.SIDES:
        ann[f'{side}hand_valid'] = int(ann[f'{side}hand_valid'])
    obj['images'] = obj.pop('images')        # now after the annotations
  fx.rewrite(fx.wholebody_path(root, 'train'), edit)
  check_keypoints(open_ds(root), truth['train'])


# ----------------------------------------------------------------------------
# The index cache.

def test_cache_memory_maps_and_rebuilds_on_change(data, models):
  root, truth = data
  first = open_ds(root, cache=True)
  cache = os.path.join(root, 'annotations', '.a2p_jax_index', 'coco_wholebody_train')
  assert os.path.isfile(os.path.join(cache, 'annot_joints_img.npy'))
  second = open_ds(root, cache=True)
  assert isinstance(second._arrays['annot_joints_img'], np.memmap)
  assert second.summary == first.summary
  check_keypoints(second, truth['train'])
  check_fits(second, truth['train'], models)
  # Workers reopen the memory-mapped cache.
  clone = pickle.loads(pickle.dumps(second))
  assert isinstance(clone._arrays['fit_params'], np.memmap)
  np.testing.assert_array_equal(clone[0]['joints_img'], second[0]['joints_img'])
  # A changed annotation file (size / mtime) rebuilds the index.
  fx.rewrite(fx.wholebody_path(root, 'train'),
             lambda o: o.__setitem__('annotations', o['annotations'][1:]))
  third = open_ds(root, cache=True)
  assert len(third) == len(first) - 1
  fx.rewrite(fx.mano_path(root), lambda o: o.pop(str(third.annot_ids[0])))
  fourth = open_ds(root, cache=True)
  assert fourth.summary['without_mano_fit'] == third.summary['without_mano_fit'] + 1


def test_cache_dir(data, tmp_path):
  root, _ = data
  ds = open_ds(root, cache=True, cache_dir=str(tmp_path / 'c'))
  assert len(os.listdir(tmp_path / 'c')) == 1
  assert not os.path.exists(os.path.join(root, 'annotations', '.a2p_jax_index'))
  assert isinstance(ds._arrays['annot_id'], np.memmap)


# ----------------------------------------------------------------------------
# Missing images.

def test_missing_images_are_skipped_counted_or_strict(data, caplog):
  root, truth = data
  t = next(iter(truth['train']['examples'].values()))
  os.remove(os.path.join(root, 'images', 'train2017', t['file_name']))
  gone = [a for a, e in truth['train']['examples'].items() if e['image_id'] == t['image_id']]
  assert len(gone) == 2                        # two people on that image
  with caplog.at_level(logging.WARNING):
    ds = open_ds(root)
  assert ds.summary['missing_images'] == 2 and len(ds) == 5
  assert not set(gone) & set(ds.annot_ids)
  assert 'missing' in caplog.text and t['file_name'] in caplog.text
  with pytest.raises(FileNotFoundError, match=t['file_name']):
    open_ds(root, strict=True)


# ----------------------------------------------------------------------------
# Bad input.

def test_missing_annotation_file(data):
  root, _ = data
  os.remove(fx.wholebody_path(root, 'train'))
  for cache in (False, True):
    with pytest.raises(AnnotationError, match='coco_wholebody_train_v1.0.json') as e:
      open_ds(root, cache=cache)
    assert isinstance(e.value, FileNotFoundError)


def _first_kept(obj):
  return next(a for a in obj['annotations'] if a['righthand_valid'] and not a['iscrowd'])


def _edit_first(key, value):
  def edit(obj):
    ann = _first_kept(obj)
    if value is KeyError:
      del ann[key]
    else:
      ann[key] = value
  return edit


@pytest.mark.parametrize('edit,match', [
    (_edit_first('righthand_kpts', KeyError), "missing key 'righthand_kpts'"),
    (_edit_first('lefthand_kpts', [1.0] * 60), r'lefthand_kpts.*63'),
    (_edit_first('righthand_box', [1.0, 2.0, 3.0]), r'righthand_box.*4'),
    (_edit_first('righthand_valid', 'yes'), 'righthand_valid'),
    (_edit_first('iscrowd', KeyError), "missing key 'iscrowd'"),
    (_edit_first('image_id', 999), 'image_id 999 is not in images'),
    (lambda o: _first_kept(o)['lefthand_kpts'].__setitem__(4, float('nan')),
     r'lefthand_kpts.*NaN'),
    (lambda o: o['images'][0].pop('file_name'), "missing key 'file_name'"),
    (lambda o: o['images'][1].__setitem__('width', 0), 'must be positive'),
])
def test_bad_wholebody_file(data, edit, match):
  root, _ = data
  fx.rewrite(fx.wholebody_path(root, 'train'), edit)
  with pytest.raises(AnnotationError, match=match) as e:
    open_ds(root)
  assert 'coco_wholebody_train_v1.0.json' in str(e.value)


def _edit_fit(path):
  def edit(obj):
    entry = next(v for v in obj.values() if v['right'] is not None)
    node = entry['right']
    for key in path[:-1]:
      node = node[key]
    path[-1](node)
  return edit


@pytest.mark.parametrize('edit,match', [
    (_edit_fit([lambda f: f['mano_param']['pose'].__setitem__(5, float('nan'))]),
     r"\['pose'\].*NaN"),
    (_edit_fit([lambda f: f['mano_param'].pop('shape')]), "missing key 'shape'"),
    (_edit_fit([lambda f: f['mano_param'].__setitem__('trans', [0.0, 1.0])]),
     r"\['trans'\].*3 numbers"),
    (_edit_fit([lambda f: f.pop('cam_param')]), "missing key 'cam_param'"),
    (_edit_fit([lambda f: f['cam_param'].__setitem__('focal', [-5.0, 100.0])]),
     'must be positive'),
    (lambda o: next(v for v in o.values() if v['left'] is not None).pop('left'),
     "missing key 'left'"),
    (lambda o: o.__setitem__('not_an_id', {'right': None, 'left': None}),
     'expected an annotation id'),
])
def test_bad_mano_file(data, edit, match):
  root, _ = data
  fx.rewrite(fx.mano_path(root), edit)
  with pytest.raises(AnnotationError, match=match) as e:
    open_ds(root)
  assert 'MSCOCO_train_MANO_NeuralAnnot.json' in str(e.value)


def test_bad_split(base):
  with pytest.raises(ValueError, match='split'):
    COCOWholeBody(base[0], 'test')


# ----------------------------------------------------------------------------
# The checks catch wrong conventions.

def test_checks_catch_a_wrong_joint_order(base, monkeypatch):
  root, truth = base
  # Tip and base swapped within each finger (wrist-first order read as is).
  monkeypatch.setattr(coco_wholebody, 'COCO_TO_INTERHAND', np.arange(21)[::-1].copy())
  with pytest.raises(AssertionError):
    check_keypoints(open_ds(root), truth['train'])


def test_checks_catch_swapped_hand_cameras_and_mm_translation(data, models):
  root, truth = data
  def swap(obj):
    for entry in obj.values():
      if entry['right'] is not None and entry['left'] is not None:
        entry['right']['cam_param'], entry['left']['cam_param'] = (
            entry['left']['cam_param'], entry['right']['cam_param'])
  fx.rewrite(fx.mano_path(root), swap)
  with pytest.raises(AssertionError):
    check_fits(open_ds(root), truth['train'], models)
  def to_mm(obj):
    for entry in obj.values():
      for fit in entry.values():
        if fit is not None:
          fit['mano_param']['trans'] = [1000.0 * t for t in fit['mano_param']['trans']]
  fx.rewrite(fx.mano_path(root), swap)
  fx.rewrite(fx.mano_path(root), to_mm)
  with pytest.raises(AssertionError):
    check_fits(open_ds(root), truth['train'], models)
