"""mano_jax forward and forward+backward speed, side by side with smplx.MANO.

    python benchmarks/mano_speed.py [--batches 1,64,1024] [--reps 30]

Float32 on the default JAX device. When torch and smplx are importable
(`pip install torch==2.13.0 smplx==0.1.28`), smplx.MANO runs in the same
process on the same model (the procedural hand written as an official-format
pickle), alternating with mano_jax call by call; the table shows medians and
the speed ratio. Forward+backward = gradient of a weighted sum of vertices and
joints with respect to pose and betas.

Also printed: the work per call counted from the shapes (XLA's cost analysis
counts a loop body once, and mano_jax's skinning runs in a loop over chunks),
the rate that gives, and the floor: the larger of (the matmul FLOPs of the
math, without recomputation) / (this machine's matmul rate) and (bytes moved)
/ (its memory read rate), both rates measured in the same run.
"""

import argparse
import importlib.util
import os
import platform
import resource
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

import mano_jax
from timing import interleaved_median_s, median_s

# Writes the procedural hand as the official-format pickle smplx reads.
PICKLE_UTIL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           'tests', 'mano_pickle_util.py')


def _mano_pickle_util():
  """tests/mano_pickle_util.py, loaded by path (tests/ is not installed)."""
  spec = importlib.util.spec_from_file_location('mano_pickle_util', PICKLE_UTIL)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def jax_fns(model, batch, rng):
  pose = jnp.asarray(rng.normal(0, 0.5, (batch, 48)), jnp.float32)
  betas = jnp.asarray(rng.normal(0, 1, (batch, 10)), jnp.float32)
  wv = jnp.asarray(rng.normal(0, 1, (batch, model.num_vertices, 3)), jnp.float32)
  wj = jnp.asarray(rng.normal(0, 1, (batch, 21, 3)), jnp.float32)

  @jax.jit
  def fwd(pose, betas):
    out = mano_jax.forward(model, pose, betas)
    return out.vertices, out.joints

  def loss(pose, betas):
    v, j = fwd(pose, betas)
    return jnp.sum(v * wv) + jnp.sum(j * wj)

  fwd_bwd = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  jax.block_until_ready(fwd(pose, betas))
  jax.block_until_ready(fwd_bwd(pose, betas))
  # XLA:CPU allocates a program's temporaries as one block per call; past
  # glibc's largest mmap threshold (32 MB) that block is mmapped afresh and
  # page-faulted in on every call (batch 1024 fwd+bwd sits just under it).
  temp_mb = {kind: f.lower(pose, betas).compile().memory_analysis().temp_size_in_bytes / 1e6
             for kind, f in (('fwd', fwd), ('fwd+bwd', fwd_bwd))}
  return ({'fwd': lambda: fwd(pose, betas), 'fwd+bwd': lambda: fwd_bwd(pose, betas)},
          (pose, betas, wv, wj), temp_mb)


def minor_faults():
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def work(model, batch, nb=10):
  """{pass: (FLOPs done, FLOPs of the math, bytes moved)} per call, counted
  from the shapes for mano_jax's chunked skinning (mano_jax/skinning.py).

  FLOPs: the blend-shape matmul (2 K 3V per sample, K = betas + 9 (J-1)),
  the blended-transform matmul (2 12 J V), ~24 V for applying them; the
  backward does each matmul's transpose, recomputes the 9 rotation rows of
  the blended transforms (2 9 J V; not in "math") and ~30 V of elementwise
  work. Kinematics and rotations (~1e3 per sample) are left out. Bytes: the
  arrays of V entries per sample that cannot stay in cache (vertices written;
  with the backward also the posed vertices saved and read back and the
  vertex cotangents read), float32. The model's matrices (1.5 MB) and a
  chunk's intermediates stay in cache and are not counted.
  """
  v, j = model.num_vertices, model.num_joints
  k = nb + 9 * (j - 1)
  mm = 2 * k * 3 * v + 2 * 12 * j * v
  fwd = (batch * (mm + 24 * v), batch * mm, batch * 12 * v)
  fb = (batch * (2 * mm + 2 * 9 * j * v + 24 * v + 30 * v), batch * 2 * mm,
        batch * 4 * 12 * v)
  return {'fwd': fwd, 'fwd+bwd': fb}


def machine_rates():
  """(matmul FLOP/s, memory read bytes/s) of this machine now, float32."""
  rng = np.random.default_rng(1)
  a = jnp.asarray(rng.normal(size=(1024, 145)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(145, 2499)), jnp.float32)
  mm = jax.jit(lambda a, b: a @ b)
  t_mm = median_s(lambda: mm(a, b), 30, warmup=3)
  x = jnp.asarray(rng.normal(size=(16 * 2 ** 20,)), jnp.float32)  # 64 MB
  # A reduction: reads only (a fresh 64 MB output would time page faults).
  read = jax.jit(jnp.sum)
  t_read = median_s(lambda: read(x), 30, warmup=3)
  return 2 * 1024 * 145 * 2499 / t_mm, x.size * 4 / t_read


def load_average():
  try:
    return ' '.join(open('/proc/loadavg').read().split()[:3])
  except OSError:
    return 'unknown'


def torch_fns(model, batch, inputs, tmp):
  try:
    import torch
    layer = _mano_pickle_util().make_smplx_mano(
        mano_jax.load_procedural(model.side), tmp, use_pca=False,
        flat_hand_mean=False, dtype=torch.float32, batch_size=batch)
  except ImportError:
    return None
  pose, betas, wv, wj = (torch.tensor(np.asarray(x)) for x in inputs)
  tips = torch.tensor(model.tip_ids)

  def run(pose, betas):
    out = layer(betas=betas, global_orient=pose[:, :3], hand_pose=pose[:, 3:])
    joints = torch.cat([out.joints, out.vertices[:, tips]], 1)
    return out.vertices, joints

  def fwd():
    with torch.no_grad():
      run(pose, betas)

  def fwd_bwd():
    p = pose.clone().requires_grad_(True)
    b = betas.clone().requires_grad_(True)
    v, j = run(p, b)
    loss = (v * wv).sum() + (j * wj).sum()
    loss.backward()

  fwd()
  fwd_bwd()
  return {'fwd': fwd, 'fwd+bwd': fwd_bwd, 'threads': torch.get_num_threads()}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--batches', default='1,64,1024')
  ap.add_argument('--reps', type=int, default=30)
  args = ap.parse_args(argv)
  model = mano_jax.load_procedural('right').astype(jnp.float32)
  rng = np.random.default_rng(0)
  rows, memory = [], []
  torch_info = 'not installed'
  load_before = load_average()
  with tempfile.TemporaryDirectory() as tmp:
    for batch in (int(b) for b in args.batches.split(',')):
      fns, inputs, temp_mb = jax_fns(model, batch, rng)
      counts = work(model, batch)
      ref = torch_fns(model, batch, inputs, tmp)
      if ref is not None:
        import torch
        torch_info = f'torch {torch.__version__} ({ref["threads"]} threads), smplx'
      reps = max(5, args.reps if batch < 1024 else args.reps // 3)
      for kind in ('fwd', 'fwd+bwd'):
        # Alternate the two implementations call by call so that machine
        # noise hits both alike; report medians. Both are warm already.
        pair = {'jax': fns[kind]} if ref is None else {'jax': fns[kind], 'ref': ref[kind]}
        t = interleaved_median_s(pair, reps, warmup=0)
        mj, mt = 1e3 * t['jax'], 1e3 * t.get('ref', float('nan'))
        # Latency on its own (back-to-back calls, warm caches).
        faults = minor_faults()
        alone = 1e3 * median_s(fns[kind], 3 * reps, warmup=0)
        memory.append(f'{batch} {kind} {temp_mb[kind]:.1f} MB, '
                      f'{(minor_faults() - faults) / (3 * reps):.0f} faults')
        rows.append((batch, kind, mj, alone, mt, mt / mj) + counts[kind])
  flops_rate, read_rate = machine_rates()
  print(f'# mano_jax vs smplx.MANO  ({platform.processor() or platform.machine()}, '
        f'{os.cpu_count()} cores, jax {jax.__version__} on {jax.default_backend()}, '
        f'{torch_info}; procedural hand, {model.num_vertices} vertices, float32)')
  print('| batch | pass | mano_jax ms | (alone) | smplx ms | speed-up | GFLOP | GFLOP/s '
        '| MB moved | floor ms | x floor |')
  print('|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
  for b, kind, mj, alone, mt, ratio, flops, math_flops, nbytes in rows:
    ref = f'{mt:.3f} | {ratio:.1f}x' if np.isfinite(mt) else '- | -'
    floor = 1e3 * max(math_flops / flops_rate, nbytes / read_rate)
    print(f'| {b} | {kind} | {mj:.3f} | {alone:.3f} | {ref} | {flops / 1e9:.3f} | '
          f'{flops / 1e9 / (mj / 1e3):.1f} | {nbytes / 1e6:.1f} | {floor:.3f} | {mj / floor:.1f} |')
  print('mano_jax/smplx columns: medians of calls alternating between the two; '
        '(alone): mano_jax called back to back. GFLOP, MB moved: counted per call '
        '(see `work`); GFLOP/s over the mano_jax ms column.')
  print('mano_jax compiled temporaries and minor page faults per call (alone): '
        + '; '.join(memory) + '.')
  print(f'floor = max(math GFLOP / matmul rate, MB / read rate); this run: matmul '
        f'{flops_rate / 1e9:.0f} GFLOP/s ((1024, 145) @ (145, 2499)), read '
        f'{read_rate / 1e9:.1f} GB/s (sum of 64 MB). Load average (1, 5, 15 min) '
        f'before: {load_before}, after: {load_average()}.')


if __name__ == '__main__':
  main()
