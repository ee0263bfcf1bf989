"""Stage-1 training end to end on the tiny config: the loss falls, the step
traces once, 8 devices (data parallel and FSDP) give the 1-device numbers,
resume equals an uninterrupted run, a non-finite step stops training and
leaves the last checkpoint intact."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from a2p_jax.inference.stage1 import load_stage1
from a2p_jax.runtime import checkpoint as ckpt_lib
from a2p_jax.train import loop as loop_lib
from a2p_jax.train import stage1
from tests import tiny_training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module', autouse=True)
def compilation_cache(tmp_path_factory):
  """A persistent compilation cache for this module only: the tests here run
  the same float32 training program several times (resume, tripwire) and
  compile it once. (Not suite-wide: with jax 0.10.2 the cache hands float32
  executables to float64 calls made under jax.enable_x64.)"""
  from jax._src import compilation_cache as cc
  old = (jax.config.jax_compilation_cache_dir,
         jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update('jax_compilation_cache_dir', str(tmp_path_factory.mktemp('jax_cache')))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  cc.reset_cache()
  yield
  jax.config.update('jax_compilation_cache_dir', old[0])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', old[1])
  cc.reset_cache()


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  """A small synthetic set (and its oracle priors), shared by the tests."""
  return tiny_training.tiny_data(tmp_path_factory)


_config = tiny_training.config


def _params(state):
  return [np.asarray(x) for x in jax.tree.leaves(ckpt_lib.flatten(state))]


def _trained_config(data):
  return _config(data, num_train_steps=20, log_every=5, checkpoint_every=10,
                 **{'optim.lr': 3e-3, 'optim.warmup_steps': 0})


@pytest.fixture(scope='module')
def trained(data, tmp_path_factory):
  """20 steps of the tiny config, checkpoints at 10 and 20 (shared by the
  loss, resume, eval and infer tests)."""
  workdir = tmp_path_factory.mktemp('trained')
  return str(workdir), stage1.train_and_evaluate(_trained_config(data), str(workdir))


def test_loss_falls_and_step_traces_once(trained):
  workdir, got = trained
  assert got['step'] == 20 and got['train_step_traces'] == 1
  hist = got['history']
  assert all(np.isfinite(h['loss']) for h in hist)
  # The total is dominated by betas, which images barely determine; the 2D
  # joints are what a few steps visibly learn.
  first, last = hist[0], hist[-1]
  assert last['loss'] < 0.92 * first['loss'], [round(h['loss'], 3) for h in hist]
  assert last['loss_joints_2d'] < 0.75 * first['loss_joints_2d'], \
      [round(h['loss_joints_2d'], 3) for h in hist]
  assert os.listdir(os.path.join(workdir, 'tb'))  # TensorBoard events written


def test_eval_scores_the_checkpoint(trained, data, tmp_path):
  from a2p_jax.eval import run
  workdir, _ = trained
  summary = run.evaluate_checkpoint(workdir, str(tmp_path / 'eval'), root=data['root'],
                                    split='test', limit=4, chunk=4)
  doc = json.load(open(tmp_path / 'eval' / 'report.json'))
  assert doc['step'] == 20 and doc['checkpoint'].endswith(os.path.join('checkpoints', '20'))
  assert doc['dataset'] == 'synthetic' and doc['protocols'] == ['interwild', 'intaghand']
  for k in ('interwild/mpjpe_all', 'interwild/mpvpe_all', 'rrve', 'mrrpe'):
    assert np.isfinite(summary[k]) and summary[k] > 0, (k, summary)
  if summary['count_intaghand']:
    assert np.isfinite(summary['intaghand/mpjpe']) and summary['intaghand/mpjpe'] > 0
  for f in ('best.png', 'median.png', 'worst.png', 'joint_error.png'):
    assert os.path.getsize(tmp_path / 'eval' / 'figures' / f) > 0
  # A corrupted newest checkpoint is an error for eval (no silent fallback).
  import shutil
  broken = tmp_path / 'broken'
  shutil.copytree(workdir, broken)
  for dirpath, _, files in os.walk(broken / 'checkpoints' / '20' / 'state'):
    for f in files:
      if not f.endswith('.json') and 'METADATA' not in f:
        with open(os.path.join(dirpath, f), 'r+b') as fh:
          fh.truncate(8)
  with pytest.raises(ckpt_lib.CheckpointError, match='20'):
    run.evaluate_checkpoint(str(broken), str(tmp_path / 'eval2'), root=data['root'], limit=2)
  with pytest.raises(ckpt_lib.CheckpointError, match='no checkpoint'):
    load_stage1(str(tmp_path / 'nothing'))


def test_infer_writes_hands_meshes_and_overlays(trained, data, tmp_path):
  import glob

  import mano_jax
  import trimesh
  from a2p_jax import infer
  from a2p_jax.data.hands import load_hand_models
  workdir, _ = trained
  images = sorted(glob.glob(os.path.join(data['root'], 'images', 'test', '*', '*', '*',
                                         '*.jpg')))[:2]
  recs = infer.run(images, workdir, str(tmp_path / 'out'),
                   boxes=['10,10,30,30;30,20,30,30', '5,5,60,40;20,20,40,40'])
  models = load_hand_models()
  for rec, d in zip(recs, sorted(os.listdir(tmp_path / 'out'))):
    for k, side in enumerate(('right', 'left')):
      h = rec[side]
      v = np.asarray(mano_jax.forward(models[k], np.array(h['pose']), np.array(h['betas']),
                                      np.array(h['transl'])).vertices)
      obj = trimesh.load(tmp_path / 'out' / d / f'{side}.obj', process=False)
      np.testing.assert_allclose(obj.vertices, v, atol=1e-5)
    assert os.path.getsize(tmp_path / 'out' / d / 'overlay.png') > 0
  bad = tmp_path / 'bad.jpg'
  bad.write_bytes(b'not an image')
  with pytest.raises(infer.InferenceError, match='bad.jpg'):
    infer.run([str(bad)], workdir, str(tmp_path / 'out2'))
  with pytest.raises(infer.InferenceError, match='boxes'):
    infer.run(images[:1], workdir, str(tmp_path / 'out2'), boxes=['1,2,3'])


def test_eval_and_infer_never_change_a_workdir(trained, data, tmp_path):
  """Evaluation and inference only read training runs, stage 1 and stage 2:
  a save in progress (orbax temporary folder) survives them, an output
  folder inside a run is refused, and an unreadable newest checkpoint is a
  clear error that moves nothing aside; every file of both workdirs stays
  byte-identical."""
  import glob
  import shutil

  from a2p_jax import infer
  from a2p_jax.configs import diffusion_tiny
  from a2p_jax.eval import run
  from a2p_jax.inference.stage2 import load_repair
  w1, w2 = str(tmp_path / 'stage1'), str(tmp_path / 'stage2')
  shutil.copytree(trained[0], w1)
  tiny_training.untrained_stage2_run(diffusion_tiny.get_config('test'), w2, steps=(1, 2))
  for w in (w1, w2):  # another process saving right now
    os.makedirs(os.path.join(w, 'checkpoints', '99.orbax-checkpoint-tmp-7', 'state'))
  images = sorted(glob.glob(os.path.join(data['root'], 'images', 'test', '*', '*', '*',
                                         '*.jpg')))[:1]
  digests = lambda: {w: tiny_training.tree_digest(w) for w in (w1, w2)}

  before = digests()
  with pytest.raises(ValueError, match='inside the training run'):
    run.evaluate_checkpoint(w1, os.path.join(w1, 'eval'), root=data['root'], limit=2)
  with pytest.raises(ValueError, match='inside the training run'):
    infer.run(images, w1, os.path.join(w2, 'infer'), stage2=w2)
  run.evaluate_checkpoint(w1, str(tmp_path / 'eval'), root=data['root'], limit=2, chunk=2,
                          penetration=False)  # the files are the point here, not the metrics
  infer.run(images, w1, str(tmp_path / 'infer'))
  assert load_repair(w2)[1].stage == 'stage2'
  assert digests() == before

  tiny_training.break_checkpoint(w2, 2, 3)
  before = digests()
  with pytest.raises(ckpt_lib.CheckpointError, match=os.path.join('checkpoints', '3')):
    infer.run(images, w1, str(tmp_path / 'infer2'), stage2=w2)
  with pytest.raises(ckpt_lib.CheckpointError, match=os.path.join('checkpoints', '3')):
    run.evaluate_checkpoint(w1, str(tmp_path / 'eval2'), root=data['root'], limit=2, stage2=w2)
  tiny_training.break_checkpoint(w1, 20, 21)
  before[w1] = tiny_training.tree_digest(w1)
  with pytest.raises(ckpt_lib.CheckpointError, match=os.path.join('checkpoints', '21')):
    run.evaluate_checkpoint(w1, str(tmp_path / 'eval3'), root=data['root'], limit=2)
  assert infer.main(images + ['--checkpoint', w1, '--out', str(tmp_path / 'infer3')]) == 2
  assert digests() == before


def test_resume_equals_uninterrupted(trained, data, tmp_path):
  """The trained run's copy without its step-20 checkpoint resumes from 10
  (model, optimizer and data iterator) and ends where the run ended."""
  import shutil
  workdir, full = trained
  shutil.copytree(workdir, tmp_path / 'b')
  shutil.rmtree(tmp_path / 'b' / 'checkpoints' / '20')
  resumed = stage1.train_and_evaluate(_trained_config(data), str(tmp_path / 'b'))
  assert resumed['step'] == 20 and resumed['history'][0]['step'] == 15
  for x, y in zip(_params(full['state']), _params(resumed['state'])):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow  # the loop's tripwire on a toy model: tests/test_train_loop.py (default run)
def test_nonfinite_step_stops_and_keeps_checkpoint(data, tmp_path):
  stage1.train_and_evaluate(_config(data, num_train_steps=2), str(tmp_path))
  with pytest.raises(loop_lib.NonFiniteError, match='non-finite'):
    stage1.train_and_evaluate(_config(data, num_train_steps=4, **{'optim.lr': float('nan')}),
                              str(tmp_path))
  steps = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit())
  assert steps == [2]
  # The kept checkpoint is complete and finite.
  from a2p_jax.runtime import sharding as shard_lib
  channels = ckpt_lib.read_meta(str(tmp_path))[1]['prior_channels']
  _, state, _, _ = stage1.create_train_state(_config(data), channels, 1, shard_lib.make_mesh(1))
  mngr = ckpt_lib.manager(str(tmp_path), async_save=False)
  step, state, _ = ckpt_lib.restore_exact(mngr, state)
  mngr.close()
  assert step == 2 and all(np.isfinite(x).all() for x in _params(state))


def _batch_file(data, tmp_path, with_priors):
  from a2p_jax.data.hands import load_hand_models
  from a2p_jax.train import input as input_lib
  c = _config(data)
  src = input_lib.source(c, str(tmp_path), 'train')
  priors = input_lib.prior_store(c, str(tmp_path), src) if with_priors else None
  ds = input_lib.train_dataset(c, src, load_hand_models(), local_batch=8, priors=priors)
  b = next(iter(ds))
  keys = stage1.BATCH_KEYS + (('priors',) if with_priors else ())
  path = tmp_path / 'batch.npz'
  np.savez(path, **{k: b[k] for k in keys})
  return str(path), (b['priors'].shape[-1] if with_priors else 1)


@pytest.mark.slow  # 8-device training in the default run: test_diffusion_train, test_bad_input
def test_eight_devices_match_one_device(data, tmp_path):
  path, channels = _batch_file(data, tmp_path, with_priors=bool(data['priors']))
  env = dict(os.environ, XLA_FLAGS=tiny_training.xla_flags(8),
             JAX_PLATFORMS='cpu')
  run = subprocess.run([sys.executable, os.path.join(REPO, 'tests', 'train_step_probe.py'),
                        path, str(channels)], cwd=REPO, env=env,
                       capture_output=True, text=True, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  one, dp, fsdp = json.loads(run.stdout.strip().splitlines()[-1])
  assert one['devices'] == 1 and dp['devices'] == 8 and fsdp['devices'] == 8
  assert dp['traces'] == 1 and fsdp['traces'] == 1
  assert any('fsdp' in s for s in fsdp['specs'])  # parameters really are split
  for other in (dp, fsdp):
    np.testing.assert_allclose(other['loss'], one['loss'], rtol=1e-5)
    np.testing.assert_allclose(other['param_sum'], one['param_sum'], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(other['param_abs'], one['param_abs'], rtol=1e-5)


def test_training_on_a_mix(data, tmp_path):
  """config.data.mix: two sources (here the synthetic set twice, as two
  groups) train end to end, with each part's own prior store; a part
  without a root is a clear error."""
  import ml_collections
  mix = ml_collections.ConfigDict({
      'a': {'dataset': 'synthetic', 'root': data['root'], 'split': 'train', 'group': '3d',
            'priors': data['priors']},
      'b': {'dataset': 'synthetic', 'root': data['root'], 'split': 'train', 'group': '2d',
            'weight': 2.0, 'priors': data['priors']}})
  # The trained fixture's optimizer settings: the same program, compiled once.
  c = _config(data, num_train_steps=2, **{'data.mix': mix, 'optim.lr': 3e-3,
                                          'optim.warmup_steps': 0})
  got = stage1.train_and_evaluate(c, str(tmp_path / 'run'))
  assert got['step'] == 2 and all(np.isfinite(h['loss']) for h in got['history'])
  from a2p_jax.train import input as input_lib
  parts, epoch, store = input_lib.mixture(c, str(tmp_path))
  assert [p.name for p in parts] == ['a', 'b'] and epoch == 2 * len(parts[0].source)
  np.testing.assert_allclose([p.probability for p in parts], [0.5, 0.5])
  assert store is not None
  bad = _config(data, **{'data.mix': ml_collections.ConfigDict({'a': {'dataset': 'synthetic',
                                                                        'root': ''}})})
  with pytest.raises(FileNotFoundError, match='config.data.mix.a.root'):
    input_lib.mixture(bad, str(tmp_path))


def test_eval_on_freihand(trained, tmp_path):
  """A checkpoint scored on FreiHAND's evaluation split with FreiHAND's
  protocol (right-hand slot, FreiHAND's joints of the mesh); the run's
  folder is only read."""
  from a2p_jax.data.hands import load_hand_models
  from a2p_jax.eval import run
  from tests import freihand_fixtures
  workdir, _ = trained
  root = str(tmp_path / 'FreiHAND_pub_v2')
  freihand_fixtures.write(root, load_hand_models(None)[0], n_train=1, n_eval=3)
  before = tiny_training.tree_digest(workdir)
  summary = run.evaluate_checkpoint_freihand(workdir, str(tmp_path / 'eval'), root=root)
  assert summary['count'] == 3 and tiny_training.tree_digest(workdir) == before
  for k in ('pa_mpjpe', 'pa_mpvpe', 'mpjpe', 'mpvpe'):
    assert np.isfinite(summary[f'freihand/{k}']) and summary[f'freihand/{k}'] > 0, k
  assert summary['freihand/pa_mpjpe'] <= summary['freihand/mpjpe']
  assert 0 <= summary['freihand/f5'] <= summary['freihand/f15'] <= 1
  doc = json.load(open(tmp_path / 'eval' / 'report.json'))
  assert doc['step'] == 20 and doc['protocols'] == ['freihand']


def test_stage1_pairs_of_every_checkpoint(trained, data, tmp_path):
  """`build_pairs --stage1_step all` writes the penetrating predictions of
  every saved checkpoint (10 and 20) with their ground truth: exactly the
  concatenation of each checkpoint's own prediction_pairs, one part file
  per checkpoint beside the output; the run is only read; a missing step
  and an existing output are errors naming them."""
  from a2p_jax import build_pairs
  from a2p_jax.data import open_source
  from a2p_jax.data.hands import load_hand_models
  from a2p_jax.diffusion import pairs as pairs_lib
  from a2p_jax.inference.stage1 import params_predict_fn
  workdir = trained[0]
  before = tiny_training.tree_digest(workdir)
  out = str(tmp_path / 'p.npz')
  args = ['--root', data['root'], '--dataset', 'synthetic', '--out', out, '--stage1_workdir',
          workdir, '--max_examples', '6', '--min_depth_mm', '0']
  assert build_pairs.main(args + ['--stage1_step', 'all']) == 0
  gt, cond, source = pairs_lib.load(out)
  models = load_hand_models(None)
  ds = open_source('synthetic', data['root'], 'train')
  want = [pairs_lib.prediction_pairs(params_predict_fn(workdir, step=s), ds, models,
                                     max_examples=6, progress=False) for s in (10, 20)]
  assert len(gt['betas']) == sum(len(w[0]['betas']) for w in want) > 0
  for k in pairs_lib.KEYS:
    np.testing.assert_array_equal(gt[k], np.concatenate([w[0][k] for w in want]))
    np.testing.assert_array_equal(cond[k], np.concatenate([w[1][k] for w in want]))
  assert np.all(source == 1)
  assert sorted(os.listdir(tmp_path)) == ['p.npz', 'p.step10.npz', 'p.step20.npz']
  assert tiny_training.tree_digest(workdir) == before
  with pytest.raises(SystemExit):
    build_pairs.main(args)  # the output exists
  with pytest.raises(ckpt_lib.CheckpointError, match=r'step\(s\) \[15\]'):
    build_pairs.main(args[:-8] + ['--out', str(tmp_path / 'q.npz'), '--stage1_workdir',
                                  workdir, '--stage1_step', '10,15'])
