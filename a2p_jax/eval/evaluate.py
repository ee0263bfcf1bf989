"""Scoring loop: ground truth from a reader, predictions from a model or a
file, per-sample results of each protocol, streamed in chunks (the
InterHand2.6M test set does not fit in memory as meshes).

Which frames, joints and meshes each protocol counts (`ground_truth`):

- InterWild on InterHand2.6M (and the synthetic set, same layout), its
  loader's test-time rules (data/InterHand26M/InterHand26M.py `load_data`):
  joint_trunc = data.json's joint_valid x its hand's wrist; the frame is
  skipped when that is all 0, or when joint_3d.json's joint_valid (x wrist)
  is; joints joint_3d.json marks invalid read as 1 mm; a hand whose box (its
  valid joints projected, 1.2x, `sanitize_bbox` in the image) is empty loses
  its joints and its MANO fit; a frame with neither box is skipped.
- InterWild on HIC (data/HIC/HIC.py): every frame; meshes where present;
  MRRPE on interacting frames with the GT relative root between the wrists
  regressed from the GT meshes; the joints are the reader's (regressed from
  the GT meshes).
- IntagHand (dataset/interhand.py `cut_inter_img`): interacting frames with
  hand_type_valid, both MANO fits, and an image whose mean is >= 10 (its
  dark-image filter); GT joints regressed from the GT meshes.
"""

from typing import Callable, Dict, Sequence

import numpy as np
from tqdm import tqdm

import mano_jax
from a2p_jax.data import pipeline
from a2p_jax.data.coco_wholebody import sanitize_boxes
from a2p_jax.eval import metrics, regress
from a2p_jax.geometry.camera import project

SIDES = ('right', 'left')
RULES = ('interhand26m', 'hic')
DARK_IMAGE_MEAN = 10.0    # IntagHand skips frames whose image mean is below this


def _wrist_rule(valid_42):
  v = np.asarray(valid_42, np.float64).reshape(2, 21).copy()
  v *= v[:, metrics.WRIST:metrics.WRIST + 1]
  return v.reshape(42)


def _hand_box_ok(uv_21x2, valid_21, width, height) -> bool:
  """InterWild's get_bbox(extend 1.2) of the valid joints, then sanitize_bbox."""
  pts = uv_21x2[valid_21 > 0]
  lo, hi = pts.min(0), pts.max(0)
  centre, size = (lo + hi) / 2, (hi - lo) * 1.2
  box = np.concatenate([centre - size / 2, size])
  return bool(sanitize_boxes(box, float(width), float(height))[1])


def interwild_rules(example) -> dict:
  """InterWild's test-time rules for one InterHand2.6M-layout example:
  {'frame' bool, 'joint_valid' (42,) (its joint_trunc), 'joints' (42, 3) mm
  (1 mm where joint_3d.json's joint_valid is 0), 'hand_ok' (2,) (the hand
  has a box: its MANO fit counts)}."""
  trunc = _wrist_rule(example['joint_valid'])
  valid3d = _wrist_rule(example.get('joint_valid_3d', np.ones(42)))
  joints = np.asarray(example['joints_cam'], np.float64).reshape(42, 3).copy()
  joints[valid3d == 0] = 1.0
  out = {'frame': False, 'joint_valid': np.zeros(42), 'joints': joints,
         'hand_ok': np.zeros(2, bool)}
  if trunc.sum() == 0 or valid3d.sum() == 0:
    return out
  uv = project(joints, example['camera']['focal'], example['camera']['princpt'])
  height, width = example['image_size']
  for k in range(2):
    rows = slice(21 * k, 21 * k + 21)
    out['hand_ok'][k] = trunc[rows].sum() > 0 and _hand_box_ok(uv[rows], trunc[rows], width,
                                                               height)
    if not out['hand_ok'][k]:
      trunc[rows] = 0
  out['frame'] = bool(out['hand_ok'].any())
  out['joint_valid'] = trunc
  return out


def image_mean(example) -> float:
  """The mean of the example's image over pixels and channels (uint8 scale)."""
  return float(pipeline.load_image(example).mean())


def intaghand_frame(example, has_fit, check_dark: bool = True) -> bool:
  """IntagHand's frame selection (see the module docstring)."""
  if example['hand_type'] != 'interacting' or not example.get('hand_type_valid', 1):
    return False
  if not all(has_fit):
    return False
  return not check_dark or image_mean(example) >= DARK_IMAGE_MEAN


def ground_truth(examples: Sequence[dict], models, *, rules: str = 'interhand26m',
                 check_dark: bool = True) -> Dict[str, np.ndarray]:
  """Arrays (metres) of a chunk of reader examples under `rules` (RULES):
  joints (n, 42, 3), joint_valid (n, 42) and frame (n,) (InterWild's),
  hand_type, annot_id, verts (n, 2, V, 3) (MANO fits run through the models,
  or HIC's meshes; NaN where absent), has_mesh (n, 2), mano_valid (n, 2)
  (the GT mesh counts for InterWild), mesh_wrist (n, 2, 3), rel_root (n, 3) and rel_root_valid
  (n,) (MRRPE's GT), intaghand_frame (n,), intaghand_joints (n, 42, 3)."""
  if rules not in RULES:
    raise ValueError(f'rules must be one of {RULES}, got {rules!r}')
  n = len(examples)
  nv = int(np.asarray(models[0].v_template).shape[0])
  verts = np.full((n, 2, nv, 3), np.nan)
  has_mesh = np.zeros((n, 2), bool)
  for k, side in enumerate(SIDES):
    fits = [(i, e['mano'][side]) for i, e in enumerate(examples)
            if e.get('mano') and e['mano'].get(side) is not None]
    if fits:
      rows = [i for i, _ in fits]
      res = mano_jax.forward(models[k], np.stack([f['pose'] for _, f in fits]),
                             np.stack([f['shape'] for _, f in fits]),
                             np.stack([f['trans'] for _, f in fits]))
      verts[rows, k] = np.asarray(res.vertices, np.float64)
      has_mesh[rows, k] = True
    for i, e in enumerate(examples):
      mesh = (e.get('verts') or {}).get(side)
      if mesh is not None:
        mesh = np.asarray(mesh, np.float64)
        if mesh.shape != (nv, 3):
          raise ValueError(f'annotation {e["annot_id"]}: {side} GT mesh has {mesh.shape[0]} '
                           f'vertices but the hand model has {nv} (give the real MANO)')
        verts[i, k] = mesh
        has_mesh[i, k] = True
  hand_type = np.array([e['hand_type'] for e in examples])
  # InterWild regresses every wrist with the right hand's J_regressor.
  wrist = regress.mesh_wrist(verts, models[0].J_regressor)
  out = {'hand_type': hand_type, 'verts': verts, 'mesh_wrist': wrist, 'has_mesh': has_mesh,
         'annot_id': np.array([int(e['annot_id']) for e in examples], np.int64)}
  if rules == 'interhand26m':
    got = [interwild_rules(e) for e in examples]
    out['joints'] = np.stack([g['joints'] for g in got]) / 1000.0
    out['joint_valid'] = np.stack([g['joint_valid'] for g in got])
    out['frame'] = np.array([g['frame'] for g in got], bool)
    out['mano_valid'] = has_mesh & np.stack([g['hand_ok'] for g in got])
    hands = out['joints'].reshape(n, 2, 21, 3)[:, :, metrics.WRIST]
    out['rel_root'] = hands[:, 1] - hands[:, 0]
    out['rel_root_valid'] = out['joint_valid'].reshape(n, 2, 21)[:, :, metrics.WRIST].all(1) > 0
  else:
    out['joints'] = np.stack([np.asarray(e['joints_cam'], np.float64).reshape(42, 3)
                              for e in examples]) / 1000.0
    out['joint_valid'] = np.stack([np.asarray(e['joint_valid'], np.float64).reshape(42)
                                   for e in examples])
    out['frame'] = np.ones(n, bool)
    out['mano_valid'] = has_mesh
    out['rel_root'] = wrist[:, 1] - wrist[:, 0]
    out['rel_root_valid'] = hand_type == 'interacting'
  out['intaghand_frame'] = np.array(
      [rules == 'interhand26m' and intaghand_frame(e, has_mesh[i], check_dark)
       for i, e in enumerate(examples)], bool)
  out['intaghand_joints'] = np.concatenate(
      [regress.mesh_joints(models[k], verts[:, k], regress.INTAGHAND_TIPS) for k in range(2)], 1)
  return out


def prediction_joints(pred: dict, models) -> Dict[str, np.ndarray]:
  """The joints each protocol scores for a prediction {'joints' (n, 42, 3),
  'verts' (n, 2, V, 3) or None}: 'interwild' (regressed from the predicted
  mesh with InterWild's regressor where the hand has a mesh, else the given
  joints), 'intaghand' (IntagHand's regressor; NaN without a mesh) and the
  mesh wrists (n, 2, 3) (NaN without a mesh)."""
  pj = np.asarray(pred['joints'], np.float64)
  n = len(pj)
  pv = pred.get('verts')
  iw = pj.copy()
  ia = np.full((n, 42, 3), np.nan)
  wrist = np.full((n, 2, 3), np.nan)
  if pv is not None:
    pv = np.asarray(pv, np.float64)
    for k in range(2):
      have = np.isfinite(pv[:, k]).all((1, 2))
      if have.any():
        rows = slice(21 * k, 21 * k + 21)
        iw[have, rows] = regress.mesh_joints(models[k], pv[have, k], regress.INTERWILD_TIPS,
                                             regressor=models[0].J_regressor)
        ia[have, rows] = regress.mesh_joints(models[k], pv[have, k], regress.INTAGHAND_TIPS)
        wrist[have, k] = regress.mesh_wrist(pv[have, k], models[0].J_regressor)
  return {'interwild': iw, 'intaghand': ia, 'mesh_wrist': wrist}


def score(examples: Sequence[dict], predict: Callable[[Sequence[dict]], dict], models, *,
          rules: str = 'interhand26m', chunk: int = 64, penetration: bool = True,
          check_dark: bool = True, progress: bool = True) -> Dict[str, np.ndarray]:
  """Per-sample results of both protocols (see metrics) over `examples`,
  plus 'annot_id' and, with `penetration`, PenVol/PenDist/gap of the
  predicted meshes and the gap of the GT meshes on interacting frames.
  `predict(chunk_examples)` ->
  {'joints' (n, 42, 3) m, 'verts' (n, 2, V, 3) m or None, optional
  'rel_root' (n, 3) m (else the predicted wrists' difference)}."""
  faces = [np.asarray(m.faces, np.int32) for m in models]
  parts = []
  it = range(0, len(examples), chunk)
  if progress:
    it = tqdm(it, desc='eval', unit='chunk', total=(len(examples) + chunk - 1) // chunk)
  for start in it:
    exs = [examples[i] for i in range(start, min(start + chunk, len(examples)))]
    gt = ground_truth(exs, models, rules=rules, check_dark=check_dark)
    pred = predict(exs)
    pv = pred.get('verts')
    joints = prediction_joints(pred, models)
    kw = {}
    if pv is not None:
      have = np.isfinite(pv).all((2, 3))
      kw = dict(pred_verts=np.where(np.isfinite(pv), pv, 0.0),
                gt_verts=np.nan_to_num(gt['verts']), gt_mano_valid=gt['mano_valid'] & have,
                pred_mesh_wrist=np.nan_to_num(joints['mesh_wrist']),
                gt_mesh_wrist=np.nan_to_num(gt['mesh_wrist']))
    joint_valid = gt['joint_valid'] * gt['frame'][:, None]
    res = metrics.interwild_per_sample(
        np.nan_to_num(joints['interwild']), gt['joints'], joint_valid, gt['hand_type'],
        pred_rel_root=pred.get('rel_root'), gt_rel_root=gt['rel_root'],
        rel_root_valid=gt['rel_root_valid'] & gt['frame'], **kw)
    res['interwild/frame'] = gt['frame']
    if 'interwild/vert_err' in res:
      res['interwild/vert_err'][~gt['frame']] = np.nan
      res['rrve'][~gt['frame']] = np.nan
    res.update(metrics.intaghand_per_sample(
        joints['intaghand'], gt['intaghand_joints'], gt['intaghand_frame'],
        pred_verts=pv, gt_verts=gt['verts'] if pv is not None else None))
    res['annot_id'] = gt['annot_id']
    if penetration and pv is not None:
      # Only interacting frames are scored (and computed: PenVol costs ~30 ms a pair).
      ih = np.flatnonzero(gt['hand_type'] == 'interacting')
      pen = {'penvol_cm3': np.full(len(exs), np.nan), 'pendist_cm': np.full(len(exs), np.nan),
             'gap_cm': np.full(len(exs), np.nan), 'close': np.zeros(len(exs), bool),
             'gt_gap_cm': np.full(len(exs), np.nan)}
      if len(ih):
        got = metrics.penetration_per_sample(np.nan_to_num(pv[ih]), faces[0], faces[1])
        got['gt_gap_cm'] = metrics.hand_gap_cm(gt['verts'][ih], faces[0], faces[1])
        for k in pen:
          pen[k][ih] = got[k]
      res.update(pen)
    parts.append(res)
  if not parts:
    raise ValueError('no examples to score')
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
