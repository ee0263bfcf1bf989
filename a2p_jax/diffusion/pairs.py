"""Stage-2 training pairs (penetrating X_c, plausible X_0).

  (i)  `perturbed_pairs`: ground truth perturbed with growing noise (left
       hand pulled toward the right, random finger, relative-rotation and
       shape noise) until the hands penetrate (geometry.penetrates);
  (ii) `prediction_pairs`: a (weaker) stage-1 model's outputs that
       penetrate, each paired with its ground truth.

The command that builds pair files (from the data set's ground truth, or
from a stage-1 checkpoint's predictions) is `python -m a2p_jax.build_pairs`.

The .npz holds gt_{pose_6d,betas,root_cam} and cond_{...} (stage-1
parameter convention, a2p_jax/diffusion/state.py) and `source` (0 perturbed
ground truth, 1 stage-1 prediction).
"""

import os
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import mano_jax
from a2p_jax import geometry
from a2p_jax.arrays import pad_batch
from a2p_jax.diffusion import state as state_lib

KEYS = ('pose_6d', 'betas', 'root_cam')
# Pairs per geometry call (padded: one compile per shape).
_CHUNK = 16


def penetration_depth(params, models, chunk: int = _CHUNK) -> np.ndarray:
  """geometry.penetration_depth (N,) m of parameters (N, ...), chunked."""
  fr, fl = state_lib.faces(models)
  n = len(params['betas'])
  out = []
  for s in range(0, n, chunk):
    part = pad_batch({k: np.asarray(v[s:s + chunk], np.float32) for k, v in params.items()},
                     chunk)
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
  vr, vl = _meshes_jit(models)({k: np.asarray(v, np.float32) for k, v in gt.items()})
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


def save(path: str, gt, cond, source=None):
  """Writes pairs to `path` (.npz; its folder is created), atomically: a
  temporary file beside it, renamed when complete (an interrupted write
  leaves no partial `path`)."""
  n = len(gt['betas'])
  source = np.zeros(n, np.int8) if source is None else np.asarray(source, np.int8)
  arrays = {f'gt_{k}': np.asarray(gt[k], np.float32) for k in KEYS}
  arrays.update({f'cond_{k}': np.asarray(cond[k], np.float32) for k in KEYS})
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}.npz'
  np.savez(tmp, source=source, **arrays)
  os.replace(tmp, path)


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
