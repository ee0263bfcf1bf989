"""Prior store: round trip, missing ids, bad files, pickling, PCA + flip matrix."""

import os
import pickle

import numpy as np
import pytest

from a2p_jax import teacher as teacher_lib
from a2p_jax.teacher import oracle
from a2p_jax.teacher import precompute as pre
from a2p_jax.teacher import store as store_lib


class _FakeTeacher:
  """Oracle channel layout, random-but-deterministic maps per annot_id."""
  name = 'fake'

  def __init__(self, grid=(8, 6)):
    self.grid = grid
    self.channel_names = oracle.channel_names()
    self.groups = oracle.groups()
    self.flip_permutation = oracle.flip_permutation()
    self.num_channels = len(self.channel_names)

  def config(self):
    return {'teacher': self.name}

  def __call__(self, exs):
    out = []
    for ex in exs:
      rng = np.random.default_rng(ex['annot_id'])
      maps = rng.random(self.grid + (self.num_channels,)).astype(np.float32)
      maps[..., :42] *= rng.random(42) < 0.5   # structure for the PCA
      affine = np.array([[0.5, 0, ex['annot_id']], [0, 0.5, 1.0]], np.float32)
      out.append((maps, affine))
    return out


def _source(n):
  return [{'annot_id': 1000 + 7 * i} for i in range(n)]


def test_round_trip_missing_id_and_pickle(tmp_path):
  t = _FakeTeacher()
  src = _source(7)
  st = pre.precompute(t, src, str(tmp_path / 's'), grid=t.grid, shard_size=3, progress=False)
  assert len(st) == 7 and st.num_channels == 57 and st.grid == (8, 6)
  assert set(st.meta['groups']) == {'keypoint', 'segmentation', 'depth'}
  for ex, (want, aff) in zip(src, t(src)):
    assert ex['annot_id'] in st
    maps, affine = st.get(ex['annot_id'])
    assert maps.dtype == np.float16 and affine.dtype == np.float32
    np.testing.assert_array_equal(maps, want.astype(np.float16))
    np.testing.assert_array_equal(affine, aff)
  assert 5 not in st
  with pytest.raises(KeyError, match=r"annot_id 5\b") as e:
    st.get(5)
  assert st.path in str(e.value)
  st2 = pickle.loads(pickle.dumps(st))
  np.testing.assert_array_equal(st2.get(1007)[0], st.get(1007)[0])
  with pytest.raises(KeyError, match='annot_id 3'):
    st.check_covers([1000, 3])
  st.check_covers([1000, 1007])
  assert teacher_lib.prior_channels(st, 'keypoint,depth') == 44
  assert teacher_lib.prior_channels(st, None) == 57
  with pytest.raises(ValueError, match='nope'):
    teacher_lib.prior_channels(st, 'keypoint,nope')


def test_bad_files_are_named(tmp_path):
  t = _FakeTeacher()
  out = str(tmp_path / 's')
  pre.precompute(t, _source(4), out, grid=t.grid, shard_size=2, progress=False)
  shard = os.path.join(out, 'shard-00001.array_record')
  with open(shard, 'rb') as f:
    data = f.read()
  with open(shard, 'wb') as f:
    f.write(data[:len(data) // 3])
  st = store_lib.open_store(out)
  np.testing.assert_array_equal(st.get(1000)[0].shape, (8, 6, 57))  # shard 0 intact
  with pytest.raises(store_lib.StoreError, match='shard-00001.array_record'):
    st.get(1014)
  # A record with float32 maps (wrong dtype) / truncated record bytes.
  rec = store_lib.encode_record(3, np.zeros((2, 2, 3)), np.zeros((2, 3)))
  bad = rec[:5] + b'f' + rec[6:]  # dtype code byte
  with pytest.raises(store_lib.StoreError, match='float16'):
    store_lib.decode_record(bad, 'somefile')
  with pytest.raises(store_lib.StoreError, match='somefile.*truncated'):
    store_lib.decode_record(rec[:-4], 'somefile')
  with pytest.raises(FileNotFoundError, match='not a prior store'):
    store_lib.open_store(str(tmp_path))


def test_pca_basis_and_flip_matrix(tmp_path):
  t = _FakeTeacher()
  src = _source(6)
  st = pre.precompute(t, src, str(tmp_path / 'p'), grid=t.grid, pca=4, pca_samples=6,
                      shard_size=4, progress=False)
  b = store_lib.pca_basis(st.path, st.meta)
  groups = st.meta['groups']
  assert [len(groups[g]) for g in ('keypoint', 'segmentation', 'depth')] == [4, 4, 2]
  assert b.shape == (57, 10) and st.num_channels == 10
  np.testing.assert_allclose(b.T @ b, np.eye(10), atol=1e-6)
  # Groups survive: each reduced channel reads only its group's channels.
  full = st.meta['pca']['groups_full']
  for g in groups:
    other = np.setdiff1d(np.arange(57), full[g])
    assert np.all(b[np.ix_(other, groups[g])] == 0)
  p = teacher_lib.flip_permutation_matrix(t.flip_permutation)
  f = np.asarray(st.meta['flip_matrix'])
  np.testing.assert_allclose(f, b.T @ p @ b, atol=1e-6)
  # Flip-invariant subspace: f is a signed permutation (an exact involution).
  np.testing.assert_allclose(f @ f, np.eye(10), atol=1e-6)
  # Stored = full maps projected; mirroring commutes with the projection.
  maps, _ = st.get(src[2]['annot_id'])
  want = t([src[2]])[0][0].reshape(-1, 57) @ b
  np.testing.assert_allclose(maps.reshape(-1, 10), want, atol=2e-2)
  # For maps in the basis' span, mirroring commutes with the projection.
  z = np.random.default_rng(0).normal(size=(5, 10))
  np.testing.assert_allclose(((z @ b.T) @ p) @ b, z @ f, atol=1e-6)
  # Rerunning with other arguments is refused, not overwritten.
  with pytest.raises(ValueError, match='other arguments'):
    pre.precompute(t, src, str(tmp_path / 'p'), grid=t.grid, pca=3, shard_size=4,
                   progress=False)


def test_oracle_flip_permutation_is_an_involution():
  perm = oracle.flip_permutation()
  np.testing.assert_array_equal(perm[perm], np.arange(57))
  names = oracle.channel_names()
  for c, d in enumerate(perm):
    assert names[c].replace('right', 'X').replace('left', 'right').replace('X', 'left') \
        == names[d]


def test_teacher_package_does_not_import_torch():
  import subprocess
  import sys
  code = ('import sys, a2p_jax.teacher, a2p_jax.teacher.sapiens, a2p_jax.teacher.precompute; '
          'assert "torch" not in sys.modules')
  subprocess.run([sys.executable, '-c', code], check=True, timeout=120,
                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
