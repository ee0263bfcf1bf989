"""Feature teacher: pooling, the two-view flip (exact), PCA'd feature
stores, and the precompute split over processes (byte-identical)."""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from a2p_jax import teacher as teacher_lib
from a2p_jax.teacher import features
from a2p_jax.teacher import precompute as pre
from a2p_jax.teacher import store as store_lib


@dataclasses.dataclass(frozen=True)
class _Arch:
  embed_dim: int


class _FakeSapiens:
  """A feature map that is NOT mirror-equivariant (depends on the absolute
  column and mixes colours unevenly): the flip must come from the second view."""

  def __init__(self, c, seed):
    self.arch = _Arch(c)
    self.params = {'w': jnp.asarray(np.random.default_rng(seed).normal(size=(3 * 16 * 16, c)),
                                    jnp.float32)}

  def apply(self, params, images, *, features_only=False):
    assert features_only
    n, h, w, _ = images.shape
    p = images.reshape(n, h // 16, 16, w // 16, 16, 3).transpose(0, 1, 3, 2, 4, 5)
    f = jnp.tanh(p.reshape(n, h // 16, w // 16, -1) @ params['w'] / 30.0)
    col = jnp.arange(w // 16, dtype=jnp.float32)[None, None, :, None]
    return {'features': f + 0.1 * col}


def _teacher(batch=1, mesh=None, grid=(4, 3)):
  models = {'pose': _FakeSapiens(5, 0), 'seg': _FakeSapiens(3, 1), 'depth': _FakeSapiens(2, 2)}
  return features.FeatureTeacher(models, grid=grid, input_hw=(128, 96), batch=batch, mesh=mesh)


def test_pool_to_grid_vs_numpy():
  x = np.random.default_rng(0).normal(size=(2, 8, 6, 3)).astype(np.float32)
  got = np.asarray(features.pool_to_grid(jnp.asarray(x), (4, 3)))
  want = np.stack([[[x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean((1, 2)) for j in range(3)]
                    for i in range(4)]], 0)[0].transpose(2, 0, 1, 3)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match='5x3'):
    features.pool_to_grid(jnp.zeros((1, 8, 6, 1)), (5, 3))


def test_two_views_make_the_flip_exact():
  t = _teacher()
  assert t.num_channels == 2 * (5 + 3 + 2)
  perm = t.flip_permutation
  np.testing.assert_array_equal(perm[perm], np.arange(t.num_channels))  # an involution
  x = np.random.default_rng(1).normal(size=(2, 128, 96, 3)).astype(np.float32)
  fn = functools.partial(t._fns['pose'], t._params['pose'])
  a, b = np.asarray(fn(x)), np.asarray(fn(x[:, :, ::-1]))
  # The mirrored crop's maps = the crop's maps mirrored, views swapped.
  p = teacher_lib.flip_permutation_matrix(perm[:10])
  np.testing.assert_allclose(b, a[:, :, ::-1] @ p, rtol=1e-5, atol=1e-5)
  # Not a trivial identity: the single view alone is not mirror-equivariant.
  assert np.abs(b[..., :5] - a[:, :, ::-1, :5]).max() > 1e-2
  assert t.groups == {'keypoint': list(range(10)), 'segmentation': list(range(10, 16)),
                      'depth': list(range(16, 20))}


def _examples(n, tmp_path):
  from PIL import Image
  out = []
  rng = np.random.default_rng(3)
  for i in range(n):
    f = str(tmp_path / f'img{i}.png')
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), np.uint8)).save(f)
    out.append({'annot_id': 500 + 3 * i, 'image_path': f,
                'bbox': np.array([20 + i, 15, 40, 30], np.float32)})
  return out


def _store_bytes(path):
  return {f: open(os.path.join(path, f), 'rb').read() for f in sorted(os.listdir(path))
          if not f.endswith('.json')}


def test_feature_store_pca_and_process_split(tmp_path):
  src = _examples(7, tmp_path)
  t = _teacher(batch=2)
  with pytest.raises(ValueError, match='--pca'):
    pre.precompute(t, src, str(tmp_path / 'nopca'), shard_size=2, progress=False)
  one = str(tmp_path / 'one')
  st = pre.precompute(t, src, one, pca=3, pca_samples=7, batch=2, shard_size=2,
                      progress=False, process_index=0, process_count=1)
  assert st.meta['signal'] == 'features' and st.num_channels == 3 + 3 + 3
  b = store_lib.pca_basis(one, st.meta)
  assert b.shape == (20, 9)
  f = np.asarray(st.meta['flip_matrix'])
  np.testing.assert_allclose(f @ f, np.eye(9), atol=1e-6)   # still an exact involution
  np.testing.assert_allclose(np.abs(f).sum(0), 1.0, atol=1e-6)
  maps, _ = st.get(src[4]['annot_id'])
  want = t([src[4]])[0][0].reshape(-1, 20) @ b
  np.testing.assert_allclose(maps.reshape(-1, 9).astype(np.float64), want, atol=2e-3)
  # Two processes, each its own shards: process 1 stops without completing,
  # process 0 finds every shard committed and completes: the same bytes.
  split = str(tmp_path / 'split')
  assert pre.precompute(t, src, split, pca=3, pca_samples=7, batch=2, shard_size=2,
                        progress=False, process_index=0, process_count=2) is None
  assert not store_lib.is_complete(split)
  assert sorted(store_lib.committed_shards(split)) == [0, 2]
  st2 = pre.precompute(t, src, split, pca=3, pca_samples=7, batch=2, shard_size=2,
                       progress=False, process_index=1, process_count=2)
  assert st2 is not None and store_lib.is_complete(split)
  assert _store_bytes(split) == _store_bytes(one)
  assert 'bytes per example' in pre.storage_report(st.meta, len(src))


def test_feature_teacher_over_a_device_mesh_is_the_same(tmp_path):
  devices = jax.local_devices()
  if len(devices) < 2:
    pytest.skip('one device (the 8-device run is in test_precompute_cli_8_devices)')
  src = _examples(4, tmp_path)
  a = _teacher(batch=1, mesh=jax.sharding.Mesh(np.asarray(devices[:1]), ('data',)))(src)
  b = _teacher(batch=len(devices))(src)
  for (ma, aa), (mb, ab) in zip(a, b):
    np.testing.assert_allclose(ma, mb, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(aa, ab)


def _sapiens_files(d):
  """Small random Sapiens checkpoints with the official key names (the
  reference of test_teacher_sapiens_jax), one per task, as .pth files."""
  from tests import test_teacher_sapiens_jax as ref
  for task, pad in pre.PATCH_PADDING.items():
    os.makedirs(d / task, exist_ok=True)
    ref.save_pth(ref.reference(task, pad, seed=len(task)), d / task / f'tiny_{task}.pth')
  return ref.NATIVE_HW


@pytest.fixture(scope='module')
def tiny_synthetic(tmp_path_factory):
  from tests import tiny_training
  return tiny_training.tiny_data(tmp_path_factory)['root']


def test_precompute_cli_8_devices_processes_and_resume(tiny_synthetic, tmp_path):
  """The sapiens_features CLI on the synthetic set: 8 devices (one example
  per device) write the bytes of 1 device; two processes, each its share of
  shards, write them too; a lost shard is recomputed to the same bytes."""
  pytest.importorskip('torch')
  import subprocess
  import sys

  from tests import tiny_training
  hw = _sapiens_files(tmp_path / 'sapiens')

  def args(out, batch, *extra):
    return ['--teacher', 'sapiens_features', '--dataset', 'synthetic', '--root', tiny_synthetic,
            '--split', 'train', '--out', str(out), '--sapiens_dir', str(tmp_path / 'sapiens'),
            '--teacher_hw', str(hw[0]), str(hw[1]), '--grid', '4', '3', '--pca', '4',
            '--pca_samples', '8', '--shard_size', '16', '--batch', str(batch),
            '--sapiens_num_heads', '2', *extra]

  one = tmp_path / 'one'
  pre.main(args(one, 1))
  st = store_lib.open_store(str(one))
  assert st.meta['signal'] == 'features' and st.num_channels == 12 and len(st) >= 32
  env = tiny_training.subprocess_env(str(tmp_path / 'cache'), devices=8)
  code = ('import sys, jax; from a2p_jax.teacher import precompute as pre; '
          'assert jax.local_device_count() == 8; pre.main(sys.argv[1:])')
  run = subprocess.run([sys.executable, '-c', code, *args(tmp_path / 'eight', 8)],
                       cwd=tiny_training.REPO, env=env, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'bytes per example' in run.stdout
  assert _store_bytes(tmp_path / 'eight') == _store_bytes(one)
  split = tmp_path / 'split'
  pre.main(args(split, 1, '--process_index', '0', '--process_count', '2'))
  assert not store_lib.is_complete(str(split))
  pre.main(args(split, 1, '--process_index', '1', '--process_count', '2'))
  assert store_lib.is_complete(str(split)) and _store_bytes(split) == _store_bytes(one)
  for f in ('shard-00001.ids.npy', 'shard-00001.array_record', 'complete.json'):
    os.remove(split / f)
  pre.main(args(split, 1))
  assert _store_bytes(split) == _store_bytes(one)


@pytest.mark.slow
def test_features_path_end_to_end_on_the_synthetic_set(tiny_synthetic, tmp_path):
  """precompute (random small Sapiens-JAX) -> feature store -> stage-1
  training with config.teacher.signal='features' -> evaluation. Plumbing,
  not accuracy: a random teacher's features carry no hand information."""
  pytest.importorskip('torch')
  from a2p_jax.eval import run
  from a2p_jax.train import stage1
  from tests import tiny_training
  hw = _sapiens_files(tmp_path / 'sapiens')
  store = tmp_path / 'store'
  pre.main(['--teacher', 'sapiens_features', '--dataset', 'synthetic', '--root', tiny_synthetic,
            '--split', 'train', '--out', str(store), '--sapiens_dir', str(tmp_path / 'sapiens'),
            '--teacher_hw', str(hw[0]), str(hw[1]), '--grid', '4', '3', '--pca', '4',
            '--sapiens_num_heads', '2', '--batch', '4'])
  data = {'root': tiny_synthetic, 'priors': str(store)}
  c = tiny_training.config(data, num_train_steps=2, **{'teacher.signal': 'features'})
  out = stage1.train_and_evaluate(c, str(tmp_path / 'run'))
  assert out['step'] == 2 and np.isfinite(out['metrics']['loss_prior'])
  summary = run.evaluate_checkpoint(str(tmp_path / 'run'), str(tmp_path / 'eval'),
                                    root=tiny_synthetic, split='test', limit=2, chunk=2,
                                    penetration=False)
  assert np.isfinite(summary['interwild/mpjpe_all'])
  c_out = tiny_training.config(data, num_train_steps=2)   # the store holds features
  with pytest.raises(ValueError, match="signal='outputs'"):
    stage1.train_and_evaluate(c_out, str(tmp_path / 'run2'))
