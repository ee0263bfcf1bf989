"""Two-hand reconstruction metrics, as the published protocols compute them.

Inputs are in metres, camera space, InterHand2.6M joint order (right hand
rows 0-20, left 21-41; per hand thumb4..1, index4..1, middle4..1,
ring4..1, pinky4..1, wrist). Outputs are in mm. Everything is float64
numpy; the per-sample functions keep per-sample, per-joint errors (NaN
where a value does not count) so any subset can be re-scored with
`summarize`. Which frames and joints count, and which joints are compared
(regressed from meshes, `a2p_jax.eval.regress`), is decided by the caller
(`a2p_jax.eval.evaluate.ground_truth` / `score`); these functions only do
the arithmetic of each protocol.

- `interwild_per_sample` (InterWild, data/InterHand26M/InterHand26M.py and
  data/HIC/HIC.py `evaluate` + `print_eval_result`): each hand's joints
  minus its wrist joint, each mesh minus the wrist regressed from it; a joint
  counts where `joint_valid` and its hand's wrist are (InterWild's joint_trunc). MPJPE-SH / -IH: the
  mean over the 42 joints of each joint's mean error over single-hand /
  interacting frames; MPJPE-all: the mean of those 84 per-joint means.
  MPVPE: one value per counted hand per frame (single-hand frames: the
  annotated hand, if it has a GT mesh; interacting frames: each hand with a
  GT mesh); SH / IH / all = means over those values. MRRPE: |predicted
  relative root - GT relative root| where `rel_root_valid`. RRVE (interacting
  frames with both GT meshes): the mean over both hands' vertices of the
  error of the wrist-aligned meshes with the left hand placed by each
  relative root.
- `intaghand_per_sample` (IntagHand, apps/eval_interhand.py): on the frames
  given, joints and meshes minus the middle MCP, the prediction scaled by
  the GT over the predicted wrist-to-middle-MCP length; per hand the mean
  over frames x joints (vertices), no joint mask; reported as (left +
  right) / 2.
- PenVol (cm^3), PenDist (cm), ProxRatio (share of pairs closer than 1 cm,
  penetrating ones included) of the predicted meshes, on interacting
  frames: add `penetration_per_sample(...)`'s arrays to the per-sample dict.
"""

from typing import Dict, Optional

import numpy as np

from a2p_jax import geometry

WRIST = 20            # per-hand row of the wrist (InterHand order)
MIDDLE_MCP = 11       # per-hand row of the middle finger's MCP (middle1)
PROTOCOLS = ('interwild', 'intaghand')
HAND_TYPES = ('right', 'left', 'interacting')


def _hands(x):
  """(..., 42, k) -> (..., 2, 21, k)."""
  return x.reshape(x.shape[:-2] + (2, 21) + x.shape[-1:])


def _check(name, x, shape_tail, n=None):
  x = np.asarray(x, np.float64)
  if x.shape[1:] != tuple(shape_tail) or (n is not None and len(x) != n):
    want = ', '.join(map(str, ((n if n is not None else 'N'),) + tuple(shape_tail)))
    raise ValueError(f'{name}: expected shape ({want}), got {x.shape}')
  return x


def _hand_types(hand_type, n):
  ht = np.asarray(hand_type)
  if ht.shape != (n,) or not np.isin(ht, HAND_TYPES).all():
    raise ValueError(f'hand_type: expected ({n},) of {HAND_TYPES}, got {ht[:5]}...')
  return ht


def interwild_per_sample(pred_joints, gt_joints, joint_valid, hand_type, *, pred_verts=None,
                         gt_verts=None, gt_mano_valid=None, pred_mesh_wrist=None,
                         gt_mesh_wrist=None, pred_rel_root=None, gt_rel_root=None,
                         rel_root_valid=None) -> Dict[str, np.ndarray]:
  """Per-sample InterWild errors (mm).

  pred_joints, gt_joints (N, 42, 3) m; joint_valid (N, 42): the joints that
  count; hand_type (N,) of 'right' | 'left' | 'interacting'. Meshes:
  pred_verts, gt_verts (N, 2, V, 3) m, gt_mano_valid (N, 2) (the GT mesh
  exists), and the wrists regressed from each mesh (N, 2, 3) m (default:
  the joints' wrists). pred_rel_root / gt_rel_root (N, 3) m: left minus
  right root (default: from the joints); rel_root_valid (N,) (default: both
  GT wrists valid).
  """
  pj = _check('pred_joints', pred_joints, (42, 3))
  n = len(pj)
  gj = _check('gt_joints', gt_joints, (42, 3), n)
  jv = _check('joint_valid', np.reshape(joint_valid, (n, -1)), (42,), n) > 0
  ht = _hand_types(hand_type, n)
  ph, gh, vh = _hands(pj), _hands(gj), jv.reshape(n, 2, 21)
  vh = vh & vh[:, :, WRIST:WRIST + 1]     # InterWild: a hand's joints count with its wrist
  out = {'hand_type': ht, 'interacting': ht == 'interacting'}

  diff = (ph - ph[:, :, WRIST:WRIST + 1]) - (gh - gh[:, :, WRIST:WRIST + 1])
  out['interwild/joint_err'] = np.where(vh, np.linalg.norm(diff, axis=-1) * 1000,
                                        np.nan).reshape(n, 42)
  # The same error in the image plane (x, y) and along the camera axis (z)
  # (the A2P paper's MPJPE-XY / MPJPE-Z ablation columns).
  out['interwild/joint_err_xy'] = np.where(
      vh, np.linalg.norm(diff[..., :2], axis=-1) * 1000, np.nan).reshape(n, 42)
  out['interwild/joint_err_z'] = np.where(vh, np.abs(diff[..., 2]) * 1000,
                                          np.nan).reshape(n, 42)

  pr = (ph[:, 1, WRIST] - ph[:, 0, WRIST]) if pred_rel_root is None else       _check('pred_rel_root', np.reshape(pred_rel_root, (n, 3)), (3,), n)
  gr = (gh[:, 1, WRIST] - gh[:, 0, WRIST]) if gt_rel_root is None else       _check('gt_rel_root', np.reshape(gt_rel_root, (n, 3)), (3,), n)
  rv = vh[:, :, WRIST].all(1) if rel_root_valid is None else       np.asarray(rel_root_valid, bool).reshape(n)
  out['mrrpe'] = np.where(rv, np.linalg.norm(pr - gr, axis=-1) * 1000, np.nan)

  if pred_verts is not None:
    pv = np.asarray(pred_verts, np.float64)
    gv = np.asarray(gt_verts, np.float64)
    if pv.ndim != 4 or pv.shape[:2] != (n, 2) or gv.shape != pv.shape:
      raise ValueError(f'pred_verts/gt_verts: expected equal (N, 2, V, 3), got '
                       f'{pv.shape} and {gv.shape}')
    mv = np.ones((n, 2), bool) if gt_mano_valid is None else \
        np.asarray(gt_mano_valid).reshape(n, 2) > 0
    pw = ph[:, :, WRIST] if pred_mesh_wrist is None else np.asarray(pred_mesh_wrist, np.float64)
    gw = gh[:, :, WRIST] if gt_mesh_wrist is None else np.asarray(gt_mesh_wrist, np.float64)
    pa, ga = pv - pw[:, :, None], gv - gw[:, :, None]
    e = np.linalg.norm(pa - ga, axis=-1).mean(-1)
    # Single-hand frames count only the annotated hand's mesh.
    counted = mv & np.stack([ht != 'left', ht != 'right'], 1)
    out['interwild/vert_err'] = np.where(counted, e * 1000, np.nan)
    both = (ht == 'interacting') & mv.all(1)
    pa[:, 1] += pr[:, None]
    ga[:, 1] += gr[:, None]
    rrve = np.linalg.norm(pa - ga, axis=-1).mean((1, 2))
    out['rrve'] = np.where(both, rrve * 1000, np.nan)
  return out


def intaghand_per_sample(pred_joints, gt_joints, frames, *, pred_verts=None,
                         gt_verts=None) -> Dict[str, np.ndarray]:
  """Per-sample IntagHand errors (mm) on the `frames` (N,) bool it scores.

  pred_joints, gt_joints (N, 42, 3) m: both regressed from meshes with
  IntagHand's regressor (`regress.INTAGHAND_TIPS`); pred_verts, gt_verts
  (N, 2, V, 3) m. Keys 'intaghand/joint_err' (N, 42) and
  'intaghand/vert_err' (N, 2) (each hand's mean over its vertices), NaN
  outside `frames`."""
  pj = _check('pred_joints', pred_joints, (42, 3))
  n = len(pj)
  gj = _check('gt_joints', gt_joints, (42, 3), n)
  sel = np.asarray(frames, bool).reshape(n)
  ph, gh = _hands(pj), _hands(gj)

  def length(x):
    return np.linalg.norm(x[:, :, MIDDLE_MCP] - x[:, :, WRIST], axis=-1)

  with np.errstate(divide='ignore', invalid='ignore'):
    scale = (length(gh) / length(ph))[:, :, None, None]               # (N, 2, 1, 1)
  proot, groot = ph[:, :, MIDDLE_MCP:MIDDLE_MCP + 1], gh[:, :, MIDDLE_MCP:MIDDLE_MCP + 1]
  err = np.linalg.norm((ph - proot) * scale - (gh - groot), axis=-1)
  out = {'intaghand/frame': sel,
         'intaghand/joint_err': np.where(sel[:, None], err.reshape(n, 42) * 1000, np.nan)}
  if pred_verts is not None:
    pv = np.asarray(pred_verts, np.float64)
    gv = np.asarray(gt_verts, np.float64)
    if pv.ndim != 4 or pv.shape[:2] != (n, 2) or gv.shape != pv.shape:
      raise ValueError(f'pred_verts/gt_verts: expected equal (N, 2, V, 3), got '
                       f'{pv.shape} and {gv.shape}')
    e = np.linalg.norm((pv - proot) * scale - (gv - groot), axis=-1).mean(-1)
    out['intaghand/vert_err'] = np.where(sel[:, None], e * 1000, np.nan)
  return out


def penetration_per_sample(pred_verts, faces_right, faces_left, *, chunk: int = 32,
                           prox_threshold: float = 0.01) -> Dict[str, np.ndarray]:
  """PenVol (cm^3), PenDist (cm) and the inter-hand gap (cm) of each
  predicted pair (N, 2, V, 3) m, from a2p_jax.geometry (meshes sealed);
  `close` = gap under prox_threshold (ProxRatio's test)."""
  pv = np.asarray(pred_verts, np.float32)
  vol, depth = [], []
  for i in range(0, len(pv), chunk):
    a, b = pv[i:i + chunk, 0], pv[i:i + chunk, 1]
    vol.append(np.asarray(geometry.penetration_volume(a, faces_right, b, faces_left)))
    depth.append(np.asarray(geometry.penetration_depth(a, faces_right, b, faces_left)))
  cat = (lambda xs: np.concatenate(xs).astype(np.float64)) if len(pv) else \
      (lambda xs: np.zeros(0))
  gap_cm = hand_gap_cm(pv, faces_right, faces_left, chunk=chunk)
  return {'penvol_cm3': cat(vol) * 1e6, 'pendist_cm': cat(depth) * 100,
          'gap_cm': gap_cm, 'close': gap_cm < prox_threshold * 100}


CONTACT_CM = 0.2  # hands closer than 2 mm (or penetrating) are in contact


def hand_gap_cm(verts, faces_right, faces_left, *, chunk: int = 32) -> np.ndarray:
  """Gap (N,) cm between the hands of each pair (N, 2, V, 3) m (0 when they
  penetrate); NaN where a hand's vertices are not finite (no mesh)."""
  v = np.asarray(verts, np.float32)
  ok = np.isfinite(v).all((1, 2, 3))
  v = np.where(ok[:, None, None, None], v, 0.0)
  gap = [np.asarray(geometry.hand_gap(v[i:i + chunk, 0], faces_right, v[i:i + chunk, 1],
                                      faces_left)) for i in range(0, len(v), chunk)]
  gap = np.concatenate(gap).astype(np.float64) * 100 if len(v) else np.zeros(0)
  return np.where(ok, gap, np.nan)


def _nanmean(x) -> float:
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  return float(x.mean()) if x.size else float('nan')


def _per_joint_means(err: np.ndarray) -> np.ndarray:
  """(N, 42) with NaNs -> (42,) per-joint means (NaN for a joint never valid)."""
  cnt = np.isfinite(err).sum(0)
  tot = np.nansum(err, 0)
  return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def summarize(res: Dict[str, np.ndarray], mask: Optional[np.ndarray] = None) -> Dict[str, float]:
  """Headline numbers (mm) from the per-sample output, over the samples in
  `mask` (default all). Keys: 'interwild/mpjpe_{all,sh,ih}',
  'interwild/mpjpe_{xy,z}_all', 'interwild/mpvpe_{all,sh,ih}', 'mrrpe',
  'rrve' (with meshes), 'intaghand/mpjpe', 'intaghand/mpvpe' (+ _right,
  _left), PenVol / PenDist / ProxRatio when given, and counts."""
  n = len(res['hand_type'])
  mask = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
  if 'interwild/frame' in res:
    mask_iw = mask & res['interwild/frame']
  else:
    mask_iw = mask
  ih = res['interacting'] & mask_iw
  sh = ~res['interacting'] & mask_iw
  out = {'count': int(mask_iw.sum()), 'count_ih': int(ih.sum()), 'count_sh': int(sh.sum())}

  je = res['interwild/joint_err']
  m_sh, m_ih = _per_joint_means(je[sh]), _per_joint_means(je[ih])
  out['interwild/mpjpe_sh'] = _nanmean(m_sh)
  out['interwild/mpjpe_ih'] = _nanmean(m_ih)
  out['interwild/mpjpe_all'] = _nanmean(np.concatenate([m_sh, m_ih]))
  for axes in ('xy', 'z'):
    if f'interwild/joint_err_{axes}' in res:
      e = res[f'interwild/joint_err_{axes}']
      out[f'interwild/mpjpe_{axes}_all'] = _nanmean(np.concatenate(
          [_per_joint_means(e[sh]), _per_joint_means(e[ih])]))
  if 'interwild/vert_err' in res:
    ve = res['interwild/vert_err']
    out['interwild/mpvpe_sh'] = _nanmean(ve[sh])
    out['interwild/mpvpe_ih'] = _nanmean(ve[ih])
    out['interwild/mpvpe_all'] = _nanmean(ve[mask_iw])
    out['rrve'] = _nanmean(res['rrve'][mask_iw])
    out['count_rrve'] = int(np.isfinite(res['rrve'][mask_iw]).sum())
  out['mrrpe'] = _nanmean(res['mrrpe'][mask_iw])
  out['count_mrrpe'] = int(np.isfinite(res['mrrpe'][mask_iw]).sum())

  if 'intaghand/joint_err' in res:
    sel = mask & res['intaghand/frame']
    out['count_intaghand'] = int(sel.sum())
    for key, err in (('mpjpe', res['intaghand/joint_err'][sel].reshape(-1, 2, 21)),
                     ('mpvpe', res.get('intaghand/vert_err'))):
      if err is None:
        continue
      if key == 'mpvpe':
        err = err[sel]
      # IntagHand: per hand, the mean over all its frames x joints (vertices).
      r, l = (float(err[:, k].mean()) if len(err) else float('nan') for k in (0, 1))
      out[f'intaghand/{key}_right'], out[f'intaghand/{key}_left'] = r, l
      out[f'intaghand/{key}'] = (r + l) / 2

  if 'penvol_cm3' in res:  # penetration on interacting frames
    ih_all = res['interacting'] & mask
    out['penvol_cm3'] = _nanmean(res['penvol_cm3'][ih_all])
    out['pendist_cm'] = _nanmean(res['pendist_cm'][ih_all])
    out['prox_ratio'] = _nanmean(res['close'][ih_all].astype(np.float64))
  if 'gt_gap_cm' in res:  # contact kept: GT-touching interacting frames predicted touching
    touch = res['interacting'] & mask & (res['gt_gap_cm'] < CONTACT_CM)
    out['count_contact'] = int(touch.sum())
    out['contact_kept'] = _nanmean(res['gap_cm'][touch] < CONTACT_CM)
  return out
