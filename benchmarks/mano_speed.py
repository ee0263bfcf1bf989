"""mano_jax forward and forward+backward speed, side by side with smplx.MANO.

    python benchmarks/mano_speed.py [--batches 1,64,1024] [--reps 30]

Float32 on the default JAX device. When torch and smplx are importable
(`pip install torch==2.13.0 smplx==0.1.28`), smplx.MANO runs in the same
process on the same model (the procedural hand written as an official-format
pickle), alternating with mano_jax call by call; the table shows medians and
the speed ratio. Forward+backward = gradient of a weighted sum of vertices and
joints with respect to pose and betas. Also printed: XLA's FLOP count of the
compiled programs.
"""

import argparse
import importlib.util
import os
import platform
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
  flops = {}
  for name, f in (('fwd', fwd), ('fwd+bwd', fwd_bwd)):
    try:
      ca = f.lower(pose, betas).compile().cost_analysis()
      ca = ca[0] if isinstance(ca, (list, tuple)) else ca
      flops[name] = float(ca.get('flops', float('nan')))
    except Exception:  # cost analysis is best effort
      flops[name] = float('nan')
  return ({'fwd': lambda: fwd(pose, betas), 'fwd+bwd': lambda: fwd_bwd(pose, betas)},
          (pose, betas, wv, wj), flops)


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
  rows = []
  torch_info = 'not installed'
  with tempfile.TemporaryDirectory() as tmp:
    for batch in (int(b) for b in args.batches.split(',')):
      fns, inputs, flops = jax_fns(model, batch, rng)
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
        alone = 1e3 * median_s(fns[kind], 3 * reps, warmup=0)
        gflops = flops[kind] / 1e9
        rows.append((batch, kind, mj, alone, mt, mt / mj, gflops, gflops / (mj / 1e3)))
  print(f'# mano_jax vs smplx.MANO  ({platform.processor() or platform.machine()}, '
        f'{os.cpu_count()} cores, jax {jax.__version__} on {jax.default_backend()}, '
        f'{torch_info}; procedural hand, {model.num_vertices} vertices, float32)')
  print('| batch | pass | mano_jax ms | (alone) | smplx ms | speed-up | XLA GFLOP | mano_jax GFLOP/s |')
  print('|---:|---|---:|---:|---:|---:|---:|---:|')
  for b, kind, mj, alone, mt, ratio, gf, rate in rows:
    ref = f'{mt:.3f} | {ratio:.1f}x' if np.isfinite(mt) else '- | -'
    print(f'| {b} | {kind} | {mj:.3f} | {alone:.3f} | {ref} | {gf:.3f} | {rate:.1f} |')
  print('mano_jax/smplx columns: medians of calls alternating between the two; '
        '(alone): mano_jax called back to back.')


if __name__ == '__main__':
  main()
