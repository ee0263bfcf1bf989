"""The shared training loop on a toy model (seconds, where the stage-1
version needs a train-step compile: test_train_stage1's slow tests): a
non-finite step is skipped by the guarded update, stops the loop with
NonFiniteError, and the checkpoints already written stay as they were."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from a2p_jax.runtime import checkpoint as ckpt_lib
from a2p_jax.runtime import sharding as shard_lib
from a2p_jax.train import loop as loop_lib
from a2p_jax.train import metrics as metrics_lib


def _config():
  return ml_collections.ConfigDict(dict(
      keep_checkpoints=3, async_checkpoints=False, progress=False, log_every=1,
      checkpoint_every=2, batch_size=4, image_every=0))


def _toy(bad_from: int):
  """(graphdef, state, jitted step, next_batch): a linear fit whose targets
  turn NaN at step `bad_from`."""
  model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
  graphdef, state, _ = loop_lib.create_train_state(model, optax.sgd(0.1),
                                                   shard_lib.make_mesh(1))

  def step_fn(state, batch, step):
    model, optimizer = nnx.merge(graphdef, state)
    loss_fn = lambda m: jnp.mean(jnp.square(m(batch['x'])[:, 0] - batch['y']))  # noqa: E731
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    new_state, grad_norm, nonfinite = loop_lib.guarded_update(model, optimizer, grads, loss,
                                                              state)
    return new_state, {'loss': loss, 'grad_norm': grad_norm, 'nonfinite': nonfinite}

  def next_batch(step):
    rng = np.random.default_rng(step)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    y = x.sum(1) if step < bad_from else np.full(4, np.nan, np.float32)
    batch = {'x': jnp.asarray(x), 'y': jnp.asarray(y, jnp.float32)}
    return batch, batch

  return graphdef, state, jax.jit(step_fn, donate_argnums=(0,)), next_batch


def _run(workdir, state, train_step, next_batch, num_steps):
  return loop_lib.run(_config(), workdir, metrics_lib.Writer(workdir), name='toy',
                      train_step=train_step, state=state, args=(), next_batch=next_batch,
                      num_steps=num_steps, lr_fn=lambda s: 0.1, meta={})


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(ckpt_lib.flatten(state))]


def test_nonfinite_step_stops_and_keeps_the_checkpoints(tmp_path):
  workdir = str(tmp_path)
  _, state, train_step, next_batch = _toy(bad_from=10)
  good = _run(workdir, state, train_step, next_batch, 4)
  assert good['step'] == 4
  kept = _leaves(good['state'])
  _, state, train_step, next_batch = _toy(bad_from=5)
  with pytest.raises(loop_lib.NonFiniteError, match='non-finite'):
    _run(workdir, state, train_step, next_batch, 8)   # resumes at 4; step 5 is NaN
  steps = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit())
  assert steps == [2, 4]
  _, like, _, _ = _toy(bad_from=10)
  mngr = ckpt_lib.manager(workdir, async_save=False)
  step, restored, _ = ckpt_lib.restore_exact(mngr, like)
  mngr.close()
  assert step == 4
  for x, y in zip(_leaves(restored), kept):
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(x, y)
