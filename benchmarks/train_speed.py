"""Stage-1 train step speed on this machine, next to the machine's matmul rate.

    python benchmarks/train_speed.py [--steps 5] [--paper_batch 2]

For the tiny config (a2p_jax/configs/synthetic_tiny.py) and the paper config
(a2p_jax/configs/a2p_interhand26m.py, at a small batch on CPU): compile time, median
step time, examples/s, the step's FLOPs from XLA's cost analysis, and the
achieved FLOP/s as a share of a large float32 matmul's rate measured in the
same run (the practical floor on this CPU). Inputs are random arrays of the
pipeline's shapes, so the input pipeline is not measured here (see
benchmarks/input_pipeline.py).
"""

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from a2p_jax.configs import a2p_interhand26m, synthetic_tiny
from a2p_jax.data.hands import load_hand_models
from a2p_jax.runtime import sharding
from a2p_jax.train import stage1
from timing import median_s
from train_batch import random_batch

PRIOR_CHANNELS = 57  # the oracle teacher: 42 keypoint + 13 segmentation + 2 depth maps


def matmul_rate(n=2048, reps=5):
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  return 2 * n ** 3 / median_s(lambda: f(a), reps)


def measure(name, config, batch_size, steps):
  config.batch_size = batch_size
  mesh = sharding.make_mesh(1)
  graphdef, state, state_sharding, _ = stage1.create_train_state(
      config, PRIOR_CHANNELS, 1000, mesh)
  step, _ = stage1.jit_train_step(graphdef, config, mesh, state_sharding, with_priors=True)
  batch = sharding.global_batch(
      random_batch(np.random.default_rng(0), batch_size, tuple(config.model.input_hw),
                   PRIOR_CHANNELS), sharding.batch_sharding(mesh))
  mano = jax.device_put(tuple(load_hand_models()))
  t0 = time.perf_counter()
  compiled = step.lower(state, batch, mano, np.int32(0)).compile()
  t_compile = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', float('nan'))) if cost else float('nan')
  i = 0

  def train_step():  # the state is donated: each step continues from the last
    nonlocal state, i
    state, m = compiled(state, batch, mano, np.int32(i))
    i += 1
    return m['loss']

  t = median_s(train_step, steps)  # step 0 is the untimed warm-up
  return {'name': name, 'batch': batch_size, 'compile_s': t_compile, 'step_s': t,
          'examples_s': batch_size / t, 'gflop': flops / 1e9, 'gflops_s': flops / t / 1e9}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--steps', type=int, default=5)
  ap.add_argument('--tiny_batch', type=int, default=16)
  ap.add_argument('--paper_batch', type=int, default=2)
  ap.add_argument('--skip_paper', action='store_true')
  args = ap.parse_args(argv)
  rate = matmul_rate()
  rows = [measure('synthetic_tiny', synthetic_tiny.get_config(), args.tiny_batch, args.steps)]
  if not args.skip_paper:
    rows.append(measure('a2p_interhand26m', a2p_interhand26m.get_config(), args.paper_batch,
                        args.steps))
  print(f'# stage-1 train step ({platform.machine()}, {os.cpu_count()} cores, jax '
        f'{jax.__version__} on {jax.default_backend()}); float32 2048^3 matmul: '
        f'{rate / 1e9:.1f} GFLOP/s')
  print('| config | batch | compile s | step ms | examples/s | GFLOP/step | GFLOP/s | '
        'of matmul rate |')
  print('|---|---:|---:|---:|---:|---:|---:|---:|')
  for r in rows:
    print(f"| {r['name']} | {r['batch']} | {r['compile_s']:.1f} | {r['step_s'] * 1e3:.1f} | "
          f"{r['examples_s']:.1f} | {r['gflop']:.2f} | {r['gflops_s']:.1f} | "
          f"{r['gflops_s'] * 1e9 / rate:.0%} |")


if __name__ == '__main__':
  main()
