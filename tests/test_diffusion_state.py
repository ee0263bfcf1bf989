"""State vector round trip, statistics and the denoiser's shapes/init."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from a2p_jax.diffusion import state as state_lib
from a2p_jax.models.denoiser import Denoiser, timestep_embedding
from a2p_jax.configs import diffusion_tiny
from tests import diffusion_fixtures as fx


def test_round_trip_params_state_params(models):
  rng = np.random.default_rng(0)
  p = fx.placed(fx.random_params(rng, 5), models, rng, np.full(5, 0.1))
  x = state_lib.to_state(p)
  assert x.shape == (5, state_lib.DIM)
  q = state_lib.from_state(x, p['root_cam'][:, 0])
  for k in p:
    np.testing.assert_allclose(q[k], p[k], atol=2e-6, err_msg=k)
  np.testing.assert_allclose(state_lib.to_state(q), x, atol=2e-6)
  # Same meshes (camera space).
  for a, b in zip(state_lib.meshes(p, models), state_lib.meshes(q, models)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_raw_6d_comes_back_as_the_same_rotations(models):
  rng = np.random.default_rng(1)
  p = fx.random_params(rng, 3)
  raw = dict(p, pose_6d=p['pose_6d'] * 1.7 + 0.0)  # scaled rows: same Gram-Schmidt rotation
  q = state_lib.from_state(state_lib.to_state(raw), raw['root_cam'][:, 0])
  np.testing.assert_allclose(q['pose_6d'], p['pose_6d'], atol=2e-6)


def test_state_is_invariant_to_a_camera_translation():
  rng = np.random.default_rng(2)
  p = fx.random_params(rng, 2)
  p['root_cam'][:, 1] += np.float32(0.05)
  moved = dict(p, root_cam=p['root_cam'] + np.float32(0.3))
  np.testing.assert_allclose(state_lib.to_state(moved), state_lib.to_state(p), atol=1e-6)


def test_stats_and_normalization():
  x = np.random.default_rng(3).normal(size=(50, state_lib.DIM)).astype(np.float32)
  x[:, 0] = 1.0
  s = state_lib.compute_stats(x)
  assert s['std'][0] == pytest.approx(state_lib.MIN_STD)
  np.testing.assert_allclose(state_lib.denormalize(state_lib.normalize(x, s), s), x, atol=1e-5)
  bad = x.copy()
  bad[0, 3] = np.nan
  with pytest.raises(ValueError, match='non-finite'):
    state_lib.compute_stats(bad)


def test_denoiser_shapes_and_identity_at_init():
  cfg = diffusion_tiny.get_config('test')
  model = Denoiser(cfg.model, state_lib.TOKENS, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(4)
  x_t = jnp.asarray(rng.normal(size=(3, state_lib.DIM)), jnp.float32)
  x_c = jnp.asarray(rng.normal(size=(3, state_lib.DIM)), jnp.float32)
  out = model(x_t, jnp.array([0, 500, 999], jnp.int32), x_c)
  assert out.shape == (3, state_lib.DIM)
  np.testing.assert_array_equal(out, x_c)  # residual + zero-initialised output layer
  with pytest.raises(ValueError, match='x_t, x_c'):
    model(x_t[:, :10], jnp.zeros(3, jnp.int32), x_c)
  emb = timestep_embedding(jnp.array([0, 10], jnp.int32), 8)
  assert emb.shape == (2, 8)


def test_token_layout_covers_the_state_once():
  covered = np.zeros(state_lib.DIM, int)
  for start, size in state_lib.TOKENS:
    assert size <= state_lib.TOKEN_WIDTH
    covered[start:start + size] += 1
  assert np.all(covered == 1)


def test_part_masks_partition_the_state():
  names = ('right_root', 'right_fingers', 'right_betas', 'left_root', 'left_fingers',
           'left_betas', 'rel_trans')
  total = sum(state_lib.part_mask([n]).astype(int) for n in names)
  assert np.all(total == 1)
  np.testing.assert_array_equal(state_lib.part_mask('betas'),
                                state_lib.part_mask('right_betas,left_betas'))
  assert state_lib.part_mask('betas').sum() == 20 and state_lib.part_mask('fingers').sum() == 180
  assert not state_lib.part_mask('').any()
  with pytest.raises(ValueError, match='finger'):
    state_lib.part_mask('finger')
