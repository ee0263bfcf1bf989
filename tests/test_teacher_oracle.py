"""Oracle teacher maps, resumable precompute, the pipeline join and
train.input.prior_store, on a small synthetic set."""

import os
import pickle

import ml_collections
import numpy as np
import pytest

from a2p_jax import teacher as teacher_lib
from a2p_jax.data import pipeline, synthetic
from a2p_jax.data.hands import load_hand_models
from a2p_jax.data.interhand26m import InterHand26M
from a2p_jax.teacher import oracle
from a2p_jax.teacher import precompute as pre
from a2p_jax.teacher import store as store_lib


@pytest.fixture(scope='module')
def syn(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('teacher') / 'syn')
  synthetic.generate(root, synthetic.Options(num_frames=6, seed=0, image_size=(96, 72),
                                             workers=1), progress=False)
  src = InterHand26M(root, 'train', progress=False)
  store = pre.precompute('oracle', src, str(tmp_path_factory.mktemp('store') / 'o'),
                         shard_size=5, progress=False)
  return {'root': root, 'src': src, 'store': store}


def test_oracle_maps(syn):
  t = oracle.OracleTeacher()
  checked = 0
  for i in range(len(syn['src'])):
    ex = syn['src'][i]
    pri = oracle.load_priors(oracle.prior_path(ex['image_path']))
    maps, affine = t.one(ex)
    assert maps.shape == (32, 24, 57)
    # Heatmap peaks sit at the visible keypoints (within a grid cell).
    kp = pri['keypoints'] @ affine[:, :2].T + affine[:, 2]
    for c in np.nonzero(pri['keypoint_visible'])[0]:
      if not (0 <= kp[c, 0] <= 23 and 0 <= kp[c, 1] <= 31):
        continue
      r, q = np.unravel_index(np.argmax(maps[..., c]), (32, 24))
      assert abs(q - kp[c, 0]) <= 1 and abs(r - kp[c, 1]) <= 1, (i, c)
      assert maps[r, q, c] > 0.5
      checked += 1
    # Absent hands have empty heatmaps.
    for k, sl in enumerate((slice(0, 21), slice(21, 42))):
      if not np.asarray(ex['joint_valid'])[sl].any():
        assert maps[..., sl].max() == 0
    # Segmentation part groups are fractions summing to 1; the hand mask is
    # their non-background part.
    seg = maps[..., 42:55]
    np.testing.assert_allclose(seg.sum(-1), 1.0, atol=1e-6)
    assert seg.min() >= 0
    np.testing.assert_allclose(maps[..., 56], 1 - seg[..., 0], atol=1e-6)
    # Depth: zero off the hand, increasing with the rendered depth on it.
    hand = maps[..., 56] > 0.99
    assert np.all(maps[..., 55][maps[..., 56] == 0] == 0)
    if hand.sum() > 5:
      rr, cc = np.nonzero(hand)
      inv = np.linalg.inv(np.vstack([affine, [0, 0, 1]]))[:2]
      uv = np.stack([cc, rr, np.ones_like(cc)], -1) @ inv.T
      z = pri['depth'][np.rint(uv[:, 1]).astype(int), np.rint(uv[:, 0]).astype(int)]
      zz = z.astype(np.float64)
      ok = zz > 0
      if ok.sum() > 5 and np.std(zz[ok]) > 1e-4:
        assert np.corrcoef(zz[ok], maps[..., 55][hand][ok])[0, 1] > 0.6  # cell means vs points
  assert checked >= 20


def test_precompute_resume_equals_uninterrupted(syn, tmp_path):
  src = syn['src']
  out = str(tmp_path / 'r')

  class Stop(Exception):
    pass

  def stop_after_7(n):
    if n == 7:
      raise Stop()
  with pytest.raises(Stop):
    pre.precompute('oracle', src, out, shard_size=5, progress=False, callback=stop_after_7)
  assert store_lib.committed_shards(out) == [0]
  assert not store_lib.is_complete(out)
  seen = []
  st = pre.precompute('oracle', src, out, shard_size=5, progress=False, callback=seen.append)
  assert len(seen) == len(src) - 5  # the committed shard was skipped
  ref = syn['store']
  assert store_lib.is_complete(out) and len(st) == len(ref) == len(src)
  for name in sorted(os.listdir(ref.path)):
    if name.startswith('shard-'):
      with open(os.path.join(ref.path, name), 'rb') as a, open(os.path.join(out, name), 'rb') as b:
        assert a.read() == b.read(), name
  for aid in teacher_lib.source_annot_ids(src):
    np.testing.assert_array_equal(st.get(aid)[0], ref.get(aid)[0])
  # A rerun of a complete store computes nothing.
  seen.clear()
  pre.precompute('oracle', src, out, shard_size=5, progress=False, callback=seen.append)
  assert not seen


def _cfg(**kw):
  base = dict(input_hw=(128, 128), prior_hw=(16, 16), scale=0.0, rotation_deg=0.0,
              rotation_prob=0.0, shift=0.0, color=0.0, flip_prob=0.0)
  base.update(kw)
  return pipeline.AugmentConfig(**base)


def _batches(syn, cfg, n, prior_groups=None):
  ds = pipeline.make_dataset(syn['src'], cfg=cfg, models=load_hand_models(), batch_size=1,
                             seed=3, training=True,
                             join=teacher_lib.join_priors(syn['store'], prior_groups))
  it = iter(ds)
  return [next(it) for _ in range(n)]


def test_join_flip_mirrors_maps_and_swaps_channels(syn):
  n = 6
  plain = _batches(syn, _cfg(), n)
  flipped = _batches(syn, _cfg(flip_prob=1.0), n)
  f = np.asarray(syn['store'].flip_matrix)
  for a, b in zip(plain, flipped):
    assert b['flipped'][0] == 1 and a['flipped'][0] == 0
    pa, pb = a['priors'][0], b['priors'][0]
    assert pa.shape == (16, 16, 57) and pa.dtype == np.float32
    assert pa.max() > 0.1
    np.testing.assert_allclose(pb, pa[:, ::-1] @ f, atol=2e-4)
    # Right-hand heatmaps of the flipped example are the left-hand ones mirrored.
    np.testing.assert_allclose(pb[..., :21], pa[:, ::-1, 21:42], atol=2e-4)


def test_join_rotation_moves_heatmap_peaks_with_the_keypoints(syn):
  cfg = _cfg(rotation_deg=40.0, rotation_prob=1.0, scale=0.2, shift=0.05)
  stride = 128 / 16
  checked = 0
  for b in _batches(syn, cfg, 8):
    pri, j2d, jv = b['priors'][0], b['joints_2d'][0], b['joint_valid'][0]
    for c in range(42):
      if jv[c] == 0 or pri[..., c].max() < 0.3 * pri[..., :42].max():
        continue
      cell = (j2d[c] + 0.5) / stride - 0.5   # crop px -> prior cell
      if not np.all((cell >= 0) & (cell <= 15)):
        continue
      r, q = np.unravel_index(np.argmax(pri[..., c]), (16, 16))
      assert abs(q - cell[0]) <= 1.0 and abs(r - cell[1]) <= 1.0, (c, (q, r), cell)
      checked += 1
  assert checked >= 20


def test_join_prior_groups_select_channels_and_pickle(syn):
  full = _batches(syn, _cfg(), 2)
  sub = _batches(syn, _cfg(), 2, prior_groups='keypoint,depth')
  for a, b in zip(full, sub):
    assert b['priors'].shape[-1] == 44 == teacher_lib.prior_channels(syn['store'],
                                                                     'keypoint,depth')
    np.testing.assert_array_equal(b['priors'], a['priors'][..., list(range(42)) + [55, 56]])
  join = teacher_lib.JoinPriors(syn['store'], np.arange(57, dtype=np.int32))
  again = pickle.loads(pickle.dumps(join))
  ex = syn['src'][0]
  np.testing.assert_array_equal(again(ex)['priors'], join(ex)['priors'])


def _config(root, priors, signal='outputs'):
  c = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict(dict(
      dataset='synthetic', root=root, priors=priors, train_split='train', mano_dir='',
      prior_groups='keypoint,segmentation,depth'))
  c.teacher = ml_collections.ConfigDict(dict(signal=signal))
  return c


def test_prior_store_from_config(syn, tmp_path):
  from a2p_jax.train import input as input_lib
  src = syn['src']
  assert input_lib.prior_store(_config(syn['root'], ''), str(tmp_path), src) is None
  st = input_lib.prior_store(_config(syn['root'], 'oracle'), str(tmp_path), src)
  assert st.path == os.path.join(str(tmp_path), 'data', 'priors', 'oracle_train')
  assert len(st) == len(src) and st.meta['teacher'] == 'oracle'
  stamp = os.path.getmtime(os.path.join(st.path, 'shard-00000.array_record'))
  st2 = input_lib.prior_store(_config(syn['root'], 'oracle'), str(tmp_path), src)  # reused
  with pytest.raises(ValueError, match="teacher.signal='features'.*holds 'outputs'"):
    input_lib.prior_store(_config(syn['root'], 'oracle', 'features'), str(tmp_path), src)
  assert os.path.getmtime(os.path.join(st2.path, 'shard-00000.array_record')) == stamp
  st3 = input_lib.prior_store(_config(syn['root'], syn['store'].path), str(tmp_path), src)
  assert st3.path == syn['store'].path

  class Bigger:
    annot_ids = list(teacher_lib.source_annot_ids(src)) + [987654]
  with pytest.raises(KeyError, match='987654') as e:
    input_lib.prior_store(_config(syn['root'], syn['store'].path), str(tmp_path), Bigger())
  assert syn['store'].path in str(e.value)


def test_cli_writes_the_same_store(syn, tmp_path):
  out = str(tmp_path / 'cli')
  pre.main(['--teacher', 'oracle', '--dataset', 'synthetic', '--root', syn['root'],
            '--split', 'train', '--out', out, '--shard_size', '5'])
  st = store_lib.open_store(out)
  assert store_lib.is_complete(out) and len(st) == len(syn['store'])
  for aid in syn['store'].ids():
    np.testing.assert_array_equal(st.get(aid)[0], syn['store'].get(aid)[0])
