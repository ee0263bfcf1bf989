"""Stage-2 training on the tiny test config: the loss falls, the step traces
once, the checkpoint (with the normalization statistics) restores and a
resumed run continues from it; the repair loads from the workdir."""

import jax
import numpy as np
import pytest

from a2p_jax.data.hands import load_hand_models
from a2p_jax.diffusion import pairs as pairs_lib
from a2p_jax.inference.stage2 import load_repair, restore
from a2p_jax.train import stage2
from a2p_jax.configs import diffusion_tiny
from tests import diffusion_fixtures as fx
from tests import tiny_training


@pytest.fixture(scope='module')
def pairs_file(tmp_path_factory):
  models = load_hand_models(None)
  rng = np.random.default_rng(0)
  gt = fx.placed(fx.random_params(rng, 64), models, rng, np.full(64, 0.25))
  cond = {k: np.array(v) for k, v in gt.items()}
  # A constant corruption (left hand 3 cm off, betas +0.5): learnable in a few steps.
  cond['root_cam'][:, 1] += np.float32([0.03, 0.0, 0.0])
  cond['betas'] += np.float32(0.5)
  path = str(tmp_path_factory.mktemp('pairs') / 'pairs.npz')
  pairs_lib.save(path, gt, cond)
  return path


def _config(pairs_file, steps):
  c = diffusion_tiny.get_config('test')
  c.data.pairs_file = pairs_file
  c.num_train_steps = steps
  c.log_every = 10
  c.checkpoint_every = 20
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 0
  return c


def test_train_loss_falls_restores_and_resumes(tmp_path, pairs_file):
  workdir = str(tmp_path / 'w')
  out = stage2.train_and_evaluate(_config(pairs_file, 40), workdir)
  losses = [h['loss'] for h in out['history'] if 'loss' in h]
  assert out['step'] == 40 and out['train_step_traces'] == 1
  assert losses[-1] < 0.7 * losses[0], losses

  graphdef, model_state, stats, config, step = restore(workdir)
  assert step == 40
  assert config.stage == 'stage2' and config.model.latent_dim == 32
  x0, _, _ = stage2.load_pairs(_config(pairs_file, 40), workdir)
  np.testing.assert_allclose(stats['mean'], x0.mean(0), rtol=1e-4, atol=1e-5)
  from flax import nnx
  trained = nnx.state(nnx.merge(stage2.create_train_state(
      config, stage2.shard_lib.make_mesh(1))[0], out['state'])[0], nnx.Param)
  restored = nnx.state(nnx.merge(graphdef, model_state), nnx.Param)
  for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  resumed = stage2.train_and_evaluate(_config(pairs_file, 50), workdir)
  assert resumed['step'] == 50 and resumed['history'][0]['step'] == 50

  repair, _ = load_repair(workdir)
  params = {k: np.asarray(v[:2]) for k, v in pairs_lib.load(pairs_file)[1].items()}
  got, info = repair(params, fx.boxes_overlapping(2), jax.random.key(0))
  assert got['pose_6d'].shape == (2, 2, 16, 6)
  assert np.all(np.isfinite(np.asarray(got['root_cam'])))


@pytest.mark.slow  # ~60 s of CPU (a subprocess compiling two layouts): keeps `make test` < 10 min
def test_eight_devices_match_one_device(tmp_path, pairs_file):
  """Stage-2 training, 8-way data parallel and data x FSDP (2 x 4) on 8 fake
  devices (a subprocess), equals one device to float tolerance (the
  cross-device mean reduces in another order). The test denoiser's weights
  are under the FSDP size threshold, so the 2 x 4 layout checks the mesh
  plumbing and the batch split, not weight splitting (stage 1's probe does)."""
  import json
  import os
  import subprocess
  import sys
  from flax import nnx

  from tests.train_step_probe import param_checksums
  steps = 6
  c = _config(pairs_file, steps)
  one = stage2.train_and_evaluate(c, str(tmp_path / 'one'))
  graphdef = stage2.create_train_state(c, stage2.shard_lib.make_mesh(1))[0]
  ref = param_checksums(nnx.merge(graphdef, one['state'])[0])
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, XLA_FLAGS=tiny_training.xla_flags(8),
             JAX_PLATFORMS='cpu')
  run = subprocess.run([sys.executable, os.path.join(repo, 'tests', 'stage2_probe.py'),
                        pairs_file, str(tmp_path / 'multi'), str(steps)], cwd=repo, env=env,
                       capture_output=True, text=True, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  for other in json.loads(run.stdout.strip().splitlines()[-1]):
    assert other['devices'] == 8 and other['traces'] == 1
    np.testing.assert_allclose(other['loss'], one['history'][-1]['loss'], rtol=1e-4)
    np.testing.assert_allclose(other['param_sum'], ref['param_sum'], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(other['param_abs'], ref['param_abs'], rtol=1e-5)
