"""The benchmarks' timer: median wall time per call, warm-up untimed.

Every call's result is waited for (`jax.block_until_ready`, which passes
anything that is not a JAX array through), so JAX's asynchronous dispatch
is never timed as speed. Scripts import it as a sibling (`import timing`):
`python benchmarks/NAME.py` puts this folder on sys.path.
"""

import time

import jax
import numpy as np


def interleaved_median_s(fns, repeats, warmup=1):
  """{name: median seconds per call} for a dict of zero-argument callables.

  `warmup` untimed rounds (compilation, caches, worker start), then `repeats`
  rounds calling each function once in turn, so that load drifting during
  the run hits every function alike.
  """
  for _ in range(warmup):
    for fn in fns.values():
      jax.block_until_ready(fn())
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - t0)
  return {name: float(np.median(t)) for name, t in times.items()}


def median_s(fn, repeats, warmup=1):
  """Median seconds per call of fn() over `repeats` calls after `warmup` untimed ones."""
  return interleaved_median_s({'fn': fn}, repeats, warmup)['fn']
