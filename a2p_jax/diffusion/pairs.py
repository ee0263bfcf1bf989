"""Stage-2 training pairs (penetrating X_c, plausible X_0).

  (i)  `perturbed_pairs`: ground truth perturbed with growing noise (left
       hand pulled toward the right, random finger, relative-rotation and
       shape noise) until the hands penetrate (geometry.penetrates);
  (ii) `prediction_pairs`: a (weaker) stage-1 model's outputs that
       penetrate, each paired with its ground truth.

    python -m a2p_jax.diffusion.pairs --root DIR --split train --out FILE.npz \
        --num N [--mano_dir DIR] [--seed S]
    python -m a2p_jax.diffusion.pairs --root DIR --split train --out FILE.npz \
        --stage1_workdir STAGE1_WORKDIR [--max_examples M]     # pairs (ii)

The .npz holds gt_{pose_6d,betas,root_cam} and cond_{...} (stage-1
parameter convention, a2p_jax/diffusion/state.py) and `source` (0 perturbed
ground truth, 1 stage-1 prediction).
"""

import argparse
import math
import os
import sys
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

import mano_jax
from a2p_jax import geometry
from a2p_jax.diffusion import state as state_lib

KEYS = ('pose_6d', 'betas', 'root_cam')
# Pairs per geometry call (padded: one compile per shape).
_CHUNK = 16


def _faces(models):
  return np.asarray(models[0].faces, np.int32), np.asarray(models[1].faces, np.int32)


def _pad(params, n):
  m = len(params['betas'])
  return {k: np.concatenate([v, np.repeat(v[-1:], n - m, 0)]) if m < n else v
          for k, v in params.items()}


def penetration_depth(params, models, chunk: int = _CHUNK) -> np.ndarray:
  """geometry.penetration_depth (N,) m of parameters (N, ...), chunked."""
  fr, fl = _faces(models)
  n = len(params['betas'])
  out = []
  for s in range(0, n, chunk):
    part = _pad({k: np.asarray(v[s:s + chunk], np.float32) for k, v in params.items()}, chunk)
    vr, vl = _meshes_jit(models)(part)
    out.append(np.asarray(geometry.penetration_depth(vr, fr, vl, fl))[:min(chunk, n - s)])
  return np.concatenate(out) if out else np.zeros(0)


_MESH_FNS = {}


def _meshes_jit(models):
  key = id(models[0]), id(models[1])
  if key not in _MESH_FNS:
    _MESH_FNS[key] = jax.jit(lambda p: state_lib.meshes(p, models))
  return _MESH_FNS[key]


def ground_truth(dataset, models, *, max_examples: Optional[int] = None, progress: bool = True
                 ) -> Dict[str, np.ndarray]:
  """Parameters (N, ...) of the examples with both hands' fits that do not
  penetrate (targets must be plausible)."""
  n = len(dataset) if max_examples is None else min(len(dataset), max_examples)
  rows = []
  it = range(n)
  if progress:
    from tqdm import tqdm
    it = tqdm(it, desc='ground truth', unit='ex', dynamic_ncols=True)
  for i in it:
    mano = dataset[i]['mano']
    if mano.get('right') is None or mano.get('left') is None:
      continue
    rows.append(state_lib.params_from_mano(mano, models))
  if not rows:
    raise ValueError('pairs: no example with both hands\' MANO fits')
  gt = {k: np.stack([r[k] for r in rows]) for k in KEYS}
  ok = penetration_depth(gt, models) <= 0
  return {k: v[ok] for k, v in gt.items()}


def _rotate(d6, aa):
  """Rotations d6 (..., 6) composed with axis-angle noise aa (..., 3)."""
  r = mano_jax.rot6d_to_matrix(jnp.asarray(d6))
  n = mano_jax.axis_angle_to_matrix(jnp.asarray(aa, jnp.float32))
  shape = r.shape[:-2]
  out = jnp.matmul(r.reshape(-1, 3, 3), n.reshape(-1, 3, 3)).reshape(shape + (3, 3))
  return np.asarray(mano_jax.matrix_to_rot6d(out))


def perturb(gt, rng: np.random.Generator, scale, models, *, finger_rad=0.15, rel_rot_rad=0.2,
            betas_std=0.3, jitter_m=0.005):
  """One perturbation of each ground truth (N, ...) at noise scale (N,) in
  [0, 1]: the left hand moves toward the right by scale * a random share
  of the distance between their centroids (+ jitter), the left root turns
  and the fingers bend by Gaussian rotations, the betas change; all
  proportional to scale."""
  n = len(gt['betas'])
  s = np.asarray(scale, np.float32).reshape(n)
  vr, vl = _meshes_jit(models)(_pad({k: np.asarray(v, np.float32) for k, v in gt.items()},
                                    max(n, 1)))
  d = np.asarray(vr).mean(1) - np.asarray(vl).mean(1)
  pose = np.array(gt['pose_6d'], np.float32)
  pose[:, :, 1:] = _rotate(pose[:, :, 1:], rng.normal(0, 1, (n, 2, 15, 3)) * finger_rad
                           * s[:, None, None, None])
  pose[:, 1, 0] = _rotate(pose[:, 1, 0], rng.normal(0, 1, (n, 3)) * rel_rot_rad * s[:, None])
  root = np.array(gt['root_cam'], np.float32)
  pull = rng.uniform(0.5, 1.2, n).astype(np.float32) * s
  root[:, 1] += pull[:, None] * d + rng.normal(0, jitter_m, (n, 3)) * s[:, None]
  betas = np.array(gt['betas'], np.float32) + rng.normal(0, betas_std, (n, 2, 10)) * s[:, None,
                                                                                       None]
  return {'pose_6d': pose, 'betas': betas.astype(np.float32), 'root_cam': root}


def perturbed_pairs(gt, models, num: int, *, seed: int = 0, rungs: int = 8,
                    min_depth_m: float = 0.001, candidates: int = 4 * _CHUNK,
                    progress: bool = True):
  """`num` pairs (gt, cond) from ground truth (M, ...): random ground
  truths, each perturbed at scales k / rungs, k = 1.. until its penetration
  depth exceeds min_depth_m (those that never do are dropped and redrawn)."""
  rng = np.random.default_rng(seed)
  m = len(gt['betas'])
  if m == 0:
    raise ValueError('perturbed_pairs: no ground truth to perturb')
  got = {'gt': [], 'cond': []}
  have = 0
  pbar = None
  if progress:
    from tqdm import tqdm
    pbar = tqdm(total=num, desc='perturbed pairs', unit='pair', dynamic_ncols=True)
  while have < num:
    idx = rng.integers(0, m, candidates)
    base = {k: v[idx] for k, v in gt.items()}
    done = np.zeros(len(idx), bool)
    for k in range(1, rungs + 1):
      scale = np.full(len(idx), k / rungs) * rng.uniform(0.8, 1.2, len(idx))
      cand = perturb(base, rng, scale, models)
      todo = np.flatnonzero(~done)
      depth = penetration_depth({kk: v[todo] for kk, v in cand.items()}, models)
      hit = todo[depth > min_depth_m]
      for i in hit:
        got['gt'].append({kk: base[kk][i] for kk in KEYS})
        got['cond'].append({kk: cand[kk][i] for kk in KEYS})
      done[hit] = True
      if done.all():
        break
    new = int(done.sum())
    have += new
    if pbar is not None:
      pbar.update(min(new, num - (have - new)))
  if pbar is not None:
    pbar.close()
  stack = lambda rows: {k: np.stack([r[k] for r in rows[:num]]).astype(np.float32) for k in KEYS}
  return stack(got['gt']), stack(got['cond'])


def prediction_pairs(predict_fn: Callable, dataset, models, *, batch_size: int = 16,
                     max_examples: Optional[int] = None, min_depth_m: float = 0.0,
                     progress: bool = True):
  """Pairs (gt, cond) from a model's predictions that penetrate.

  predict_fn(list of reader examples) -> parameters {'pose_6d' (b, 2, 16,
  6), 'betas' (b, 2, 10), 'root_cam' (b, 2, 3)} (e.g. a stage-1 checkpoint's
  prediction wrapped with its input pipeline). Only examples with both
  hands' fits are used; ground truths that penetrate themselves are dropped.
  """
  n = len(dataset) if max_examples is None else min(len(dataset), max_examples)
  gts, conds = [], []
  batch = []

  def flush():
    if not batch:
      return
    pred = predict_fn([ex for ex, _ in batch])
    pred = {k: np.asarray(pred[k], np.float32) for k in KEYS}
    gt = {k: np.stack([g[k] for _, g in batch]).astype(np.float32) for k in KEYS}
    d_pred = penetration_depth(pred, models)
    d_gt = penetration_depth(gt, models)
    keep = (d_pred > min_depth_m) & (d_gt <= 0)
    gts.append({k: v[keep] for k, v in gt.items()})
    conds.append({k: v[keep] for k, v in pred.items()})
    batch.clear()

  it = range(n)
  if progress:
    from tqdm import tqdm
    it = tqdm(it, desc='prediction pairs', unit='ex', dynamic_ncols=True)
  for i in it:
    ex = dataset[i]
    mano = ex['mano']
    if mano.get('right') is None or mano.get('left') is None:
      continue
    batch.append((ex, state_lib.params_from_mano(mano, models)))
    if len(batch) == batch_size:
      flush()
  flush()
  cat = lambda parts: {k: np.concatenate([p[k] for p in parts]) if parts else
                       np.zeros((0,) + _SHAPES[k], np.float32) for k in KEYS}
  return cat(gts), cat(conds)


_SHAPES = {'pose_6d': (2, 16, 6), 'betas': (2, 10), 'root_cam': (2, 3)}


def stage1_predict_fn(workdir: str, mano_dir: Optional[str] = None, step: Optional[int] = None):
  """predict_fn for `prediction_pairs` from a stage-1 training workdir
  (its newest checkpoint, or `step`: an earlier, weaker one): each reader
  example cropped around its hands as in evaluation (no augmentation), the
  checkpoint's inference path (FAE, no teacher)."""
  from a2p_jax.eval.run import eval_batch, load_stage1
  from a2p_jax.train import input as input_lib
  config, predict_batch, _, models = load_stage1(workdir, step=step, mano_dir=mano_dir)
  cfg = input_lib.augment_config(config)

  def predict(examples):
    batch = eval_batch(examples, cfg, models)
    out = predict_batch(batch)
    return {k: out[k] for k in KEYS}

  return predict


def save(path: str, gt, cond, source=None):
  """Writes pairs to `path` (.npz; its folder is created)."""
  n = len(gt['betas'])
  source = np.zeros(n, np.int8) if source is None else np.asarray(source, np.int8)
  arrays = {f'gt_{k}': np.asarray(gt[k], np.float32) for k in KEYS}
  arrays.update({f'cond_{k}': np.asarray(cond[k], np.float32) for k in KEYS})
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, source=source, **arrays)


def load(path: str):
  """(gt, cond, source) from a pairs .npz; checks shapes and finiteness."""
  with np.load(path) as f:
    missing = [f'{p}_{k}' for p in ('gt', 'cond') for k in KEYS if f'{p}_{k}' not in f]
    if missing:
      raise ValueError(f'{path}: not a stage-2 pair file (missing {missing})')
    gt = {k: f[f'gt_{k}'] for k in KEYS}
    cond = {k: f[f'cond_{k}'] for k in KEYS}
    source = f['source'] if 'source' in f else np.zeros(len(gt['betas']), np.int8)
  n = len(gt['betas'])
  for name, tree in (('gt', gt), ('cond', cond)):
    for k, v in tree.items():
      if v.shape != (n,) + _SHAPES[k]:
        raise ValueError(f'{path}: {name}_{k} has shape {v.shape}, expected {(n,) + _SHAPES[k]}')
      if not np.all(np.isfinite(v)):
        raise ValueError(f'{path}: {name}_{k} has non-finite values')
  return gt, cond, source


def concat(*trees):
  return {k: np.concatenate([t[k] for t in trees]) for k in KEYS}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--root', required=True, help='InterHand2.6M-layout folder (or synthetic)')
  p.add_argument('--split', default='train')
  p.add_argument('--out', required=True, help='output .npz')
  p.add_argument('--num', type=int, default=None,
                 help='number of perturbed pairs (required without --stage1_workdir)')
  p.add_argument('--mano_dir', default=None)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--max_examples', type=int, default=None)
  p.add_argument('--min_depth_mm', type=float, default=1.0)
  p.add_argument('--stage1_workdir', default=None,
                 help='instead: pairs of this stage-1 checkpoint\'s penetrating predictions '
                      '(over --max_examples examples; --num is ignored)')
  p.add_argument('--stage1_step', type=int, default=None,
                 help='with --stage1_workdir: this checkpoint step instead of the newest')
  args = p.parse_args(argv)
  if args.stage1_workdir is None and args.num is None:
    p.error('--num is required (or --stage1_workdir for stage-1 prediction pairs)')
  if args.stage1_step is not None and args.stage1_workdir is None:
    p.error('--stage1_step needs --stage1_workdir')
  from a2p_jax.data.hands import load_hand_models
  from a2p_jax.data.interhand26m import InterHand26M
  models = load_hand_models(args.mano_dir)
  ds = InterHand26M(args.root, args.split, mano_dir=args.mano_dir)
  if args.stage1_workdir:
    g, c = prediction_pairs(stage1_predict_fn(args.stage1_workdir, args.mano_dir,
                                             args.stage1_step), ds, models,
                            max_examples=args.max_examples,
                            min_depth_m=args.min_depth_mm / 1000.0)
    save(args.out, g, c, source=np.ones(len(g['betas'])))
    print(f'wrote {len(g["betas"])} stage-1 prediction pairs to {args.out}', flush=True)
    return 0
  gt = ground_truth(ds, models, max_examples=args.max_examples)
  print(f'{len(gt["betas"])} non-penetrating two-hand ground truths', flush=True)
  g, c = perturbed_pairs(gt, models, args.num, seed=args.seed,
                         min_depth_m=args.min_depth_mm / 1000.0)
  save(args.out, g, c)
  print(f'wrote {len(g["betas"])} pairs to {args.out}', flush=True)


if __name__ == '__main__':
  sys.exit(main())
