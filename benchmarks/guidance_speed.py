"""Where a guided DDIM step of stage 2 spends its time (CPU), per hand pair.

    .venv/bin/python benchmarks/guidance_speed.py [--batch 1 8] [--reps 30]

Rows, each jitted, median over reps (compile excluded), interleaved so load
drifts hit every row alike:
  nearest, two matrices    the previous nearest-vertex search (a distance
                           matrix and an argmin per direction)
  nearest, one matrix      geometry.collision.nearest_both_ways (one distance
                           matrix, argmin along each axis; same indices)
  MANO both hands fwd+bwd  state -> meshes and its VJP
  collision loss fwd+bwd   geometry.collision_loss value and gradient
  guidance gradient        the whole guide_grad of stage 2 (state -> loss -> d/dstate)
  gate (proxy depth)       the cheap penetration detector of the repair gate
  denoiser forward         a2p_jax/configs/diffusion_tiny.py's denoiser (random weights)
Hands: the procedural hand (not MANO), the left pushed into the right.
"""

import argparse
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from a2p_jax.configs import diffusion_tiny
from a2p_jax.data.hands import load_hand_models
from a2p_jax.diffusion import guidance as guidance_lib
from a2p_jax.diffusion import state as state_lib
from a2p_jax.geometry import collision as coll
from a2p_jax.geometry import pairs as pairs_mod
from a2p_jax.models.denoiser import Denoiser
from timing import interleaved_median_s


def params_batch(b, seed=0):
  rng = np.random.default_rng(seed)
  eye6 = np.array([1, 0, 0, 0, 1, 0], np.float32)
  pose = np.tile(eye6, (b, 2, 16, 1)) + rng.normal(0, 0.05, (b, 2, 16, 6)).astype(np.float32)
  root = np.tile(np.array([[0.0, 0.0, 0.5], [0.02, 0.0, 0.5]], np.float32), (b, 1, 1))
  root[:, 1] += rng.normal(0, 0.005, (b, 3)).astype(np.float32)
  return {'pose_6d': jnp.asarray(pose), 'betas': jnp.zeros((b, 2, 10), jnp.float32),
          'root_cam': jnp.asarray(root)}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--batch', type=int, nargs='+', default=[1, 8])
  ap.add_argument('--reps', type=int, default=30)
  args = ap.parse_args(argv)
  models = load_hand_models(None)
  cfg = diffusion_tiny.get_config()
  fr = np.asarray(models[0].faces, np.int32)
  fl = np.asarray(models[1].faces, np.int32)
  graphdef, mstate = nnx.split(Denoiser(cfg.model, state_lib.TOKENS, rngs=nnx.Rngs(0)))

  def argmin_two(a, b):
    n = lambda p, q: jnp.argmin(coll._sq_dists(p, q), 1)  # noqa: E731
    return pairs_mod.map_pairs(lambda p, q: (n(p, q), n(q, p)), a, b)

  print(f'# guided-step components, {jax.default_backend()}, {os.cpu_count()} cores, '
        f'ms per call (median of {args.reps})\n')
  print('| component | ' + ' | '.join(f'batch {b}' for b in args.batch) + ' |')
  print('|---|' + '---:|' * len(args.batch))
  rows = {}
  for b in args.batch:
    params = params_batch(b)
    x = state_lib.to_state(params)
    stats = {'mean': jnp.zeros(x.shape[-1]), 'std': jnp.ones(x.shape[-1])}
    root_r = params['root_cam'][:, 0]
    vr, vl = state_lib.meshes(params, models)
    meshes_vjp = jax.grad(lambda z: sum(jnp.sum(v) for v in state_lib.meshes(
        state_lib.from_state(z, root_r), models)))
    coll_grad = jax.value_and_grad(lambda a, c: jnp.sum(coll.collision_loss(
        a, fr, c, fl, dist_threshold=0.02, cos_threshold=0.0, rho=0.01)), (0, 1))
    model = nnx.merge(graphdef, mstate)
    model.eval()
    t = jnp.full((b,), 500, jnp.int32)
    fns = {
        'nearest, two matrices': (argmin_two, (vr, vl)),
        'nearest, one matrix': (lambda a, c: pairs_mod.map_pairs(coll.nearest_both_ways, a, c),
                                (vr, vl)),
        'MANO both hands fwd+bwd': (meshes_vjp, (x,)),
        'collision loss fwd+bwd': (coll_grad, (vr, vl)),
        'guidance gradient': (guidance_lib.make_guide_grad(stats, models, root_r,
                                                           cfg.collision), (x,)),
        'gate (proxy depth)': (lambda p: guidance_lib.proxy_depth(p, models, cfg.collision),
                               (params,)),
        'denoiser forward': (lambda z: model(z, t, z), (x,)),
    }
    jitted = {k: jax.jit(f) for k, (f, _) in fns.items()}
    ref = [np.asarray(v) for v in jitted['nearest, two matrices'](vr, vl)]
    new = [np.asarray(v) for v in jitted['nearest, one matrix'](vr, vl)]
    assert all(np.array_equal(r, n) for r, n in zip(ref, new)), 'nearest indices differ'
    medians = interleaved_median_s(
        {k: functools.partial(jitted[k], *args_k) for k, (_, args_k) in fns.items()}, args.reps)
    for k, t in medians.items():
      rows.setdefault(k, []).append(t * 1e3)
  for k, v in rows.items():
    print(f'| {k} | ' + ' | '.join(f'{x:.2f}' for x in v) + ' |')


if __name__ == '__main__':
  main()
