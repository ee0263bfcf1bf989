"""InterHand2.6M reader: official formats and quirks, exact camera-space MANO,
subsets, missing images, the index cache, streaming JSON and every error."""

import json
import logging
import os
import pickle
import shutil

import jax
import numpy as np
import pytest

import mano_jax
from a2p_jax.data import interhand26m, jsonstream, synthetic
from a2p_jax.data.hands import load_hand_models
from a2p_jax.data.interhand26m import AnnotationError, InterHand26M
from tests import interhand_fixtures as fx
from tests.mano_like import mano_like

SPLIT = 'test'


@pytest.fixture(scope='module')
def plain_models():
  return load_hand_models(None)


@pytest.fixture(scope='module')
def models(plain_models):
  """The fixture's hands and the reader's: the procedural hand with MANO's
  rest wrist (tests/mano_like.py), so the root-joint term of the camera
  move matters."""
  return mano_like(plain_models)


@pytest.fixture(scope='module', autouse=True)
def _reader_uses_the_models(models):
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(interhand26m, 'load_hand_models', lambda mano_dir=None: models)
    yield


@pytest.fixture(scope='module')
def base(tmp_path_factory, models):
  root = str(tmp_path_factory.mktemp('ih26m'))
  truth = fx.write(root, models, split=SPLIT)
  return root, truth


@pytest.fixture
def data(base, tmp_path):
  """A private copy of the base set, free to edit."""
  return fx.private_copy(base, tmp_path)


def open_ds(root, **kw):
  kw.setdefault('cache', False)
  kw.setdefault('progress', False)
  return InterHand26M(root, SPLIT, **kw)


# ----------------------------------------------------------------------------
# Streaming JSON.

@pytest.mark.parametrize('chunk', [1, 5, 64, 1 << 20])
def test_jsonstream_matches_json_load(tmp_path, chunk):
  obj = {'info': {'v': [1, 2.5, None, True]}, 'images': [{'id': i, 'x': 1.0 / (i + 1),
         'name': f'Capture0/cam4/image{i}.jpg', 'big': 12345678901234}
         for i in range(50)], 'annotations': [], 'tail': -1.25e-30}
  path = tmp_path / 'a.json'
  for indent in (None, 1):
    path.write_text(json.dumps(obj, indent=indent))
    got = {'images': [], 'annotations': []}
    for k, v in jsonstream.iter_members(str(path), expand=('images', 'annotations'),
                                        chunk_chars=chunk):
      if k in ('images', 'annotations'):
        got[k].append(v)
      else:
        got[k] = v
    assert got == obj


@pytest.mark.parametrize('text,msg', [
    ('{"a": [1, 2', 'invalid JSON'),
    ('{"a": 1} x', 'unexpected data'),
    ('[1, 2]', "expected '{'"),
    ('{"images": {"a": 1}}', "array under key 'images'"),
    ('{"a": 1 "b": 2}', "expected ',' or '}'"),
    ('{"a": tru}', 'invalid JSON'),
])
def test_jsonstream_errors_name_the_file(tmp_path, text, msg):
  path = tmp_path / 'bad.json'
  path.write_text(text)
  with pytest.raises(jsonstream.JsonStreamError, match=msg) as e:
    list(jsonstream.iter_members(str(path), expand=('images',), chunk_chars=3))
  assert 'bad.json' in str(e.value)


@pytest.mark.parametrize('text, msg', [
    ('{"a": 1}', 'expected a JSON array'), ('[1, 2] 3', 'unexpected data after'),
    ('[1, 2', 'end of file'), ('[1, {"b": nan}]', 'bad.json')])
def test_jsonstream_elements_stream_and_errors_name_the_file(tmp_path, text, msg):
  path = tmp_path / 'bad.json'
  path.write_text('[[1, 2], {"k": [3]}, "s"]')
  assert list(jsonstream.iter_elements(str(path), chunk_chars=3)) == [[1, 2], {'k': [3]}, 's']
  path.write_text(text)
  with pytest.raises(jsonstream.JsonStreamError, match=msg) as e:
    list(jsonstream.iter_elements(str(path), chunk_chars=3))
  assert 'bad.json' in str(e.value)


# ----------------------------------------------------------------------------
# Reading the official format.

def test_reads_every_annotation_in_camera_space_vs_reference(data):
  """Each example against the official loader's formulas, written out here."""
  root, truth = data
  ds = open_ds(root)
  assert len(ds) == len(truth['annotations'])
  by_id = {ds[i]['annot_id']: ds[i] for i in range(len(ds))}
  for t in truth['annotations']:
    ex = by_id[t['annot_id']]
    cam = truth['cameras'][(t['capture'], t['camera'])]
    world = truth['frames'][(t['capture'], t['frame'])]['world']
    # Official world2cam: R @ (X - T) with campos T in mm.
    ref = np.dot(cam['camrot'], (world - cam['campos'][None]).T).T
    np.testing.assert_allclose(ex['joints_cam'], ref, atol=1e-9)
    assert ex['joints_cam'].shape == (42, 3)
    assert ex['image_path'] == os.path.join(root, 'images', SPLIT, t['file_name'])
    assert os.path.exists(ex['image_path'])
    np.testing.assert_array_equal(ex['joint_valid'], t['joint_valid'])
    assert ex['joint_valid'].shape == (42,)
    assert ex['hand_type'] == t['hand_type']
    assert ex['hand_type_valid'] == t['hand_type_valid']
    np.testing.assert_array_equal(ex['bbox'], t['bbox'])
    np.testing.assert_array_equal(ex['camera']['focal'], cam['focal'])
    np.testing.assert_array_equal(ex['camera']['princpt'], cam['princpt'])
    assert ex['image_id'] == t['image_id']
    assert ex['capture'] == t['capture'] and isinstance(ex['capture'], int)
    assert ex['camera_id'] == t['camera'] and ex['frame_idx'] == t['frame']
    assert ex['seq_name'] == fx.SEQS[t['hand_type']]
    assert ex['image_size'] == (512, 334)
  # Frame numbers are not zero-padded in the paths.
  assert any(p['image_path'].endswith('/image7.jpg') for p in by_id.values())


def test_mano_fits_in_camera_space_are_exact(data, models):
  """mano_jax on the returned fit lands on the camera-space joints (1e-6 m)."""
  root, truth = data
  ds = open_ds(root)
  checked = 0
  for i in range(len(ds)):
    ex = ds[i]
    for k, side in enumerate(('right', 'left')):
      fit = ex['mano'][side]
      if fit is None:
        continue
      assert fit['pose'].shape == (48,) and fit['shape'].shape == (10,)
      assert fit['trans'].shape == (3,)
      with jax.enable_x64(True):
        out = mano_jax.forward(models[k], fit['pose'], fit['shape'], fit['trans'],
                               joint_order='interhand')
        joints = np.asarray(out.joints)
      assert joints.dtype == np.float64
      np.testing.assert_allclose(joints, ex['joints_cam'][21 * k:21 * k + 21] / 1000.0,
                                 atol=1e-6)
      assert np.abs(joints - ex['joints_cam'][21 * k:21 * k + 21] / 1000.0).max() < 1e-9
      checked += 1
  assert checked >= 8


def test_mano_camera_fit_vs_reference(data, models):
  """Against InterWild's recipe: rotate the root pose, then solve the
  translation from the wrist of the zero-translation camera-space hand."""
  root, truth = data
  ds = open_ds(root)
  ex = next(ds[i] for i in range(len(ds)) if ds[i]['hand_type'] == 'interacting')
  t = next(a for a in truth['annotations'] if a['annot_id'] == ex['annot_id'])
  cam = truth['cameras'][(t['capture'], t['camera'])]
  fits = truth['frames'][(t['capture'], t['frame'])]['fits']
  for k, side in enumerate(('right', 'left')):
    world = fits[side]
    pose = np.array(world['pose'])
    with jax.enable_x64(True):
      rot = cam['camrot'] @ np.asarray(mano_jax.axis_angle_to_matrix(pose[:3]))
      pose[:3] = np.asarray(mano_jax.matrix_to_axis_angle(rot))
      w = mano_jax.forward(models[k], np.array(world['pose']), np.array(world['shape']),
                           np.array(world['trans']))
      wrist_cam = cam['camrot'] @ (np.asarray(w.joints)[0] - cam['campos'] / 1000.0)
      z = mano_jax.forward(models[k], pose, np.array(world['shape']), np.zeros(3))
      ref_trans = wrist_cam - np.asarray(z.joints)[0]
    np.testing.assert_allclose(ex['mano'][side]['trans'], ref_trans, atol=1e-12)
    with jax.enable_x64(True):
      got = np.asarray(mano_jax.axis_angle_to_matrix(ex['mano'][side]['pose'][:3]))
    np.testing.assert_allclose(got, rot, atol=1e-12)
    np.testing.assert_array_equal(ex['mano'][side]['pose'][3:], pose[3:])


def test_quirks_null_hands_missing_fits_hand_type_valid(data):
  root, _ = data
  ds = open_ds(root)
  exs = [ds[i] for i in range(len(ds))]
  right_only = [e for e in exs if e['frame_idx'] == 20683]
  assert right_only and all(e['mano']['left'] is None and e['mano']['right'] is not None
                            for e in right_only)
  left_only = [e for e in exs if e['frame_idx'] == 7]
  assert all(e['mano']['right'] is None and e['hand_type_valid'] == 0 for e in left_only)
  no_fit = [e for e in exs if (e['capture'], e['frame_idx']) == (1, 31)]
  assert no_fit and all(e['mano'] == {'right': None, 'left': None} for e in no_fit)
  assert ds.summary['without_mano_fit'] == len(no_fit)
  assert ds[-1]['annot_id'] == exs[-1]['annot_id']
  with pytest.raises(IndexError):
    ds[len(ds)]


def test_keys_as_strings_or_ints_and_padded_frames(data):
  """data.json with str capture / int camera / zero-padded frame keys still joins."""
  root, _ = data
  def edit_data(obj):
    for img in obj['images']:
      img['capture'] = str(img['capture'])
      img['camera'] = int(img['camera'])
  fx.rewrite(root, SPLIT, 'data', edit_data)
  fx.rewrite(root, SPLIT, 'joint_3d', lambda o: o.__setitem__(
      '0', {f'{int(k):06d}': v for k, v in o['0'].items()}))
  ds = open_ds(root)
  ex = ds[0]
  assert ex['capture'] == 0 and ex['camera_id'] == '400262'
  assert {ds[i]['frame_idx'] for i in range(len(ds))} == {1200, 20683, 7, 31}


# ----------------------------------------------------------------------------
# Subsets and missing images.

def test_subset_file_and_iterable(data, tmp_path, caplog):
  root, truth = data
  ids = [a['annot_id'] for a in truth['annotations']]
  path = tmp_path / 'aid_human_annot_test.txt'
  path.write_text(f'{ids[3]}\n\n{ids[0]}  # a comment\n{ids[5]}\n')
  ds = open_ds(root, subset=str(path))
  assert sorted(ds[i]['annot_id'] for i in range(len(ds))) == sorted([ids[0], ids[3], ids[5]])
  assert ds.summary['in_subset'] == 3
  ds = open_ds(root, subset=[ids[1]])
  assert len(ds) == 1 and ds[0]['annot_id'] == ids[1]
  with caplog.at_level(logging.WARNING):
    ds = open_ds(root, subset=[ids[1], 999999])
  assert len(ds) == 1 and ds.summary['subset_ids_not_found'] == 1
  assert '999999' in caplog.text
  with pytest.raises(AnnotationError, match='999999'):
    open_ds(root, subset=[ids[1], 999999], strict=True)
  path.write_text('12\nnot_an_id\n')
  with pytest.raises(AnnotationError, match='line 2'):
    open_ds(root, subset=str(path))


def test_missing_images_are_counted_logged_or_strict(data, caplog):
  root, truth = data
  gone = truth['annotations'][2]
  os.remove(os.path.join(root, 'images', SPLIT, gone['file_name']))
  shutil.rmtree(os.path.join(root, 'images', SPLIT, 'Capture1'))
  n_cap1 = sum(a['capture'] == 1 for a in truth['annotations'])
  with caplog.at_level(logging.WARNING):
    ds = open_ds(root)
  assert ds.summary['missing_images'] == 1 + n_cap1
  assert len(ds) == len(truth['annotations']) - 1 - n_cap1
  assert gone['annot_id'] not in {ds[i]['annot_id'] for i in range(len(ds))}
  assert 'missing' in caplog.text
  with pytest.raises(FileNotFoundError, match='missing'):
    open_ds(root, strict=True)
  assert len(open_ds(root, check_images=False)) == len(truth['annotations'])


def test_annot_ids_in_example_order(data, tmp_path):
  """`annot_ids` (from the index, no example read) of the whole set, a subset
  and a set with a missing image, also from the memory-mapped cache."""
  root, truth = data
  ids = [a['annot_id'] for a in truth['annotations']]
  os.remove(os.path.join(root, 'images', SPLIT, truth['annotations'][2]['file_name']))
  for ds in (open_ds(root), open_ds(root, subset=[ids[5], ids[0], ids[2]]),
             open_ds(root, cache=True, cache_dir=str(tmp_path / 'cache'))):
    assert ds.annot_ids.dtype == np.int64
    np.testing.assert_array_equal(ds.annot_ids, [ds[i]['annot_id'] for i in range(len(ds))])
  assert len(ds.annot_ids) == len(ids) - 1 and ids[2] not in ds.annot_ids


# ----------------------------------------------------------------------------
# The index cache.

def test_index_cache_reused_rebuilt_and_picklable(data, tmp_path, monkeypatch):
  root, truth = data
  cache = str(tmp_path / 'cache')
  ds = open_ds(root, cache=True, cache_dir=cache)
  first = ds[3]
  assert os.listdir(cache)
  def no_build(*a, **k):
    raise AssertionError('index rebuilt although the cache is up to date')
  monkeypatch.setattr(interhand26m, 'build_index', no_build)
  ds2 = open_ds(root, cache=True, cache_dir=cache)
  np.testing.assert_array_equal(ds2[3]['joints_cam'], first['joints_cam'])
  # Workers get the memory-mapped cache back, not a copy of it.
  blob = pickle.dumps(ds2)
  assert len(blob) < 20000
  ds3 = pickle.loads(blob)
  np.testing.assert_array_equal(ds3[3]['mano']['right']['trans'], first['mano']['right']['trans'])
  monkeypatch.undo()
  # A changed annotation file rebuilds the index.
  fx.rewrite(root, SPLIT, 'data', lambda o: o['annotations'][3].__setitem__(
      'bbox', [1.0, 2.0, 3.0, 4.0]))
  ds4 = open_ds(root, cache=True, cache_dir=cache)
  assert ds4[3]['bbox'].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_default_cache_beside_the_annotations(data):
  root, _ = data
  ds = InterHand26M(root, SPLIT, progress=False)
  assert os.path.isdir(os.path.join(root, 'annotations', SPLIT, '.a2p_jax_index'))
  assert len(InterHand26M(root, SPLIT, progress=False)) == len(ds)


def test_unwritable_data_folder_falls_back_to_user_cache(data, tmp_path, monkeypatch):
  root, truth = data
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  # A file where the index folder would go: the cache cannot be written there.
  open(os.path.join(root, 'annotations', SPLIT, '.a2p_jax_index'), 'w').close()
  ds = InterHand26M(root, SPLIT, progress=False)
  assert len(ds) == len(truth['annotations'])
  assert os.listdir(tmp_path / 'home' / '.cache' / 'a2p_jax')
  assert not [d for d in os.listdir(os.path.join(root, 'annotations', SPLIT))
              if d.startswith('.tmp_index_')]


# ----------------------------------------------------------------------------
# Errors: clear, naming the file and the key.

ERRORS = [
    ('data', lambda o: o['images'][1].pop('frame_idx'), 'data.json', "'frame_idx'"),
    ('data', lambda o: o['annotations'][2].pop('bbox'), 'data.json', "'bbox'"),
    ('data', lambda o: o['annotations'][0].__setitem__('joint_valid', [[1]] * 21),
     'data.json', 'joint_valid'),
    ('data', lambda o: o['annotations'][0].__setitem__('hand_type', 'both'),
     'data.json', 'hand_type'),
    ('data', lambda o: o['annotations'][0].__setitem__('image_id', 777), 'data.json',
     'image_id 777'),
    ('data', lambda o: o['annotations'][1].__setitem__('id', o['annotations'][0]['id']),
     'data.json', 'duplicate id'),
    ('data', lambda o: o.pop('annotations'), 'data.json', "'annotations'"),
    ('joint_3d', lambda o: o['0'].pop('20683'), 'joint_3d.json', "'20683'"),
    ('joint_3d', lambda o: o.pop('1'), 'joint_3d.json', "capture '1'"),
    ('joint_3d', lambda o: o['0']['7'].__setitem__('world_coord', [[0, 0, 0]] * 41),
     'joint_3d.json', 'world_coord'),
    ('joint_3d', lambda o: o['0']['7'].pop('world_coord'), 'joint_3d.json', 'world_coord'),
    ('camera', lambda o: [o['0'][k].pop('400263') for k in ('campos',)], 'camera.json',
     "'400263'"),
    ('camera', lambda o: o.pop('1'), 'camera.json', "capture '1'"),
    ('camera', lambda o: o['0']['camrot'].__setitem__(
        '400262', (np.array(o['0']['camrot']['400262']) * 1.1).tolist()),
     'camera.json', 'not a rotation'),
    ('camera', lambda o: o['0']['camrot'].__setitem__(
        '400262', (np.array(o['0']['camrot']['400262']) * [1, 1, -1]).tolist()),
     'camera.json', 'not a rotation'),
    ('camera', lambda o: o['0']['focal'].__setitem__('400262', [1000.0]), 'camera.json',
     'focal'),
    ('MANO_NeuralAnnot', lambda o: o['0']['1200']['right'].__setitem__('pose', [0.0] * 45),
     'MANO_NeuralAnnot.json', "'pose'"),
    ('MANO_NeuralAnnot', lambda o: o['0']['1200']['left'].pop('shape'),
     'MANO_NeuralAnnot.json', "'shape'"),
    ('MANO_NeuralAnnot', lambda o: o['0']['1200']['left'].__setitem__('trans', [0, None, 1]),
     'MANO_NeuralAnnot.json', "'trans'"),
]


@pytest.mark.parametrize('key,edit,file,what', ERRORS,
                         ids=[f'{e[0]}-{e[3]}' for e in ERRORS])
def test_malformed_annotations_raise_naming_file_and_key(data, key, edit, file, what):
  root, _ = data
  fx.rewrite(root, SPLIT, key, edit)
  with pytest.raises(AnnotationError) as e:
    open_ds(root)
  assert file in str(e.value) and what in str(e.value), str(e.value)


def test_invalid_json_and_missing_files(data):
  root, _ = data
  path = os.path.join(root, 'annotations', SPLIT, f'InterHand2.6M_{SPLIT}_joint_3d.json')
  text = open(path).read()
  open(path, 'w').write(text[:len(text) // 2])
  with pytest.raises(ValueError, match='joint_3d.json'):
    open_ds(root)
  os.remove(path)
  with pytest.raises(FileNotFoundError, match='joint_3d.json'):
    open_ds(root)
  with pytest.raises(ValueError, match='split'):
    InterHand26M(root, 'training')


# ----------------------------------------------------------------------------
# The synthetic set is read by the same code.

def test_reads_the_synthetic_set(tmp_path, plain_models, monkeypatch):
  models = plain_models   # the generator's hands
  monkeypatch.setattr(interhand26m, 'load_hand_models', lambda mano_dir=None: models)
  out = str(tmp_path / 'syn')
  synthetic.generate(out, synthetic.Options(num_frames=6, seed=3, num_cameras=2,
                                            image_size=(64, 48), single_hand_fraction=0.3),
                     progress=False)
  n = 0
  for split in ('train', 'val', 'test'):
    if not os.path.isdir(os.path.join(out, 'annotations', split)):
      continue
    ds = InterHand26M(out, split, progress=False, cache=False)
    assert ds.summary['missing_images'] == 0
    for i in range(len(ds)):
      ex = ds[i]
      for k, side in enumerate(('right', 'left')):
        fit = ex['mano'][side]
        if fit is None:
          assert not ex['joint_valid'][21 * k:21 * k + 21].any()
          continue
        with jax.enable_x64(True):
          joints = np.asarray(mano_jax.forward(models[k], fit['pose'], fit['shape'],
                                               fit['trans'], joint_order='interhand').joints)
        # The generator stores float32 joints: agreement to float32 precision.
        np.testing.assert_allclose(joints * 1000, ex['joints_cam'][21 * k:21 * k + 21],
                                   atol=1e-3)
      n += 1
  assert n == 12
