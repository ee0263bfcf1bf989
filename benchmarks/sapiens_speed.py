"""Sapiens-JAX: FLOPs per image, speed on this machine, and what precomputing
the teacher maps for InterHand2.6M would take.

    python benchmarks/sapiens_speed.py [--sizes 0.3b,0.6b,1b,2b] [--batches 1,2]
        [--repeats 3] [--no_speed]

1. FLOPs per 1024 x 768 image from XLA's cost analysis of the compiled
   forward (`compile().cost_analysis()`), for each size: the backbone and
   each official head (pose, seg, depth). Parameters are abstract
   (`sapiens_jax.abstract_params`: ShapeDtypeStructs), so nothing big is
   allocated. The blocks run as a lax.scan, whose body XLA's cost analysis
   counts once: the table adds (depth - 1) x the cost of one compiled block
   (the sum is checked against a fully unrolled compile of a small model).
2. Speed of the 0.3b backbone (random weights, `random_model`) at 1024 x 768,
   float32, per batch size: compile time and the median of `--repeats`
   timed calls after one untimed call (benchmarks/timing.py), next to a
   2048^3 float32 matmul's rate measured in the same run.
3. The precompute of the three task models (pose, seg, depth: each its own
   backbone and head) on InterHand2.6M train (1.36 M annotations), computed
   from the FLOPs at a stated accelerator throughput; not measured.
"""

import argparse
import datetime
import functools
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from timing import median_s

from a2p_jax.teacher import sapiens_jax

HW = (1024, 768)
TASKS = ('pose', 'seg', 'depth')
IH26M_TRAIN_ANNOTATIONS = 1.36e6
# TPU v5e: 197 TFLOP/s bf16 peak per chip (Cloud TPU v5e documentation). The
# utilisation is an assumption, not a measurement.
ACCEL = {'name': 'TPU v5e chip', 'peak_tflops': 197.0, 'utilisation': 0.4}
POD_CHIPS = 64


def log(msg):
  print(msg, file=sys.stderr, flush=True)


def _flops(compiled):
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', float('nan'))) if cost else float('nan')


def compiled_flops(arch, batch, hw=HW, dtype=jnp.float32, scan_unroll=1, features_only=False):
  """XLA's FLOP count of the compiled forward on abstract inputs."""
  f = jax.jit(functools.partial(sapiens_jax.apply, arch, dtype=dtype, scan_unroll=scan_unroll,
                                features_only=features_only))
  images = jax.ShapeDtypeStruct((batch,) + tuple(hw) + (3,), jnp.float32)
  return _flops(f.lower(sapiens_jax.abstract_params(arch, dtype), images).compile())


def block_flops(arch, batch, hw=HW, dtype=jnp.float32):
  """XLA's FLOP count of one compiled transformer block at the grid of `hw`."""
  tokens = (hw[0] // arch.patch_size) * (hw[1] // arch.patch_size) + int(arch.cls_token)
  one = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype),
                     sapiens_jax.abstract_params(arch, dtype)['blocks'])
  x = jax.ShapeDtypeStruct((batch, tokens, arch.embed_dim), dtype)
  f = jax.jit(functools.partial(sapiens_jax._block, arch))
  return _flops(f.lower(x, one).compile())


def model_flops(arch, batch=1, hw=HW, dtype=jnp.float32):
  """FLOPs of the forward with a scan of `depth` blocks: the scan's body is
  counted once by XLA, so (depth - 1) blocks are added."""
  full = compiled_flops(arch, batch, hw, dtype)
  return full + (arch.depth - 1) * block_flops(arch, batch, hw, dtype)


def check_scan_accounting():
  """model_flops == the cost of a fully unrolled compile (small model)."""
  arch = sapiens_jax.Arch(64, 3, 2, pos_hw=(8, 6), head=sapiens_jax.HeadArch(
      'pose', (16, 16), (4, 4), (16,), (1,), 8))
  hw = (128, 96)
  composed = model_flops(arch, 2, hw)
  unrolled = compiled_flops(arch, 2, hw, scan_unroll=True)
  if abs(composed - unrolled) > 1e-3 * unrolled:
    raise AssertionError(f'scan FLOP accounting is off: {composed} vs unrolled {unrolled}')
  return composed, unrolled


def param_count(arch):
  return sum(int(np.prod(s.shape)) for s in jax.tree.leaves(sapiens_jax.abstract_params(arch)))


def flops_table(sizes):
  rows = []
  for size in sizes:
    t0 = time.perf_counter()
    bb = sapiens_jax.resolve_arch(size)
    row = {'size': size, 'params_backbone': param_count(bb), 'backbone': model_flops(bb)}
    for task in TASKS:
      arch = sapiens_jax.resolve_arch(size, task)
      row[task] = model_flops(arch) - row['backbone']
      row[f'params_{task}'] = param_count(arch) - row['params_backbone']
    row['three_models'] = 3 * row['backbone'] + sum(row[t] for t in TASKS)
    rows.append(row)
    log(f'{size}: FLOPs in {time.perf_counter() - t0:.0f} s: backbone '
        f'{row["backbone"] / 1e12:.2f} TFLOP/image')
  lines = [('| size | backbone params (M) | backbone GFLOP/image | pose head GFLOP (params M) | '
           'seg head GFLOP (params M) | depth head GFLOP (params M) | pose + seg + depth models '
           'TFLOP/image |'), '|---|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    heads = ' | '.join(f'{r[t] / 1e9:.0f} ({r[f"params_{t}"] / 1e6:.1f})' for t in TASKS)
    lines.append(f'| {r["size"]} | {r["params_backbone"] / 1e6:.1f} | {r["backbone"] / 1e9:.0f} '
                 f'| {heads} | {r["three_models"] / 1e12:.2f} |')
  return rows, '\n'.join(lines)


def precompute_table(rows, cpu_images_per_s=None):
  peak, util = ACCEL['peak_tflops'] * 1e12, ACCEL['utilisation']
  lines = [(f'| size | PFLOP for 1.36 M x 3 models | {ACCEL["name"]}-hours at '
           f'{util:.0%} of {ACCEL["peak_tflops"]:.0f} TFLOP/s | wall time on {POD_CHIPS} chips |'),
           '|---|---:|---:|---:|']
  for r in rows:
    total = IH26M_TRAIN_ANNOTATIONS * r['three_models']
    chip_h = total / (peak * util) / 3600
    lines.append(f'| {r["size"]} | {total / 1e15:,.0f} | {chip_h:,.0f} | '
                 f'{chip_h / POD_CHIPS:,.1f} h |')
  text = '\n'.join(lines)
  if cpu_images_per_s:
    # The three models cost ~ 3 backbones and their heads; this CPU's rate on
    # one 0.3b backbone scales by the FLOP ratio.
    r03 = next((r for r in rows if r['size'] == '0.3b'), None)
    if r03 is not None:
      per_s = cpu_images_per_s * r03['backbone'] / r03['three_models']
      days = IH26M_TRAIN_ANNOTATIONS / per_s / 86400
      text += (f'\n\nOn this CPU at the measured 0.3b backbone rate, scaled by FLOPs to the '
               f'three 0.3b models: {per_s:.4f} annotations/s, {days:,.0f} days.')
  return text


def matmul_rate(n=2048, reps=5):
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  return 2 * n ** 3 / median_s(lambda: f(a), reps)


def speed(batches, repeats, size='0.3b'):
  model = sapiens_jax.random_model(size)
  f = jax.jit(functools.partial(model.apply, features_only=True))
  rng = np.random.default_rng(0)
  lines = [('| model | batch | compile s | median s/call | images/s | GFLOP/image | '
           'achieved GFLOP/s |'), '|---|---:|---:|---:|---:|---:|---:|']
  best = None
  flops_1 = model_flops(model.arch, 1)
  for b in batches:
    x = jnp.asarray(rng.standard_normal((b,) + HW + (3,), dtype=np.float32))
    t0 = time.perf_counter()
    compiled = f.lower(model.params, x).compile()
    t_compile = time.perf_counter() - t0
    log(f'{size} backbone, batch {b}: compiled in {t_compile:.1f} s; timing {repeats} calls')
    t = median_s(lambda: compiled(model.params, x), repeats)  # noqa: B023
    ips = b / t
    best = max(best or 0.0, ips)
    lines.append(f'| {size} backbone, float32 | {b} | {t_compile:.1f} | {t:.2f} | {ips:.3f} | '
                 f'{flops_1 / 1e9:.0f} | {flops_1 * ips / 1e9:.0f} |')
    log(lines[-1])
  return best, '\n'.join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--sizes', default='0.3b,0.6b,1b,2b')
  ap.add_argument('--batches', default='1,2')
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--no_speed', action='store_true', help='FLOP tables only')
  args = ap.parse_args(argv)
  sizes = [s for s in args.sizes.split(',') if s]
  batches = [int(b) for b in args.batches.split(',') if b]
  composed, unrolled = check_scan_accounting()
  log(f'scan FLOP accounting checked on a small model: {composed:.0f} == unrolled {unrolled:.0f}')
  print(f'# Sapiens-JAX, {HW[0]}x{HW[1]} input, float32; {platform.machine()} '
        f'({os.cpu_count()} cores), jax {jax.__version__} on {jax.default_backend()}, '
        f'{datetime.date.today()}')
  rows, table = flops_table(sizes)
  print('\n## FLOPs per image (XLA cost analysis, compiled)\n')
  print(table)
  ips = None
  if not args.no_speed:
    rate = matmul_rate()
    ips, table = speed(batches, args.repeats)
    print(f'\n## Speed on this machine (float32 2048^3 matmul: {rate / 1e9:.1f} GFLOP/s)\n')
    print(table)
  print(f'\n## Precompute estimate: InterHand2.6M train, {IH26M_TRAIN_ANNOTATIONS / 1e6:.2f} M '
        f'annotations x (pose, seg, depth) models, from the FLOPs above\n')
  print(f'Assumed: {ACCEL["name"]} at {ACCEL["utilisation"]:.0%} of its '
        f'{ACCEL["peak_tflops"]:.0f} TFLOP/s bf16 peak (an assumption, not measured).\n')
  print(precompute_table(rows, ips))


if __name__ == '__main__':
  main()
