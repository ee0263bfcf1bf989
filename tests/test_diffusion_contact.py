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


def _untrained_repair(cfg, models, batch):
  """make_repair with an untrained denoiser, statistics from `batch`."""
  graphdef, st = nnx.split(Denoiser(cfg.model, state_lib.TOKENS, rngs=nnx.Rngs(1)))
  x = np.asarray(state_lib.to_state(batch))
  stats = state_lib.compute_stats(np.concatenate([x, x + 0.01]))
  return repair_lib.make_repair(graphdef, st, stats, models, cfg)


def _left_moved(batch, shift):
  """(batch as numpy, a copy with the left hand moved by `shift` (3,) m)."""
  before = {k: np.asarray(v) for k, v in batch.items()}
  moved = {k: np.array(v) for k, v in before.items()}
  moved['root_cam'][:, 1] += np.float32(shift)
  return before, moved


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
  touch = fx.touching(models, np.random.default_rng(7), N)
  batch = {k: np.concatenate([s['batch'][k], touch[k]]) for k in touch}
  repair = _untrained_repair(cfg, models, batch)
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
  before, away = _left_moved(s['batch'], [0.3, 0.0, 0.0])
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
  repair = _untrained_repair(cfg, models, batch)
  out, info = repair(batch, fx.boxes_overlapping(N), jax.random.key(0))
  assert np.all(np.asarray(info['gated']))
  assert np.asarray(info['repaired']).tolist() == odd.tolist()
  for k in repair_lib.KEYS:
    np.testing.assert_array_equal(np.asarray(out[k])[~odd], batch[k][~odd])
  moved = np.linalg.norm(np.asarray(out['root_cam'])[odd, 1] - batch['root_cam'][odd, 1], axis=-1)
  np.testing.assert_allclose(moved, 0.06, rtol=1e-4)


def test_pull_back_past_the_repair_up_to_max_frac(setup):
  """A direction that stops short (the left hand moved 1 cm, still inside
  the right one): with max_frac 1 the pull-back keeps it as it is; with
  max_frac 30 it goes on along the same line to where the hands just stop
  penetrating, still in contact, the right hand untouched."""
  s, models = setup, setup['models']
  cfg = diffusion_tiny.get_config('test').collision
  before, short = _left_moved(s['batch'], [0.01, 0.0, 0.0])
  min_depth = 1e-3
  fr, fl = models[0].faces, models[1].faces

  def run(max_frac):
    got = jax.jit(lambda b, a: repair_lib.pull_back(b, a, models, cfg, min_depth, 12,
                                                    max_frac))(before, short)
    got = {k: np.asarray(v) for k, v in got.items()}
    a, b = state_lib.meshes(got, models)
    return got, np.asarray(geometry.penetration_depth(a, fr, b, fl)), a, b

  kept, depth1, _, _ = run(1.0)
  assert np.all(depth1 > min_depth)  # 1 cm is not enough for these pairs
  np.testing.assert_allclose(kept['root_cam'], short['root_cam'], atol=1e-6)
  got, depth30, a, b = run(30.0)
  assert np.all(depth30 <= min_depth)
  assert np.all(np.asarray(geometry.hand_gap(a, fr, b, fl)) < 0.003)
  moved = got['root_cam'][:, 1] - before['root_cam'][:, 1]
  assert np.all(moved[:, 0] > 0.01) and np.all(moved[:, 0] < 0.3), moved
  np.testing.assert_allclose(moved[:, 1:], 0, atol=1e-6)  # along the same line
  np.testing.assert_allclose(got['root_cam'][:, 0], before['root_cam'][:, 0])


def test_posterior_mean_is_the_x0_estimate_from_pure_noise_averaged():
  """direction 'mean': the denoiser's x0 at the last timestep from
  num_samples independent noise draws, averaged; kept dimensions are the
  condition's. A denoiser linear in x_t makes the average checkable draw
  by draw."""
  b, d, t_max = 3, state_lib.DIM, 1000
  rng = np.random.default_rng(0)
  x_c = jnp.asarray(rng.normal(size=(b, d)), jnp.float32)
  seen_t = []

  def denoise(x, t, c):
    seen_t.append(t)
    return 0.5 * c + 0.25 * x

  key = jax.random.key(3)
  keep = state_lib.part_mask('betas')
  got = repair_lib.posterior_mean(denoise, x_c, key, num_steps=t_max, num_samples=4, keep=keep)
  draws = [jax.random.normal(k, (b, d)) for k in jax.random.split(key, 4)]
  want = 0.5 * np.asarray(x_c) + 0.25 * np.mean([np.asarray(z) for z in draws], 0)
  want = np.where(keep, np.asarray(x_c), want)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  assert all(np.all(np.asarray(t) == t_max - 1) for t in seen_t) and len(seen_t) == 4


@pytest.mark.parametrize('field,value', [('direction', 'median'), ('num_samples', 0),
                                         ('pullback_max', 0.5), ('exit_directions', 0),
                                         ('exit_scan', 0), ('exit_steps', 0),
                                         ('exit_max_mm', -1.0)])
def test_bad_sampling_fields_are_errors_naming_them(setup, field, value):
  cfg = diffusion_tiny.get_config('test')
  cfg.sampling[field] = value
  graphdef, _ = nnx.split(Denoiser(cfg.model, state_lib.TOKENS, rngs=nnx.Rngs(1)))
  with pytest.raises(ValueError, match=f'sampling.{field}'):
    repair_lib.make_sample_fn(graphdef, cfg, setup['models'])


def test_direction_mean_repairs_with_the_pull_back(setup):
  """The whole repair with direction 'mean' (an untrained denoiser whose
  mean moves the left hand a little) and the pull-back past it: every
  pair it keeps has less interpenetration volume than it went in with, the
  others come back exactly."""
  s, models = setup, setup['models']
  cfg = diffusion_tiny.get_config('test')
  cfg.sampling.direction = 'mean'
  cfg.sampling.keep = 'betas,fingers,roots'
  cfg.sampling.pullback_steps = 10
  cfg.sampling.pullback_max = 50.0
  repair = _untrained_repair(cfg, models, s['batch'])
  out, info = repair(s['batch'], fx.boxes_overlapping(N), jax.random.key(0))
  done = np.asarray(info['repaired'])
  fr, fl = models[0].faces, models[1].faces
  vol = []
  for p in (s['batch'], {k: np.asarray(v) for k, v in out.items()}):
    a, b = state_lib.meshes(p, models)
    vol.append(np.asarray(geometry.penetration_volume(a, fr, b, fl)))
  assert done.any(), vol
  assert np.all(vol[1][done] < vol[0][done])  # gate.verify_by 'volume'
  np.testing.assert_array_equal(np.asarray(out['root_cam'])[~done],
                                np.asarray(s['batch']['root_cam'])[~done])


def test_sphere_directions_are_unit_and_spread():
  u = np.asarray(repair_lib.sphere_directions(64), np.float64)
  np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-6)
  # Every point of the sphere within 20 degrees of one of them (64 caps).
  probe = np.random.default_rng(0).normal(size=(2000, 3))
  probe /= np.linalg.norm(probe, axis=1, keepdims=True)
  assert np.degrees(np.arccos(np.clip((probe @ u.T).max(1), -1, 1))).max() < 20.0


def test_least_exit_is_the_nearest_clear_placement_of_a_grid_search(setup):
  """Pairs pushed 1 cm into contact: least_exit's move against a brute
  force over the same directions (the exact depth test every 0.5 mm up to
  4 cm, the first clear distance): with the scan on the same grid, the
  same length to within one grid step below it (the bisection refines
  inside the step), the hands clear, only the left wrist moved."""
  models = setup['models']
  cfg = diffusion_tiny.get_config('test').collision
  n, dirs, max_dist, min_depth = 3, 12, 0.04, 1e-3
  touching = fx.touching(models, np.random.default_rng(5), n)
  vr, vl = state_lib.meshes(touching, models)
  into = np.asarray(vr).mean(1) - np.asarray(vl).mean(1)
  _, pushed = _left_moved(touching, 0.01 * into / np.linalg.norm(into, axis=1, keepdims=True))
  got = jax.jit(lambda p: repair_lib.least_exit(p, models, cfg, min_depth, num_dirs=dirs,
                                                scan=80, steps=6, max_dist=max_dist))(pushed)
  got = {k: np.asarray(v) for k, v in got.items()}
  fr, fl = models[0].faces, models[1].faces

  def depth(p):
    a, b = state_lib.meshes(p, models)
    return np.asarray(geometry.penetration_depth(a, fr, b, fl))

  assert np.all(depth(pushed) > min_depth)          # the pushed pairs do penetrate
  assert np.all(depth(got) <= min_depth)
  for k in ('pose_6d', 'betas'):
    np.testing.assert_array_equal(got[k], pushed[k])
  np.testing.assert_array_equal(got['root_cam'][:, 0], pushed['root_cam'][:, 0])
  moved = np.linalg.norm(got['root_cam'][:, 1] - pushed['root_cam'][:, 1], axis=1)
  # Brute force: the first clear distance on a 0.5 mm grid, per direction.
  u = np.asarray(repair_lib.sphere_directions(dirs), np.float64)
  grid = np.arange(1, 81) * 0.0005
  best = np.full(n, np.inf)
  for k in range(dirs):
    for i in range(n):
      p = {key: np.repeat(v[i:i + 1], len(grid), 0) for key, v in pushed.items()}
      p['root_cam'][:, 1] += (grid[:, None] * u[k]).astype(np.float32)
      clear = np.flatnonzero(depth(p) <= min_depth)
      if clear.size:
        best[i] = min(best[i], grid[clear[0]])
  assert np.all(np.isfinite(best)) and np.all(best < 0.02), best   # ~1 cm back out
  assert np.all(moved <= best + 1e-6) and np.all(moved > best - 0.0005 - 1e-6), (moved, best)
