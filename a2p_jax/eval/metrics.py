"""Two-hand reconstruction metrics under the two protocols papers use.

Inputs are in metres, camera space, InterHand2.6M joint order (right hand
rows 0-20, left 21-41; per hand thumb4..1, index4..1, middle4..1,
ring4..1, pinky4..1, wrist). Outputs are in mm. Everything is float64
numpy; `per_sample(...)` keeps per-sample, per-joint errors (NaN where a
value does not count) so any subset can be re-scored with `summarize`.

Protocols:

- `interwild` (InterWild's InterHand2.6M evaluation): each hand aligned
  at its own wrist (joints at the wrist joint, meshes at the wrist
  regressed from the mesh); a GT joint counts when it is valid AND its
  hand's wrist is valid. MPJPE-SH / -IH: the mean over the 42 joints of
  each joint's mean error over single-hand / interacting frames; MPJPE-all:
  the mean of those 84 per-joint means (SH and IH lists concatenated, as
  InterWild prints it). MPVPE: one value per present hand per frame
  (single-hand frames: the annotated hand only; interacting frames: each
  hand with a GT mesh), SH/IH/all = means over those values.
- `intaghand` (IntagHand/ACR/4DHands): each hand aligned at its middle
  MCP, the prediction rescaled by the GT middle-MCP-to-wrist length over
  the predicted one; per hand, the mean over its valid joints (vertices);
  frames' means per hand, and "all" = mean of the left and right values.
- MRRPE: |(pred left wrist - pred right wrist) - (GT left - GT right)| in
  mm, on frames where both GT wrists are valid.
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


def _check(name, x, shape_tail):
  x = np.asarray(x, np.float64)
  if x.shape[1:] != tuple(shape_tail):
    raise ValueError(f'{name}: expected shape (N, {", ".join(map(str, shape_tail))}), '
                     f'got {x.shape}')
  return x


def per_sample(pred_joints, gt_joints, joint_valid, hand_type, *, pred_verts=None,
               gt_verts=None, gt_mano_valid=None, pred_mesh_wrist=None, gt_mesh_wrist=None,
               pred_rel_root=None) -> Dict[str, np.ndarray]:
  """Per-sample errors (mm) for both protocols.

  pred_joints, gt_joints (N, 42, 3) m; joint_valid (N, 42); hand_type (N,)
  of 'right' | 'left' | 'interacting'. Optional meshes: pred_verts,
  gt_verts (N, 2, V, 3) m, gt_mano_valid (N, 2), and the wrists regressed
  from each mesh (N, 2, 3) m for InterWild's mesh alignment (default: the
  joints' wrists). pred_rel_root (N, 3) m (default: from pred_joints).
  """
  pj = _check('pred_joints', pred_joints, (42, 3))
  gj = _check('gt_joints', gt_joints, (42, 3))
  n = len(pj)
  jv = np.asarray(joint_valid, np.float64).reshape(n, 42) > 0
  ht = np.asarray(hand_type)
  if ht.shape != (n,) or not np.isin(ht, HAND_TYPES).all():
    raise ValueError(f'hand_type: expected (N,) of {HAND_TYPES}, got {ht[:5]}...')
  ph, gh, vh = _hands(pj), _hands(gj), jv.reshape(n, 2, 21)
  wrist_ok = vh[:, :, WRIST]                                      # (N, 2)
  out = {'hand_type': ht, 'interacting': ht == 'interacting'}

  # InterWild: wrist-aligned joints, a joint counts if it and its wrist do.
  valid_iw = vh & wrist_ok[:, :, None]
  diff = (ph - ph[:, :, WRIST:WRIST + 1]) - (gh - gh[:, :, WRIST:WRIST + 1])
  err = np.linalg.norm(diff, axis=-1)
  out['interwild/joint_err'] = np.where(valid_iw, err * 1000, np.nan).reshape(n, 42)
  # The same error in the image plane (x, y) and along the camera axis (z)
  # (the paper's MPJPE-XY / MPJPE-Z ablation columns).
  out['interwild/joint_err_xy'] = np.where(
      valid_iw, np.linalg.norm(diff[..., :2], axis=-1) * 1000, np.nan).reshape(n, 42)
  out['interwild/joint_err_z'] = np.where(valid_iw, np.abs(diff[..., 2]) * 1000,
                                          np.nan).reshape(n, 42)

  # IntagHand: middle-MCP aligned, prediction rescaled to the GT bone length.
  def bone(x):
    return np.linalg.norm(x[:, :, MIDDLE_MCP] - x[:, :, WRIST], axis=-1)
  valid_ia = vh & vh[:, :, MIDDLE_MCP:MIDDLE_MCP + 1] & wrist_ok[:, :, None]
  scale = bone(gh) / np.maximum(bone(ph), 1e-12)                  # (N, 2)
  pa = (ph - ph[:, :, MIDDLE_MCP:MIDDLE_MCP + 1]) * scale[:, :, None, None]
  ga = gh - gh[:, :, MIDDLE_MCP:MIDDLE_MCP + 1]
  err = np.linalg.norm(pa - ga, axis=-1)
  out['intaghand/joint_err'] = np.where(valid_ia, err * 1000, np.nan).reshape(n, 42)

  # MRRPE.
  pr = (ph[:, 1, WRIST] - ph[:, 0, WRIST]) if pred_rel_root is None else \
      _check('pred_rel_root', np.asarray(pred_rel_root).reshape(n, 1, 3), (1, 3))[:, 0]
  gr = gh[:, 1, WRIST] - gh[:, 0, WRIST]
  out['mrrpe'] = np.where(wrist_ok.all(1), np.linalg.norm(pr - gr, axis=-1) * 1000, np.nan)

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
    e = np.linalg.norm((pv - pw[:, :, None]) - (gv - gw[:, :, None]), axis=-1).mean(-1)
    # Single-hand frames count only the annotated hand's mesh.
    present = mv & np.stack([ht != 'left', ht != 'right'], 1)
    out['interwild/vert_err'] = np.where(present, e * 1000, np.nan)
    pva = (pv - ph[:, :, MIDDLE_MCP][:, :, None]) * scale[:, :, None, None]
    gva = gv - gh[:, :, MIDDLE_MCP][:, :, None]
    e = np.linalg.norm(pva - gva, axis=-1).mean(-1)
    ok = present & valid_ia[:, :, WRIST]
    out['intaghand/vert_err'] = np.where(ok, e * 1000, np.nan)
  return out


def penetration_per_sample(pred_verts, faces_right, faces_left, *, chunk: int = 32,
                           prox_threshold: float = 0.01) -> Dict[str, np.ndarray]:
  """PenVol (cm^3), PenDist (cm) and the inter-hand gap (cm) of each
  predicted pair (N, 2, V, 3) m, from a2p_jax.geometry (meshes sealed);
  `close` = gap under prox_threshold (ProxRatio's test)."""
  pv = np.asarray(pred_verts, np.float32)
  vol, depth, gap = [], [], []
  for i in range(0, len(pv), chunk):
    a, b = pv[i:i + chunk, 0], pv[i:i + chunk, 1]
    vol.append(np.asarray(geometry.penetration_volume(a, faces_right, b, faces_left)))
    depth.append(np.asarray(geometry.penetration_depth(a, faces_right, b, faces_left)))
    gap.append(np.asarray(geometry.hand_gap(a, faces_right, b, faces_left)))
  cat = (lambda xs: np.concatenate(xs).astype(np.float64)) if len(pv) else \
      (lambda xs: np.zeros(0))
  gap_m = cat(gap)
  return {'penvol_cm3': cat(vol) * 1e6, 'pendist_cm': cat(depth) * 100,
          'gap_cm': gap_m * 100, 'close': gap_m < prox_threshold}


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
  """Headline numbers (mm) from `per_sample` output, over the samples in
  `mask` (default all). Keys: '<protocol>/mpjpe_{all,sh,ih}',
  '<protocol>/mpvpe_{all,sh,ih}' (when meshes were given), 'mrrpe', counts."""
  n = len(res['hand_type'])
  mask = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
  ih = res['interacting'] & mask
  sh = ~res['interacting'] & mask
  out = {'count': int(mask.sum()), 'count_ih': int(ih.sum()), 'count_sh': int(sh.sum())}

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
    out['interwild/mpvpe_all'] = _nanmean(ve[mask])

  def hand_means(err, sel):
    # Per frame and hand: mean over its valid joints; then mean over frames.
    vals = []
    for cols in (slice(0, 21), slice(21, 42)):
      e = err[sel][:, cols]
      cnt = np.isfinite(e).sum(-1)
      per_frame = np.where(cnt > 0, np.nansum(e, -1) / np.maximum(cnt, 1), np.nan)
      vals.append(_nanmean(per_frame))
    return vals

  for name, sel in (('all', mask), ('sh', sh), ('ih', ih)):
    r, l = hand_means(res['intaghand/joint_err'], sel)
    out[f'intaghand/mpjpe_{name}'] = _nanmean([r, l])
    out[f'intaghand/mpjpe_{name}_right'], out[f'intaghand/mpjpe_{name}_left'] = r, l
    if 'intaghand/vert_err' in res:
      ve = res['intaghand/vert_err'][sel]
      r, l = _nanmean(ve[:, 0]), _nanmean(ve[:, 1])
      out[f'intaghand/mpvpe_{name}'] = _nanmean([r, l])
  if 'penvol_cm3' in res:  # penetration on interacting frames
    out['penvol_cm3'] = _nanmean(res['penvol_cm3'][ih])
    out['pendist_cm'] = _nanmean(res['pendist_cm'][ih])
    out['prox_ratio'] = _nanmean(res['close'][ih].astype(np.float64))
  out['mrrpe'] = _nanmean(res['mrrpe'][mask])
  out['count_mrrpe'] = int(np.isfinite(res['mrrpe'][mask]).sum())
  return out
