"""FreiHAND's official scoring (lmb-freiburg/freihand eval.py, utils/eval_util.py).

    xyz, verts = read_pred_json('pred.json')          # metres, as submitted
    gt_xyz, gt_verts = read_gt('/data/FreiHAND_pub_v2')
    res = score(xyz, verts, gt_xyz, gt_verts)         # errors in mm, F in [0, 1]

In: metres, camera space, as FreiHAND's files and pred.json ([xyz list,
verts list], per sample 21 x 3 joints in FreiHAND's order and V x 3 vertices).
Out: errors in mm, F-scores and AUCs as fractions. Everything float64 numpy.

What eval.py computes, per sample, then averaged:
- `procrustes` = align_w_scale(gt, pred): both centred and divided by their
  Frobenius norm + 1e-8, then scipy's orthogonal_procrustes(gt, pred): R from
  the SVD of gt^T pred (a reflection is NOT excluded) and scale = the sum of
  the singular values; aligned = (pred normalised) R^T * scale * |gt| + mean(gt).
  Joints and vertices are aligned separately, each with its own transform.
- MPJPE / MPVPE (and the PA- versions on the aligned points): EvalUtil's
  mean over points of each point's mean Euclidean error over samples (all
  points visible, so also the mean over samples of per-sample means).
- F@5mm / F@15mm (`f5`, `f15`: on the aligned vertices, eval.py's
  F_aligned; `f5_unaligned` / `f15_unaligned` its F): per sample, the
  nearest-neighbour distances gt -> pred and pred -> gt (open3d's
  compute_point_cloud_to_point_cloud_distance), the share of each strictly
  below the threshold, F = 2 p r / (p + r) (0 when both are 0); the mean
  over samples.
- AUC (`auc_j`, `auc_v`, `pa_auc_j`, `pa_auc_v`): per point the PCK
  (error <= t, note: <= here, < for F) on 100 thresholds linspace(0, 50 mm),
  its trapezoid area over the 50 mm range, the mean over points.
eval.py also accepts predicted vertices with another count than the
ground truth's (it then moves them with the joints' transform, with a
scale that misses 1 / |pred joints|); `score` refuses that case instead.
"""

import json
import os
from typing import Dict, Tuple

import numpy as np
from scipy.spatial import cKDTree

from a2p_jax.data import freihand as fh_data
from a2p_jax.eval import regress
from a2p_jax.eval.predictions import PredictionsError, _array, _check_units

# FreiHAND's fingertip vertices on MANO's 778-vertex mesh, thumb..pinky
# (lmb-freiburg/freihand utils/model.py _calc_coords, utils/mano_utils.py).
TIP_VERTICES = regress.FREIHAND_TIPS

F_THRESHOLDS_M = (0.005, 0.015)
AUC_THRESHOLDS_M = np.linspace(0.0, 0.05, 100)
_EPS = 1e-8           # align_w_scale's guard, added to both norms (m)


def procrustes(pred, gt) -> np.ndarray:
  """(..., P, 3) pred aligned onto gt (..., P, 3) with eval.py's similarity
  transform (rotation or reflection, scale, translation), float64 m."""
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  if pred.shape != gt.shape or pred.ndim < 2 or pred.shape[-1] != 3:
    raise ValueError(f'procrustes: pred {pred.shape} and gt {gt.shape} must be the same '
                     '(..., P, 3)')
  mean_gt = gt.mean(-2, keepdims=True)
  a = gt - mean_gt
  b = pred - pred.mean(-2, keepdims=True)
  norm_gt = np.linalg.norm(a, axis=(-2, -1))[..., None, None] + _EPS
  a = a / norm_gt
  b = b / (np.linalg.norm(b, axis=(-2, -1))[..., None, None] + _EPS)
  u, w, vt = np.linalg.svd(np.swapaxes(a, -1, -2) @ b)
  rot = u @ vt
  return (b @ np.swapaxes(rot, -1, -2)) * (w.sum(-1)[..., None, None] * norm_gt) + mean_gt


def f_score(gt, pred, threshold_m: float) -> Tuple[float, float, float]:
  """(F, precision, recall) of one sample's point sets, as eval.py's
  calculate_fscore: precision = share of gt points with a pred point closer
  than the threshold, recall = share of pred points with a gt point closer
  (eval.py's names)."""
  gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
  if not len(gt) or not len(pred):
    return 0.0, 0.0, 0.0
  d_gt = cKDTree(pred).query(gt)[0]
  d_pred = cKDTree(gt).query(pred)[0]
  precision = float(np.mean(d_gt < threshold_m))
  recall = float(np.mean(d_pred < threshold_m))
  f = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0
  return f, precision, recall


def _mean_error_mm(pred, gt):
  """EvalUtil.get_measures' mean: per point over samples, then over points."""
  return float(np.linalg.norm(pred - gt, axis=-1).mean(0).mean() * 1000.0)


def _auc(pred, gt):
  dist = np.linalg.norm(pred - gt, axis=-1)                        # (N, P)
  pck = np.stack([(dist <= t).mean(0) for t in AUC_THRESHOLDS_M])   # (T, P)
  dt = np.diff(AUC_THRESHOLDS_M)[:, None]
  area = ((pck[1:] + pck[:-1]) * 0.5 * dt).sum(0)
  return float(np.mean(area / (AUC_THRESHOLDS_M[-1] - AUC_THRESHOLDS_M[0])))


def mesh_joints(model, verts) -> np.ndarray:
  """FreiHAND's 21 joints of meshes (n, V, 3) m -> (n, 21, 3) m, FreiHAND's
  order (wrist, then thumb..pinky, base to tip; mano_jax's 'openpose').

  As the toolbox makes its annotations: the 16 rows of MANO's J_regressor on
  the posed mesh plus the fingertip vertices TIP_VERTICES (not InterWild's
  745, 317, 445, 556, 673). A mesh of another size (the procedural hand, NOT
  MANO) takes the model's own tip_ids. Score a mesh-based prediction (MANO
  parameters, a checkpoint) with these, as FreiHAND's ground truth is.
  """
  verts = np.asarray(verts, np.float64)
  if verts.ndim != 3:
    raise ValueError(f'mesh_joints: verts must be (n, V, 3), got {verts.shape}')
  return regress.mesh_joints(model, verts, TIP_VERTICES, order='openpose')


def _check(name, x, points=None):
  x = np.asarray(x, np.float64)
  if x.ndim != 3 or x.shape[-1] != 3 or (points is not None and x.shape[1] != points):
    raise ValueError(f'score: {name} must be (N, {points or "V"}, 3) metres, got {x.shape}')
  if not np.all(np.isfinite(x)):
    raise ValueError(f'score: {name} contains NaN or Inf')
  return x


def score(pred_xyz, pred_verts, gt_xyz, gt_verts) -> Dict[str, float]:
  """FreiHAND's numbers for N samples: xyz (N, 21, 3), verts (N, V, 3), metres.

  Returns mm: pa_mpjpe, pa_mpvpe, mpjpe, mpvpe; fractions: f5, f15 (aligned),
  f5_unaligned, f15_unaligned, pa_auc_j, pa_auc_v, auc_j, auc_v (0-50 mm).
  """
  gt_xyz = _check('gt_xyz', gt_xyz)
  gt_verts = _check('gt_verts', gt_verts)
  pred_xyz = _check('pred_xyz', pred_xyz, gt_xyz.shape[1])
  pred_verts = _check('pred_verts', pred_verts, gt_verts.shape[1])
  n = len(gt_xyz)
  if not n or {len(pred_xyz), len(pred_verts), len(gt_verts)} != {n}:
    raise ValueError(f'score: sample counts differ or are zero: pred_xyz {len(pred_xyz)}, '
                     f'pred_verts {len(pred_verts)}, gt_xyz {n}, gt_verts {len(gt_verts)}')
  xyz_al = procrustes(pred_xyz, gt_xyz)
  verts_al = procrustes(pred_verts, gt_verts)
  res = {'pa_mpjpe': _mean_error_mm(xyz_al, gt_xyz), 'pa_mpvpe': _mean_error_mm(verts_al, gt_verts),
         'mpjpe': _mean_error_mm(pred_xyz, gt_xyz), 'mpvpe': _mean_error_mm(pred_verts, gt_verts)}
  for t in F_THRESHOLDS_M:
    mm = round(t * 1000)
    res[f'f{mm}'] = float(np.mean([f_score(g, p, t)[0] for g, p in zip(gt_verts, verts_al)]))
    res[f'f{mm}_unaligned'] = float(np.mean([f_score(g, p, t)[0]
                                             for g, p in zip(gt_verts, pred_verts)]))
  res.update(pa_auc_j=_auc(xyz_al, gt_xyz), pa_auc_v=_auc(verts_al, gt_verts),
             auc_j=_auc(pred_xyz, gt_xyz), auc_v=_auc(pred_verts, gt_verts))
  return res


def read_pred_json(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """pred.json ([xyz list, verts list], metres) -> xyz (N, 21, 3), verts (N, V, 3)."""
  try:
    with open(path, 'r', encoding='utf-8') as fh:
      obj = json.load(fh)
  except json.JSONDecodeError as e:
    raise PredictionsError(f'{path}: invalid JSON: {e}') from None
  if not (isinstance(obj, list) and len(obj) == 2 and all(isinstance(x, list) for x in obj)):
    raise PredictionsError(f'{path}: expected [xyz list, verts list] (FreiHAND pred.json), '
                           f'got {str(obj)[:60]}')
  xyz_list, verts_list = obj
  if len(xyz_list) != len(verts_list) or not xyz_list:
    raise PredictionsError(f'{path}: {len(xyz_list)} xyz entries and {len(verts_list)} verts '
                           'entries (one each per evaluation sample)')
  xyz = np.stack([_array(x, (21, 3), f'{path}: xyz[{i}]') for i, x in enumerate(xyz_list)])
  first = _array(verts_list[0], None, f'{path}: verts[0]')
  if first.ndim != 2 or first.shape[1] != 3:
    raise PredictionsError(f'{path}: verts[0]: expected (V, 3), got shape {first.shape}')
  verts = np.stack([_array(v, first.shape, f'{path}: verts[{i}]')
                    for i, v in enumerate(verts_list)])
  # A file in mm would be scored as hands 1000x too big: refuse it.
  extents = np.linalg.norm(xyz - xyz[:, :1], axis=-1).max(-1)
  _check_units(path, 'm', extents, [])
  return xyz, verts


def read_gt(root: str, split: str = 'evaluation') -> Tuple[np.ndarray, np.ndarray]:
  """The released ground truth eval.py reads: {split}_xyz.json (N, 21, 3) and
  {split}_verts.json (N, V, 3), metres."""
  xyz = fh_data.read_points(os.path.join(root, f'{split}_xyz.json'), 21)
  verts = fh_data.read_points(os.path.join(root, f'{split}_verts.json'))
  if len(xyz) != len(verts):
    raise fh_data.AnnotationError(f'{split}_xyz.json has {len(xyz)} entries, '
                                  f'{split}_verts.json has {len(verts)}')
  return xyz, verts
