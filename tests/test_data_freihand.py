"""FreiHAND reader on a tiny folder in the official layout (tests/freihand_fixtures.py):
joint order and units, projection, the solved MANO translation, image versions,
the index cache, missing images and every malformed-file error."""

import logging
import os
import pickle

import jax
import numpy as np
import pytest

import mano_jax
from a2p_jax.data import freihand
from a2p_jax.data.freihand import FreiHAND
from a2p_jax.data.interhand26m import AnnotationError
from tests import freihand_fixtures as fx

# InterHand row (per finger thumb..pinky, tip 4 to base 1, then the wrist) ->
# FreiHAND row (wrist, then per finger base 1 to tip 4), written out by hand.
IH_FROM_FH = [4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9, 16, 15, 14, 13, 20, 19, 18, 17, 0]


@pytest.fixture(scope='module')
def base(tmp_path_factory, models):
  root = str(tmp_path_factory.mktemp('freihand') / 'FreiHAND_pub_v2')
  return root, fx.write(root, models[0])


@pytest.fixture
def data(base, tmp_path):
  return fx.private_copy(base, tmp_path)


def open_ds(root, split='training', **kw):
  kw.setdefault('cache', False)
  kw.setdefault('progress', False)
  return FreiHAND(root, split, **kw)


@pytest.fixture(scope='module')
def train_ds(base):
  return open_ds(base[0])


def test_layout_and_versions(train_ds, base):
  root, truth = base
  n = len(truth['training'])
  ds = train_ds
  assert len(ds) == 4 * n and ds.summary['missing_images'] == 0
  np.testing.assert_array_equal(ds.annot_ids, np.arange(4 * n))
  for i in range(len(ds)):
    ex = ds[i]
    assert ex['annot_id'] == ex['image_id'] == i
    assert ex['sample_id'] == i % n and ex['version'] == freihand.VERSIONS[i // n]
    assert ex['image_path'] == os.path.join(root, 'training', 'rgb', '%08d.jpg' % i)
    assert ex['image_size'] == (224, 224)
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(ds))[5]['joints_img'],
                                ds[5]['joints_img'])       # no cache: arrays travel along
  hom = open_ds(root, versions=('hom',))
  np.testing.assert_array_equal(hom.annot_ids, np.arange(n) + n)
  assert hom[1]['version'] == 'hom' and hom[1]['sample_id'] == 1
  np.testing.assert_array_equal(hom[1]['joints_cam'], ds[1]['joints_cam'])  # same annotation
  np.testing.assert_array_equal(open_ds(root, versions=[3, 'gs']).annot_ids,
                                np.r_[np.arange(n) + 3 * n, np.arange(n)])
  for bad in ('green', 4, ('gs', 'gs')):
    with pytest.raises(ValueError, match='versions'):
      open_ds(root, versions=bad)
  with pytest.raises(ValueError, match='evaluation has one image version'):
    open_ds(root, 'evaluation', versions='hom')
  with pytest.raises(ValueError, match='split'):
    open_ds(root, 'test')


@pytest.mark.parametrize('split', ['training', 'evaluation'])
def test_records_vs_truth(train_ds, base, split):
  root, truth = base
  samples = truth[split]
  ds = train_ds if split == 'training' else open_ds(root, split)
  if split == 'evaluation':
    assert len(ds) == len(samples) and ds.versions == ('gs',)
    np.testing.assert_array_equal(ds.annot_ids, np.arange(len(samples)))
  for i in range(len(ds)):
    ex, t = ds[i], samples[ds[i]['sample_id']]
    assert ex['hand_type'] == 'right' and ex['hand_type_valid'] == 1
    # Released metres -> mm, FreiHAND order -> InterHand order.
    np.testing.assert_allclose(ex['joints_cam'][:21], t['xyz'][IH_FROM_FH] * 1000.0, atol=1e-3)
    np.testing.assert_array_equal(ex['joints_cam'][:21], t['xyz_file'][IH_FROM_FH] * 1000.0)
    assert not ex['joints_cam'][21:].any() and not ex['joints_img'][21:].any()
    np.testing.assert_array_equal(ex['joint_valid'], np.r_[np.ones(21), np.zeros(21)])
    np.testing.assert_array_equal(ex['joints_img_valid'], ex['joint_valid'])
    assert ex['joint_valid'].dtype == ex['joints_img_valid'].dtype == np.float32
    # fh_utils.projectPoints: uv = (K @ xyz) / z.
    uvw = t['xyz'] @ t['K'].T
    np.testing.assert_allclose(ex['joints_img'][:21], (uvw[:, :2] / uvw[:, 2:])[IH_FROM_FH],
                               atol=1e-3)
    np.testing.assert_array_equal(ex['camera']['focal'], t['K'][[0, 1], [0, 1]])
    np.testing.assert_array_equal(ex['camera']['princpt'], t['K'][[0, 1], [2, 2]])
    uv = ex['joints_img'][:21]
    lo, hi = uv.min(0), uv.max(0)
    m = 0.1 * (hi - lo).max()
    np.testing.assert_allclose(ex['bbox'], [*(lo - m), *(hi - lo + 2 * m)], atol=1e-9)
    assert ex['mano']['left'] is None
    np.testing.assert_array_equal(ex['mano']['right']['pose'], t['pose'])
    np.testing.assert_array_equal(ex['mano']['right']['shape'], t['shape'])
    np.testing.assert_allclose(ex['mano']['right']['trans'], t['trans'], atol=1e-7)
    assert ex['ref_bone_length'] == pytest.approx(t['scale'], abs=1e-12)
  assert ds.summary['max_vertex_residual_mm'] < 1e-3


def test_fit_reproduces_released_mesh_and_joints(train_ds, base, models):
  """MANO(pose, shape, trans) with flat_hand_mean=False is the released mesh;
  the toolbox's joints of that mesh are the released joints."""
  samples = base[1]['training']
  for s, t in enumerate(samples):
    fit = train_ds[s]['mano']['right']
    with jax.enable_x64(True):
      verts = np.asarray(mano_jax.forward(models[0], fit['pose'], fit['shape'], fit['trans'])
                         .vertices)
      flat = np.asarray(mano_jax.forward(models[0], fit['pose'], fit['shape'], fit['trans'],
                                         flat_hand_mean=True).vertices)
    np.testing.assert_allclose(verts * 1000.0, t['verts'] * 1000.0, atol=1e-3)
    np.testing.assert_allclose(fx.freihand_joints(models[0], verts) * 1000.0,
                               t['xyz'] * 1000.0, atol=1e-3)
    # The other pose convention would miss by far more: the check can fail.
    assert np.abs(flat - t['verts']).max() > 1e-3


def test_translation_is_the_least_squares_solution(base, models):
  t = base[1]['training'][0]
  mean = t['verts_file'].mean(0, keepdims=True)
  ids = freihand._probe_ids(len(t['verts_file']))
  trans, resid = freihand.fit_translations(models[0], t['pose'][None], t['shape'][None], mean,
                                           t['verts_file'][None, ids], ids)
  # Direct least squares over all vertices: argmin_t |V0 + t - V|^2.
  with jax.enable_x64(True):
    v0 = np.asarray(mano_jax.forward(models[0], t['pose'], t['shape']).vertices)
  a = np.tile(np.eye(3), (len(v0), 1))
  want = np.linalg.lstsq(a, (t['verts_file'] - v0).reshape(-1), rcond=None)[0]
  np.testing.assert_allclose(trans[0], want, atol=1e-12)
  assert resid[0] < 1e-7


def test_read_points_is_the_released_arrays(base):
  root, truth = base
  verts = freihand.read_points(os.path.join(root, 'evaluation_verts.json'))
  np.testing.assert_array_equal(verts, [t['verts_file'] for t in truth['evaluation']])
  xyz = freihand.read_points(os.path.join(root, 'evaluation_xyz.json'), 21)
  np.testing.assert_array_equal(xyz, [t['xyz_file'] for t in truth['evaluation']])


def test_wrong_pose_convention_is_reported(data, models, caplog):
  """Vertices made with flat_hand_mean=True do not fit: a warning and the residual."""
  root, _ = data
  rng = np.random.default_rng(5)
  flat = [fx.make_sample(models[0], rng, flat_hand_mean=True) for _ in range(3)]
  fx.rewrite(root, 'training', 'mano', lambda o: [[s['mano'].tolist()] for s in flat])
  fx.rewrite(root, 'training', 'verts', lambda o: [s['verts_file'].tolist() for s in flat])
  with caplog.at_level(logging.WARNING):
    ds = open_ds(root)
  assert ds.summary['max_vertex_residual_mm'] > 1.0
  assert 'wrong hand model' in caplog.text


def test_cache_and_pickle(data, tmp_path):
  root, _ = data
  cache = str(tmp_path / 'cache')
  ds = open_ds(root, cache=True, cache_dir=cache)
  index_dir = ds._index_path
  assert index_dir is not None and any(f.startswith('fit_') for f in os.listdir(index_dir))
  again = open_ds(root, cache=True, cache_dir=cache)
  for i in (0, len(ds) - 1):
    np.testing.assert_array_equal(again[i]['mano']['right']['trans'],
                                  ds[i]['mano']['right']['trans'])
  copy = pickle.loads(pickle.dumps(again))
  assert copy._loaded is None           # reopened from the cache, not copied
  np.testing.assert_array_equal(copy[2]['joints_img'], ds[2]['joints_img'])
  # A changed file rebuilds the index.
  fx.rewrite(root, 'training', 'K', lambda o: [[[2 * k[0][0], 0.0, k[0][2]], k[1], k[2]]
                                               for k in o])
  changed = open_ds(root, cache=True, cache_dir=cache)
  assert changed[0]['camera']['focal'][0] == pytest.approx(2 * ds[0]['camera']['focal'][0])


def test_missing_images_are_skipped_and_counted(data, caplog):
  root, truth = data
  n = len(truth['training'])
  for i in (1, n + 2):
    os.remove(os.path.join(root, 'training', 'rgb', '%08d.jpg' % i))
  with caplog.at_level(logging.WARNING):
    ds = open_ds(root)
  assert ds.summary['missing_images'] == 2 and len(ds) == 4 * n - 2
  assert 1 not in ds.annot_ids and n + 2 not in ds.annot_ids
  assert '00000001.jpg' in caplog.text
  assert len(open_ds(root, versions='auto')) == n
  with pytest.raises(FileNotFoundError, match='2 image files'):
    open_ds(root, strict=True)


def _set(obj, *path_value):
  """obj with obj[p0][p1]... = value (in place); returns obj."""
  *path, value = path_value
  node = obj
  for key in path[:-1]:
    node = node[key]
  node[path[-1]] = value
  return obj


def _drop_last(obj, *path):
  """obj with the last element of obj[p0][p1]... removed; returns obj."""
  node = obj
  for key in path:
    node = node[key]
  node.pop()
  return obj


NAN = float('nan')


@pytest.mark.parametrize('split,key,edit,msg', [
    ('training', 'xyz', lambda o: _set(o, 1, o[1][:20]), r'training_xyz.json: \[1\]'),
    ('training', 'mano', lambda o: _set(o, 2, 0, 50, NAN), r'training_mano.json: \[2\]: .*NaN'),
    ('training', 'K', lambda o: _set(o, 0, 1, 1, NAN), r'training_K.json: \[0\]: .*NaN'),
    ('training', 'verts', lambda o: _set(o, 1, 5, 2, NAN), r'training_verts.json: \[1\]: .*NaN'),
    ('training', 'verts', lambda o: _drop_last(o, 2),
     r'training_verts.json: \[2\]: expected \(833'),
    ('training', 'verts', lambda o: _drop_last(o, 0, 3), r'training_verts.json: \[0\]: .*ragged'),
    ('training', 'mano', lambda o: _drop_last(o, 0, 0), r'training_mano.json: \[0\]: expected 61'),
    ('training', 'scale', lambda o: o[:2], 'training_scale.json has 2'),
    ('evaluation', 'xyz', lambda o: o + o, 'evaluation_xyz.json has 4'),
    ('training', 'K', lambda o: _set(o, 1, 0, 1, 3.0),
     r'training_K.json: \[1\]: expected a pinhole'),
    ('evaluation', 'K', lambda o: {'K': o}, 'evaluation_K.json: expected a JSON array'),
    ('training', 'scale', lambda o: _set(o, 1, 'x'), r'training_scale.json: \[1\]'),
])
def test_malformed_files_raise_naming_file_and_entry(data, split, key, edit, msg):
  root, _ = data
  fx.rewrite(root, split, key, edit)
  with pytest.raises(AnnotationError, match=msg):
    open_ds(root, split)


def test_bad_json_and_missing_files(data):
  root, _ = data
  path = os.path.join(root, 'training_xyz.json')
  with open(path) as fh:
    text = fh.read()
  with open(path, 'w') as fh:
    fh.write(text[:len(text) // 2])
  with pytest.raises(AnnotationError, match='training_xyz.json: .*invalid JSON'):
    open_ds(root)
  with open(path, 'w') as fh:
    fh.write(text + ' [1]')
  with pytest.raises(AnnotationError, match='training_xyz.json: unexpected data'):
    open_ds(root)
  os.remove(os.path.join(root, 'evaluation_verts.json'))
  with pytest.raises(AnnotationError, match='evaluation_verts.json: file .* not found'):
    open_ds(root, 'evaluation')


def test_vertex_count_must_match_the_model(data):
  """The reader takes the count from the file (FreiHAND's MANO: 778), then
  refuses a hand model with another count instead of fitting nonsense."""
  root, _ = data
  fx.rewrite(root, 'evaluation', 'verts', lambda o: [v[:778] for v in o])
  with pytest.raises(AnnotationError, match='evaluation_verts.json: 778 vertices .* 833'):
    open_ds(root, 'evaluation')
