"""Scoring loop: ground truth from a reader, predictions from a model or a
file, per-sample results for both protocols, streamed in chunks (the
InterHand2.6M test set does not fit in memory as meshes)."""

from typing import Callable, Dict, Sequence

import numpy as np
from tqdm import tqdm

import mano_jax
from a2p_jax.eval import metrics

SIDES = ('right', 'left')


def ground_truth(examples: Sequence[dict], models) -> Dict[str, np.ndarray]:
  """Arrays (metres) of a chunk of reader examples: joints (n, 42, 3),
  joint_valid, hand_type, verts (n, 2, V, 3) (MANO fits run through the
  models, or HIC's meshes), mano_valid (n, 2), mesh_wrist (n, 2, 3)."""
  n = len(examples)
  joints = np.stack([np.asarray(e['joints_cam'], np.float64).reshape(42, 3) for e in examples])
  out = {'joints': joints / 1000.0,
         'joint_valid': np.stack([np.asarray(e['joint_valid'], np.float64).reshape(42)
                                  for e in examples]),
         'hand_type': np.array([e['hand_type'] for e in examples]),
         'annot_id': np.array([int(e['annot_id']) for e in examples], np.int64)}
  nv = int(np.asarray(models[0].v_template).shape[0])
  verts = np.full((n, 2, nv, 3), np.nan)
  valid = np.zeros((n, 2), bool)
  for k, side in enumerate(SIDES):
    fits = [(i, e['mano'][side]) for i, e in enumerate(examples)
            if e.get('mano') and e['mano'].get(side) is not None]
    if fits:
      rows = [i for i, _ in fits]
      res = mano_jax.forward(models[k], np.stack([f['pose'] for _, f in fits]),
                             np.stack([f['shape'] for _, f in fits]),
                             np.stack([f['trans'] for _, f in fits]))
      verts[rows, k] = np.asarray(res.vertices, np.float64)
      valid[rows, k] = True
    for i, e in enumerate(examples):
      mesh = (e.get('verts') or {}).get(side)
      if mesh is not None:
        mesh = np.asarray(mesh, np.float64)
        if mesh.shape != (nv, 3):
          raise ValueError(f'annotation {e["annot_id"]}: {side} GT mesh has {mesh.shape[0]} '
                           f'vertices but the hand model has {nv} (give the real MANO)')
        verts[i, k] = mesh
        valid[i, k] = True
  out['verts'], out['mano_valid'] = verts, valid
  out['mesh_wrist'] = mesh_wrists(verts, models)
  return out


def mesh_wrists(verts: np.ndarray, models) -> np.ndarray:
  """Wrist joint regressed from each hand's mesh (n, 2, 3) (NaN meshes -> NaN)."""
  return np.stack([np.einsum('v,nvc->nc', np.asarray(models[k].J_regressor[0], np.float64),
                             verts[:, k]) for k in range(2)], 1)


def score(examples: Sequence[dict], predict: Callable[[Sequence[dict]], dict], models, *,
          chunk: int = 64, penetration: bool = True, progress: bool = True
          ) -> Dict[str, np.ndarray]:
  """Per-sample results (see metrics.per_sample) over `examples`, plus
  'annot_id' and, with `penetration`, PenVol/PenDist/gap of the predicted
  meshes. `predict(chunk_examples)` -> {'joints' (n, 42, 3) m, 'verts'
  (n, 2, V, 3) m or None, optional 'rel_root' (n, 3) m}."""
  faces = [np.asarray(m.faces, np.int32) for m in models]
  parts = []
  it = range(0, len(examples), chunk)
  if progress:
    it = tqdm(it, desc='eval', unit='chunk', total=(len(examples) + chunk - 1) // chunk)
  for start in it:
    exs = [examples[i] for i in range(start, min(start + chunk, len(examples)))]
    gt = ground_truth(exs, models)
    pred = predict(exs)
    pv = pred.get('verts')
    kw = {}
    if pv is not None:
      kw = dict(pred_verts=np.where(np.isfinite(pv), pv, 0.0), gt_verts=np.nan_to_num(gt['verts']),
                gt_mano_valid=gt['mano_valid'] & np.isfinite(pv).all((2, 3)),
                pred_mesh_wrist=mesh_wrists(np.nan_to_num(pv), models),
                gt_mesh_wrist=np.nan_to_num(gt['mesh_wrist']))
    res = metrics.per_sample(np.nan_to_num(pred['joints']), gt['joints'], gt['joint_valid'],
                             gt['hand_type'], pred_rel_root=pred.get('rel_root'), **kw)
    res['annot_id'] = gt['annot_id']
    if penetration and pv is not None:
      # Only interacting frames are scored (and computed: PenVol costs ~30 ms a pair).
      ih = np.flatnonzero(gt['hand_type'] == 'interacting')
      pen = {'penvol_cm3': np.full(len(exs), np.nan), 'pendist_cm': np.full(len(exs), np.nan),
             'gap_cm': np.full(len(exs), np.nan), 'close': np.zeros(len(exs), bool)}
      if len(ih):
        got = metrics.penetration_per_sample(np.nan_to_num(pv[ih]), faces[0], faces[1])
        for k in pen:
          pen[k][ih] = got[k]
      res.update(pen)
    parts.append(res)
  if not parts:
    raise ValueError('no examples to score')
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
