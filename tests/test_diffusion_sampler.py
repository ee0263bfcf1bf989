"""Schedule and DDIM sampler: endpoints, oracle exactness, determinism, one trace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from a2p_jax.diffusion import sampler as sampler_lib
from a2p_jax.diffusion import schedule as schedule_lib

T = 1000


def test_cosine_schedule_decreasing_with_endpoints():
  ab = schedule_lib.cosine_alpha_bar(T)
  assert ab.shape == (T,) and ab.dtype == np.float32
  assert np.all(np.diff(ab) < 0)
  assert ab[0] > 0.999 and ab[-1] < 1e-4 and ab[-1] >= 0
  assert np.all((ab > 0) | (np.arange(T) == T - 1))


def test_ddim_timesteps_descend_over_the_range():
  ts = schedule_lib.ddim_timesteps(T, 10)
  assert ts.dtype == np.int32 and ts[0] == T - 1 and ts[-1] == 0
  assert np.all(np.diff(ts) < 0)
  with pytest.raises(ValueError):
    schedule_lib.ddim_timesteps(T, 0)
  part = schedule_lib.ddim_timesteps(T, 4, start=499)
  assert part[0] == 499 and part[-1] == 0


def test_q_sample_endpoints():
  ab = schedule_lib.cosine_alpha_bar(T)
  x0, noise = jnp.ones((2, 5)), jnp.full((2, 5), 3.0)
  xt = schedule_lib.q_sample(x0, jnp.array([0, T - 1], jnp.int32), noise, ab)
  np.testing.assert_allclose(xt[0], 1.0, atol=0.05)
  np.testing.assert_allclose(xt[1], 3.0, atol=0.05)


def _sample(x0_oracle, eta, key, x_init=None, steps=10):
  ab = schedule_lib.cosine_alpha_bar(T)
  ts = schedule_lib.ddim_timesteps(T, steps)
  return sampler_lib.ddim_sample(lambda x, t, c: jnp.broadcast_to(x0_oracle, x.shape), x0_oracle,
                                 key, alpha_bar=ab, timesteps=ts, eta=eta, x_init=x_init)


@pytest.mark.parametrize('eta', [0.0, 1.0])
def test_perfect_oracle_returns_x0(eta):
  x0 = jnp.asarray(np.random.default_rng(0).normal(size=(4, 7)), jnp.float32)
  out = jax.jit(lambda k: _sample(x0, eta, k))(jax.random.key(3))
  np.testing.assert_allclose(out, x0, atol=1e-5)


def test_eta0_is_deterministic_given_x_T():
  x_init = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)), jnp.float32)
  # An oracle that depends on x_t, so the path matters.
  ab = schedule_lib.cosine_alpha_bar(T)
  ts = schedule_lib.ddim_timesteps(T, 6)
  fn = jax.jit(lambda k, eta: sampler_lib.ddim_sample(
      lambda x, t, c: 0.5 * x + c, x_init * 0.1, k, alpha_bar=ab, timesteps=ts, eta=eta,
      x_init=x_init))
  a = fn(jax.random.key(0), 0.0)
  b = fn(jax.random.key(1), 0.0)
  np.testing.assert_array_equal(a, b)
  c = fn(jax.random.key(0), 1.0)
  d = fn(jax.random.key(1), 1.0)
  assert not np.allclose(c, d)


def test_sampler_traces_once_and_guidance_applies():
  ab = schedule_lib.cosine_alpha_bar(T)
  ts = schedule_lib.ddim_timesteps(T, 5)
  lam = sampler_lib.lambda_schedule(ts, T, scale=0.1, start_frac=0.6)
  assert lam[0] == 0 and lam[-1] == pytest.approx(0.1)
  traces = []
  target = jnp.full((2, 3), 2.0)

  def run(x_c, key):
    traces.append(1)
    # Guidance toward `target`: grad of 0.5 |x0 - target|^2.
    return sampler_lib.ddim_sample(lambda x, t, c: c, x_c, key, alpha_bar=ab, timesteps=ts,
                                   guide_grad=lambda x0: x0 - target, lambdas=lam)

  fn = jax.jit(run)
  outs = [fn(jnp.zeros((2, 3)), jax.random.key(i)) for i in range(3)]
  assert len(traces) == 1
  # Oracle returns x_c = 0; guided steps pull x0 toward 2 on the last step.
  assert np.all(np.asarray(outs[0]) > 0.1)


def test_kept_dimensions_are_the_condition_plus_guidance_only():
  ab = schedule_lib.cosine_alpha_bar(T)
  ts = schedule_lib.ddim_timesteps(T, 6, start=499)
  rng = np.random.default_rng(2)
  x_c = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  keep = np.array([True, False, True, False, False])
  far = x_c + 10.0  # a denoiser that moves everything far away
  run = lambda guide, lam: sampler_lib.ddim_sample(
      lambda x, t, c: c + 10.0, x_c, jax.random.key(0), alpha_bar=ab, timesteps=ts,
      keep=keep, guide_grad=guide, lambdas=lam)
  out = np.asarray(jax.jit(lambda: run(None, None))())
  np.testing.assert_array_equal(out[:, keep], np.asarray(x_c)[:, keep])
  np.testing.assert_allclose(out[:, ~keep], np.asarray(far)[:, ~keep], atol=1e-4)
  # Guidance still moves kept dimensions: toward 0 with weight 0.5 on the last step only.
  lam = np.zeros(len(ts), np.float32)
  lam[-1] = 0.5
  out = np.asarray(jax.jit(lambda: run(lambda x0: x0, lam))())
  np.testing.assert_allclose(out[:, keep], 0.5 * np.asarray(x_c)[:, keep], atol=1e-5)
  np.testing.assert_allclose(out[:, ~keep], 0.5 * np.asarray(far)[:, ~keep], atol=1e-4)
