"""MANO demo on the procedural hand (NOT MANO): both hands, random natural poses.

    python -m mano_jax.demo --out demo_out [--num_pairs 4] [--seed 0]
        [--mano_dir DIR]   # real MANO_RIGHT.pkl / MANO_LEFT.pkl instead

Writes per pair a right and a left mesh (.obj and .ply), a PNG picture of all
pairs, and prints the forward pass timing.
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

import mano_jax
from mano_jax import render


def sample_pose(model, rng, n):
  """Natural poses: PCA coefficients scaled by the basis' own spread when known."""
  k = 6
  std = 1.0
  path = os.path.join(os.path.dirname(mano_jax.io.__file__), 'assets',
                      f'procedural_hand_{model.side}.npz')
  if model.name.startswith('procedural') and os.path.exists(path):
    std = np.load(path)['hands_coeffs_std'][:k]
  coeffs = rng.normal(0, 1, (n, k)) * std
  hand = coeffs @ np.asarray(model.hands_components)[:k]
  orient = rng.normal(0, 0.25, (n, 3))
  return np.concatenate([orient, hand], -1).astype(np.float32)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--out', default='demo_out')
  ap.add_argument('--num_pairs', type=int, default=4)
  ap.add_argument('--seed', type=int, default=0)
  ap.add_argument('--mano_dir', default=None,
                  help='folder with MANO_RIGHT.pkl and MANO_LEFT.pkl')
  args = ap.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  if args.mano_dir:
    models = {s: mano_jax.load(os.path.join(args.mano_dir, f'MANO_{s.upper()}.pkl'))
              for s in ('right', 'left')}
  else:
    models = {s: mano_jax.load_procedural(s) for s in ('right', 'left')}
  print(f'model: {models["right"].name}, {models["right"].num_vertices} vertices')
  models = {s: m.astype(jnp.float32) for s, m in models.items()}
  rng = np.random.default_rng(args.seed)
  n = args.num_pairs
  pose_r = sample_pose(models['right'], rng, n)
  pose_l = mano_jax.mirror_pose(sample_pose(models['right'], rng, n))
  betas = rng.normal(0, 1, (2, n, 10)).astype(np.float32)
  # The left model is the mirror image (x -> -x) of the right: with the
  # left wrist 27 cm further along x the two hands reach toward each other,
  # fingertips overlapping by a few cm.
  transl_r = np.zeros((n, 3), np.float32)
  transl_l = (np.tile([[0.27, 0.0, 0.0]], (n, 1))
              + rng.normal(0, 0.01, (n, 3))).astype(np.float32)

  @jax.jit
  def both(pr, pl, b, tr, tl):
    return (mano_jax.forward(models['right'], pr, b[0], tr),
            mano_jax.forward(models['left'], pl, b[1], tl))

  t0 = time.perf_counter()
  out_r, out_l = jax.block_until_ready(both(pose_r, pose_l, betas, transl_r, transl_l))
  t_compile = time.perf_counter() - t0
  times = []
  for _ in range(20):
    t0 = time.perf_counter()
    jax.block_until_ready(both(pose_r, pose_l, betas, transl_r, transl_l))
    times.append(time.perf_counter() - t0)
  t_run = float(np.median(times))

  written = []
  tiles = []
  for i in range(n):
    pair = []
    for side, out in (('right', out_r), ('left', out_l)):
      v = np.asarray(out.vertices[i])
      pair.append((v, np.asarray(models[side].faces)))
      for ext in ('obj', 'ply'):
        path = os.path.join(args.out, f'pair{i}_{side}.{ext}')
        mano_jax.export_mesh(path, v, models[side].faces)
        written.append(path)
    tiles.append(render.render_meshes(
        pair, size=(320, 320), rotation=render.look_at_rotation(-15, 50)))
  cols = min(n, 4)
  rows = (n + cols - 1) // cols
  sheet = Image.new('RGB', (320 * cols, 320 * rows), (255, 255, 255))
  for i, t in enumerate(tiles):
    sheet.paste(t, ((i % cols) * 320, (i // cols) * 320))
  png = os.path.join(args.out, 'hands.png')
  sheet.save(png)
  print(f'forward (both hands, {n} pairs, float32, {jax.default_backend()}): '
        f'compile {t_compile:.2f} s, run {t_run * 1e3:.3f} ms (median of 20)')
  print(f'wrote {len(written)} meshes to {args.out}/ and the picture {png}')
  return 0


if __name__ == '__main__':
  main()
