"""Pieces both training loops (stage 1, stage 2) share: the SIGTERM save
hook, the non-finite tripwire and the accumulation of step metrics into
logged means."""

import signal
import time

import jax
import jax.numpy as jnp


class NonFiniteError(FloatingPointError):
  pass


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
      from jax.experimental import multihost_utils
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
