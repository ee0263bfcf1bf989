"""Stage 2 keeps contact: the gate's false positives come back unchanged
(gate.verify) and the pull-back moves hands only as far as needed, on
procedural-hand (NOT MANO) pairs with an untrained denoiser."""

import jax
import jax.numpy as jnp
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
  """N penetrating pairs (centroids 7 cm apart), as test_diffusion_guidance's."""
  models = load_hand_models(None)
  rng = np.random.default_rng(0)
  batch = fx.placed(fx.random_params(rng, N), models, rng, np.full(N, 0.07))
  return dict(models=models, batch=batch)


def _touching(models, rng, n):
  """n pairs whose meshes touch without penetrating: the left hand moved
  along a random direction to the closest centroid distance (bisection to
  0.1 mm) at which the exact test finds no vertex inside the other mesh."""
  base = fx.random_params(rng, n)
  vr, vl = state_lib.meshes(base, models)
  d = rng.normal(size=(n, 3))
  d /= np.linalg.norm(d, axis=-1, keepdims=True)
  centre = np.asarray(vr).mean(1) - np.asarray(vl).mean(1)

  def at(dist):
    p = {k: np.array(v) for k, v in base.items()}
    p['root_cam'][:, 1] += (centre + dist[:, None] * d).astype(np.float32)
    return p

  def depth(p):
    a, b = state_lib.meshes(p, models)
    return np.asarray(geometry.penetration_depth(a, models[0].faces, b, models[1].faces))

  lo, hi = np.zeros(n), np.full(n, 0.3)
  while np.max(hi - lo) > 1e-4:
    mid = (lo + hi) / 2
    inside = depth(at(mid)) > 0
    lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
  p = at(hi)
  assert np.all(depth(p) == 0)
  a, b = state_lib.meshes(p, models)
  gap = np.asarray(geometry.hand_gap(a, models[0].faces, b, models[1].faces))
  # In contact: the nearest vertices < 3 mm apart (the edges are ~3 mm long).
  assert np.all(gap < 0.003), gap
  return p


def test_false_positives_of_the_gate_come_back_unchanged(setup, monkeypatch):
  """With a gate that sends every pair to the repair, touching pairs (no
  vertex inside the other hand) come back as they went in, to 0.1 mm of
  every vertex (exactly, in fact); the penetrating ones are still repaired.
  Gating errors cost time, not accuracy."""
  s, models = setup, setup['models']
  from a2p_jax.diffusion import guidance as guidance_lib
  exact = guidance_lib.penetrating

  def gate_everything(params, models, cfg, detector='collision', min_depth=0.0):
    if detector == 'depth':
      return exact(params, models, cfg, detector, min_depth)
    return np.ones(params['root_cam'].shape[:1], bool)

  monkeypatch.setattr(guidance_lib, 'penetrating', gate_everything)
  cfg = diffusion_tiny.get_config('test')
  cfg.sampling.num_steps = 4
  cfg.sampling.guidance_scale = 0.05
  cfg.gate.chunk = 3
  touch = _touching(models, np.random.default_rng(7), N)
  batch = {k: np.concatenate([s['batch'][k], touch[k]]) for k in touch}
  graphdef, st = nnx.split(Denoiser(cfg.model, state_lib.TOKENS, rngs=nnx.Rngs(1)))
  x = np.asarray(state_lib.to_state(batch))
  stats = state_lib.compute_stats(np.concatenate([x, x + 0.01]))
  repair = repair_lib.make_repair(graphdef, st, stats, models, cfg)
  out, info = repair(batch, fx.boxes_overlapping(2 * N), jax.random.key(0))
  assert np.all(np.asarray(info['gated']))
  done = np.asarray(info['repaired'])
  v_in, v_out = (np.stack(state_lib.meshes({k: np.asarray(v) for k, v in p.items()}, models), 1)
                 for p in (batch, out))
  err = np.linalg.norm(v_out - v_in, axis=-1).max((1, 2))
  assert not done[N:].any() and np.all(err[N:] < 1e-4), err
  # The penetrating pairs: moved where the repair made them less deep.
  depth = [np.asarray(geometry.penetration_depth(v[:, 0], models[0].faces, v[:, 1],
                                                 models[1].faces)) for v in (v_in, v_out)]
  assert done[:N].sum() >= 2, (done, depth)
  assert np.all(err[:N][done[:N]] > 1e-3) and np.all(depth[1][:N][done[:N]] < depth[0][:N][done[:N]])
  assert np.all(err[:N][~done[:N]] == 0), err


def test_pull_back_moves_only_as_far_as_needed(setup):
  """A 'repair' that throws the left hand 30 cm away is pulled back along
  the same path to where the hands just stop penetrating (within the
  bisection's 0.3 mm): no vertex deeper than min_depth, the hands still in
  contact; a repair that still penetrates is returned as it is."""
  s, models = setup, setup['models']
  cfg = diffusion_tiny.get_config('test').collision
  before = {k: np.asarray(v) for k, v in s['batch'].items()}
  away = {k: np.array(v) for k, v in before.items()}
  away['root_cam'][:, 1] += np.float32([0.3, 0.0, 0.0])
  min_depth = 1e-3
  got = jax.jit(lambda b, a: repair_lib.pull_back(b, a, models, cfg, min_depth, 10))(before, away)
  got = {k: np.asarray(v) for k, v in got.items()}
  a, b = state_lib.meshes(got, models)
  fr, fl = models[0].faces, models[1].faces
  assert np.all(np.asarray(geometry.penetration_depth(a, fr, b, fl)) <= min_depth)
  assert np.all(np.asarray(geometry.hand_gap(a, fr, b, fl)) < 0.003)
  # Least: 0.3 m / 2^10 less along the path, the hands still penetrate.
  moved = got['root_cam'][:, 1, 0] - before['root_cam'][:, 1, 0]
  assert np.all(moved < 0.1), moved  # centimetres, not the 30 cm of the repair
  less = {k: np.array(v) for k, v in got.items()}
  less['root_cam'][:, 1, 0] -= 0.3 / 1024
  a, b = state_lib.meshes(less, models)
  assert np.all(np.asarray(geometry.penetration_depth(a, fr, b, fl)) > min_depth)
  np.testing.assert_allclose(got['root_cam'][:, 0], before['root_cam'][:, 0])
  same = jax.jit(lambda b: repair_lib.pull_back(b, b, models, cfg, min_depth, 10))(before)
  for k in repair_lib.KEYS:
    np.testing.assert_allclose(np.asarray(same[k]), before[k], atol=2e-6)


@pytest.mark.parametrize('verify_by', ['volume', 'depth'])
def test_a_repair_that_penetrates_more_is_not_kept(setup, monkeypatch, verify_by):
  """gate.verify keeps a repair only when it lowers the interpenetration
  (volume by default, or depth): a "repair" that returns the batch's worst
  pair (17.2 cm^3, 20.8 mm deep; the others 2.0 and 9.4 cm^3, 8.9 and
  14.4 mm) comes back as its input, exactly (repaired False); one that
  moves the left hand 6 cm out of the right one (0) is kept."""
  s, models = setup, setup['models']
  odd = np.arange(N) % 2 == 1

  def make_sample_fn(graphdef, config, models):
    def sample(model_state, stats, params, key):
      vr, vl = state_lib.meshes(params, models)
      away = vl.mean(1) - vr.mean(1)
      away = 0.06 * away / jnp.linalg.norm(away, axis=-1, keepdims=True)
      out = {**params, 'root_cam': params['root_cam'].at[:, 1].add(away)}
      deepest = jax.tree.map(lambda v: jnp.broadcast_to(v[2], v.shape), params)
      return jax.tree.map(lambda o, d: jnp.where(odd.reshape((-1,) + (1,) * (o.ndim - 1)), o, d),
                          out, deepest)
    return sample

  monkeypatch.setattr(repair_lib, 'make_sample_fn', make_sample_fn)
  cfg = diffusion_tiny.get_config('test')
  cfg.gate.detector = 'collision'
  cfg.gate.box_overlap = False
  cfg.gate.chunk = N
  cfg.gate.verify_by = verify_by
  batch = {k: np.asarray(v) for k, v in s['batch'].items()}
  vr, vl = state_lib.meshes(batch, models)
  depth = np.asarray(geometry.penetration_depth(vr, models[0].faces, vl, models[1].faces))
  vol = np.asarray(geometry.penetration_volume(vr, models[0].faces, vl, models[1].faces))
  assert np.argmax(depth) == 2 and np.argmax(vol) == 2 and depth.min() > 0.005, (depth, vol)
  x = np.asarray(state_lib.to_state(batch))
  stats = state_lib.compute_stats(np.concatenate([x, x + 0.01]))
  graphdef, st = nnx.split(Denoiser(cfg.model, state_lib.TOKENS, rngs=nnx.Rngs(1)))
  repair = repair_lib.make_repair(graphdef, st, stats, models, cfg)
  out, info = repair(batch, fx.boxes_overlapping(N), jax.random.key(0))
  assert np.all(np.asarray(info['gated']))
  assert np.asarray(info['repaired']).tolist() == odd.tolist()
  for k in repair_lib.KEYS:
    np.testing.assert_array_equal(np.asarray(out[k])[~odd], batch[k][~odd])
  moved = np.linalg.norm(np.asarray(out['root_cam'])[odd, 1] - batch['root_cam'][odd, 1], axis=-1)
  np.testing.assert_allclose(moved, 0.06, rtol=1e-4)
