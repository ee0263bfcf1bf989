"""Collision guidance and gating of the jitted repair on procedural-hand
(NOT MANO) pairs, with an untrained denoiser (identity at init, so the
changes are the guidance's)."""

import jax
import numpy as np
import pytest
from flax import nnx

from a2p_jax import geometry
from a2p_jax.data.hands import load_hand_models
from a2p_jax.diffusion import repair as repair_lib
from a2p_jax.diffusion import state as state_lib
from a2p_jax.models.denoiser import Denoiser
from a2p_jax.configs import diffusion_tiny
from tests import diffusion_fixtures as fx

N = 4


@pytest.fixture(scope='module')
def setup():
  models = load_hand_models(None)
  rng = np.random.default_rng(0)
  # N pairs with centroids 7 cm apart (penetrating), N 25 cm apart (cannot touch).
  c = fx.placed(fx.random_params(rng, N), models, rng, np.full(N, 0.07))
  g = fx.placed(fx.random_params(rng, N), models, rng, np.full(N, 0.25))
  cfg = diffusion_tiny.get_config('test')
  cfg.sampling.num_steps = 4
  cfg.sampling.guidance_scale = 0.05
  cfg.sampling.guidance_start = 1.0
  cfg.sampling.final_steps = 6
  cfg.gate.chunk = 3  # 4 gated pairs: two chunks, the second part-filled
  cfg.sampling.final_scale = 0.05
  graphdef, st = nnx.split(Denoiser(cfg.model, state_lib.TOKENS, rngs=nnx.Rngs(0)))
  x = np.asarray(state_lib.to_state(g))
  stats = state_lib.compute_stats(np.concatenate([x, np.asarray(state_lib.to_state(c))]))
  repair = repair_lib.make_repair(graphdef, st, stats, models, cfg)
  # Batch: N penetrating pairs, then N apart (their ground truths).
  batch = {k: np.concatenate([c[k], g[k]]) for k in c}
  out, info = repair(batch, fx.boxes_overlapping(2 * N), jax.random.key(0))
  return dict(models=models, batch=batch, out=out, info=info, repair=repair)


def _volume_cm3(params, models):
  vr, vl = state_lib.meshes(params, models)
  return 1e6 * np.asarray(geometry.penetration_volume(vr, models[0].faces, vl, models[1].faces))


def test_guidance_reduces_penetration_volume(setup):
  s = setup
  assert np.all(np.asarray(s['info']['gated'][:N]))
  before = _volume_cm3({k: v[:N] for k, v in s['batch'].items()}, s['models'])
  after = _volume_cm3({k: np.asarray(v)[:N] for k, v in s['out'].items()}, s['models'])
  assert np.all(before > 0)
  assert np.sum(after) < 0.5 * np.sum(before), (before, after)
  assert np.all(after <= before + 1e-3)


def test_non_penetrating_pairs_pass_through_unchanged(setup):
  s = setup
  assert not np.any(np.asarray(s['info']['gated'][N:]))
  for k in state_lib_keys():
    np.testing.assert_array_equal(np.asarray(s['out'][k])[N:], s['batch'][k][N:])


def test_boxes_apart_gate_everything_off(setup):
  s = setup
  out, info = s['repair'](s['batch'], fx.boxes_apart(2 * N), jax.random.key(1))
  assert not np.any(np.asarray(info['gated']))
  assert np.all(np.asarray(info['penetrating'][:N]))
  for k in state_lib_keys():
    np.testing.assert_array_equal(np.asarray(out[k]), s['batch'][k])
  assert s['repair'].jitted._cache_size() == 1  # same compiled function for both calls


def state_lib_keys():
  return repair_lib.KEYS

