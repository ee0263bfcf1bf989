"""The one training loop both stages run, and the pieces their update steps
share: the AdamW optimizer, the train state on a mesh, the non-finite
guard, the SIGTERM save hook and the metric means.

A stage brings what differs (nanodo's Trainer and flax's imagenet
`train_and_evaluate` split the work the same way): its jitted
`train_step(state, batch, *args, step) -> (state, metrics)`, a `next_batch`
function of the step, the replicated `args` after the batch, and how its
checkpointed tree is packed. `run` does the rest: restore, compile then
meet the other processes, step, log, save, preemption, shutdown.
"""

import signal
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.experimental import multihost_utils
from tqdm import tqdm

from a2p_jax.runtime import checkpoint as ckpt_lib
from a2p_jax.runtime import sharding as shard_lib


class NonFiniteError(FloatingPointError):
  pass


def make_adamw(optim, lr) -> optax.GradientTransformation:
  """AdamW over the schedule `lr`, after a global-norm clip when optim.grad_clip."""
  tx = optax.adamw(lr, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay)
  if optim.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip), tx)
  return tx


def with_warmup(optim, schedule):
  """`schedule` after a linear warm-up of optim.warmup_steps (none when 0)."""
  if not optim.warmup_steps:
    return schedule
  warm = optax.linear_schedule(0.0, optim.lr, optim.warmup_steps)
  return optax.join_schedules([warm, schedule], [optim.warmup_steps])


def create_train_state(model: nnx.Module, tx, mesh):
  """(graphdef, state, state_sharding): the split (model, optimizer) placed on the mesh."""
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  state_sharding = shard_lib.state_shardings(mesh, state)
  return graphdef, shard_lib.put(state, state_sharding), state_sharding


def guarded_update(model, optimizer, grads, loss, old_state):
  """Applies `grads`; a non-finite loss, gradient norm or updated parameter
  keeps `old_state` instead, so a saved state is always finite.
  Returns (state of (model, optimizer), grad_norm, nonfinite flag float32)."""
  grad_norm = optax.global_norm(grads)
  optimizer.update(model, grads)
  new_state = nnx.state((model, optimizer))
  finite = jax.tree.reduce(jnp.logical_and,
                           jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), nnx.state(model)),
                           jnp.bool_(True))
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & finite
  new_state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_state, old_state)
  return new_state, grad_norm, (~ok).astype(jnp.float32)


class Preemption:
  """SIGTERM (sent before a pod is preempted) -> `stop(step)` turns True
  after a step; the loop then saves that step and exits cleanly.

  One process: a Python SIGTERM handler sets a flag. Several processes
  (jax.distributed): JAX's preemption service owns SIGTERM (do not replace
  its handler) and, once any process got one, agrees on a step at which
  `stop` is True on every process, so all of them save the same step (a
  process stopping alone would hang the others in the next collective).
  Call `stop` once per step, on every process.
  """

  def __init__(self):
    self.requested = False
    self._old = None
    self._sync_point = None

  def __enter__(self):
    if jax.process_count() > 1:
      self._sync_point = multihost_utils.reached_preemption_sync_point
      return self
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      self._old = None
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def stop(self, step: int) -> bool:
    if self._sync_point is not None:
      self.requested = bool(self._sync_point(int(step)))
    return self.requested

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


class MetricMeans:
  """Sums step metrics on device; `means()` gives the host means since the
  last call, with learning rate and throughput, and raises NonFiniteError
  if any step in the window skipped a non-finite update."""

  def __init__(self, batch_size: int, lr_fn, checkpoint_dir):
    self.batch_size, self.lr_fn, self.checkpoint_dir = batch_size, lr_fn, checkpoint_dir
    self._reset()

  def _reset(self):
    self.acc, self.n, self.t0 = None, 0, time.perf_counter()

  def add(self, metrics):
    self.acc = metrics if self.acc is None else jax.tree.map(jnp.add, self.acc, metrics)
    self.n += 1

  def means(self, step: int) -> dict:
    host = {k: float(v) / self.n for k, v in jax.device_get(self.acc).items()}
    if host['nonfinite'] > 0:
      raise NonFiniteError(
          f'non-finite loss or gradient at step <= {step} (the update was skipped; '
          f'the last checkpoint in {self.checkpoint_dir} is intact): {host}')
    dt = time.perf_counter() - self.t0
    host['nonfinite'] = 0.0
    host['learning_rate'] = float(self.lr_fn(step))
    host['examples_per_s'] = self.n * self.batch_size / dt
    self._reset()
    return host


def _state_only(state, args):
  return state


def _unpack_state_only(tree, args):
  return tree, args


def run(config, workdir: str, writer, *, name: str, train_step, state, args: tuple,
        next_batch: Callable[[int], tuple], num_steps: int, lr_fn, meta: dict,
        data_iter=None, pack: Callable = _state_only, unpack: Callable = _unpack_state_only,
        pictures: Optional[Callable] = None) -> dict:
  """Restores, then runs `train_step` from the restored step to `num_steps`.

  train_step: jitted `(state, batch, *args, step int32) -> (state, metrics)`
    (state donated; metrics include 'loss' and 'nonfinite').
  next_batch(step) -> (global batch for train_step, this process's host batch).
  pack(state, args) -> the checkpointed tree; unpack(tree, args) -> (state,
    args) after a restore (e.g. stage 2 keeps its normalisation statistics
    in the checkpoint). data_iter: a grain iterator saved and restored with
    the state (None: batches are a function of the step alone).
  pictures(step, state, args, host batch) -> {name: uint8 image}, every
    config.image_every steps.
  Returns {'metrics': last logged means, 'history', 'step', 'state', 'args'}.
  """
  is_main = jax.process_index() == 0
  mngr = ckpt_lib.manager(workdir, max_to_keep=config.keep_checkpoints,
                          async_save=config.async_checkpoints,
                          keep_period=int(config.get('keep_period', 0)))
  start, restored, _ = ckpt_lib.restore_latest(mngr, pack(state, args), data_iter)
  if restored is not None:
    state, args = unpack(restored, args)
    if is_main:
      print(f'resumed from step {start} in {mngr.directory}', flush=True)
  step = int(start or 0)

  pbar = None
  if is_main and config.progress:
    pbar = tqdm(total=num_steps, initial=step, desc=name, unit='step', dynamic_ncols=True)
  means = MetricMeans(config.batch_size, lr_fn, mngr.directory)
  last, history = {}, []
  compiled = None
  with Preemption() as preempt:
    while step < num_steps:
      batch, local = next_batch(step)
      step_arr = jnp.asarray(step, jnp.int32)
      if compiled is None:
        # Compile first, then meet the other processes: all enter the step's
        # collectives together (CPU gloo gives up on a peer 30 s late).
        compiled = train_step.lower(state, batch, *args, step_arr).compile()
        shard_lib.barrier(f'{name}_step_compiled')
      state, m = compiled(state, batch, *args, step_arr)
      step += 1
      means.add(m)
      if pbar is not None:
        pbar.update(1)
      log_now = step % config.log_every == 0 or step == num_steps
      # Asked once per step: a SIGTERM arriving after this is seen after
      # the next step (asked twice, the save could be skipped).
      stop = preempt.stop(step)
      save_now = step % config.checkpoint_every == 0 or step == num_steps or stop
      if log_now or save_now:
        last = means.means(step)
        writer.scalars(step, last, console=pbar is None or log_now)
        history.append(dict(last, step=step))
      if pictures is not None and config.get('image_every') and step % config.image_every == 0:
        writer.images(step, pictures(step, state, args, local))
      if save_now:
        ckpt_lib.save(mngr, step, pack(state, args), data_iter, meta, force=True)
      if stop:
        if is_main:
          print(f'SIGTERM: saved step {step}, exiting', flush=True)
        break
  mngr.wait_until_finished()
  mngr.close()
  if pbar is not None:
    pbar.close()
  writer.flush()
  writer.close()
  return {'metrics': last, 'history': history, 'step': step, 'state': state, 'args': args}
