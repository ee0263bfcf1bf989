"""Predictions files from any method, scored with the same protocol.

JSON format (one entry per annotation id of the evaluated split):

    {"units": "m",                        # or "mm": joints/vertices/trans units
     "predictions": {
       "12345": {"right": {"pose": [48 floats], "shape": [10], "trans": [3]},
                 "left":  {"joints": [[x, y, z] x 21], "vertices": [[x, y, z] x V]}},
       ...}}

Each hand is either MANO parameters in camera space (axis-angle pose with
`flat_hand_mean=False` as InterHand2.6M's fits, shape, trans; run through
the MANO model given at scoring time) or joints (21, InterHand order: thumb
tip..., wrist last) with optional vertices, or null for a hand the method
did not predict (its errors then count as missing: the file is rejected if
the ground truth has that hand). NPZ format: `annot_id` (N,), `joints`
(N, 42, 3), optional `vertices` (N, 2, V, 3), and a string `units`.

A file whose numbers contradict its "units" (hands ~150 m long, or 0.15 mm,
or ~500 m from the camera) is refused rather than scored as wildly wrong.
"""

import json
import os
from typing import Dict, Optional, Sequence

import numpy as np

import mano_jax

SIDES = ('right', 'left')


class PredictionsError(ValueError):
  pass


# Plausibility bounds for the declared units (m after scaling). A hand's
# wrist-to-farthest-joint extent is ~0.1-0.25 m and camera-space hands are
# within metres of the camera; m read as mm or mm read as m is off by 1000x.
_MAX_EXTENT_M = 2.0
_MIN_EXTENT_M = 0.002
_MAX_TRANS_M = 20.0


def _hand_extents(joints_Nx21x3):
  """Wrist (InterHand order: last) to farthest joint, per hand (N,) m."""
  j = np.asarray(joints_Nx21x3, np.float64)
  return np.linalg.norm(j - j[:, 20:21], axis=-1).max(-1)


def _check_units(path, units, extents, trans_norms):
  """Refuses files whose typical hand size / distance contradicts `units`."""
  other = 'mm' if units == 'm' else 'm'
  extents = np.asarray(extents, np.float64)
  extents = extents[extents > 0]  # all-zero (degenerate) hands say nothing
  if len(extents):
    size = float(np.median(extents))
    if not _MIN_EXTENT_M <= size <= _MAX_EXTENT_M:
      raise PredictionsError(
          f'{path}: "units" is {units!r} but the predicted hands span {size:.3g} m '
          f'(median wrist-to-joint extent; a hand spans ~0.2 m): are the values in '
          f'{other}?')
  if len(trans_norms):
    dist = float(np.median(trans_norms))
    if dist > _MAX_TRANS_M:
      raise PredictionsError(
          f'{path}: "units" is {units!r} but the MANO "trans" put the hands {dist:.3g} m '
          f'from the camera (median): are the values in {other}?')


def _scale(units, path):
  if units not in ('m', 'mm'):
    raise PredictionsError(f'{path}: "units" must be "m" or "mm", got {units!r}')
  return 1.0 if units == 'm' else 1e-3


def _array(value, shape, where):
  try:
    a = np.asarray(value, np.float64)
  except (TypeError, ValueError):
    raise PredictionsError(f'{where}: not a numeric array') from None
  if shape is not None and a.shape != shape:
    raise PredictionsError(f'{where}: expected shape {shape}, got {a.shape}')
  if not np.isfinite(a).all():
    raise PredictionsError(f'{where}: contains NaN or Inf')
  return a


def _ids(value, path):
  """annot_id array -> int64 (N,), refusing fractions and duplicates."""
  a = np.asarray(value)
  if a.ndim != 1 or a.dtype.kind not in 'iuf':
    raise PredictionsError(f'{path}: annot_id must be a 1-D array of integers, got '
                           f'{a.dtype} {a.shape}')
  ids = a.astype(np.int64)
  if a.dtype.kind == 'f' and not np.array_equal(ids, a):
    raise PredictionsError(f'{path}: annot_id holds non-integer values, e.g. '
                           f'{a[ids != a][0]!r}')
  uniq, counts = np.unique(ids, return_counts=True)
  if (counts > 1).any():
    raise PredictionsError(f'{path}: annotation id {int(uniq[counts > 1][0])} appears '
                           f'{int(counts.max())} times')
  return ids


class Predictions:
  """Loaded and validated predictions; `hands(annot_ids, models)` gives the
  arrays the metrics take."""

  def __init__(self, path: str):
    self.path = path
    if not os.path.exists(path):
      raise FileNotFoundError(f'predictions file {path} does not exist')
    if path.endswith('.npz'):
      self._load_npz(path)
    else:
      self._load_json(path)

  def _load_npz(self, path):
    try:
      with np.load(path, allow_pickle=False) as z:
        for key in ('annot_id', 'joints', 'units'):
          if key not in z:
            raise PredictionsError(f'{path}: missing array {key!r}')
        units = str(z['units'])
        scale = _scale(units, path)
        ids = _ids(z['annot_id'], path)
        joints = _array(z['joints'], (len(ids), 42, 3), f'{path}: joints') * scale
        verts = _array(z['vertices'], None, f'{path}: vertices') * scale \
            if 'vertices' in z else None
    except PredictionsError:
      raise
    except Exception as e:  # zipfile.BadZipFile, object arrays, truncated members...
      raise PredictionsError(f'{path}: not a readable predictions .npz '
                             f'({type(e).__name__}: {e})') from None
    if verts is not None and (verts.ndim != 4 or verts.shape[:2] != (len(ids), 2)
                              or verts.shape[-1] != 3):
      raise PredictionsError(f'{path}: vertices must be (N, 2, V, 3), got {verts.shape}')
    _check_units(path, units, _hand_extents(joints.reshape(-1, 21, 3)), [])
    self._index = {int(a): i for i, a in enumerate(ids)}
    self._joints, self._verts, self._params = joints, verts, None

  def _load_json(self, path):
    try:
      with open(path) as f:
        doc = json.load(f)
    except json.JSONDecodeError as e:
      raise PredictionsError(f'{path}: not valid JSON ({e})') from None
    if not isinstance(doc, dict) or 'predictions' not in doc or 'units' not in doc:
      raise PredictionsError(f'{path}: expected an object with "units" and "predictions"')
    scale = _scale(doc['units'], path)
    if not isinstance(doc['predictions'], dict):
      raise PredictionsError(f'{path}: "predictions" must be an object keyed by annotation '
                             f'id, got {type(doc["predictions"]).__name__}')
    self._entries = {}
    extents, trans_norms = [], []
    for key, entry in doc['predictions'].items():
      where = f'{path}: predictions[{key!r}]'
      try:
        aid = int(key)
      except ValueError:
        raise PredictionsError(f'{where}: the key must be an annotation id') from None
      if aid in self._entries:
        raise PredictionsError(f'{where}: annotation id {aid} appears twice')
      if not isinstance(entry, dict) or set(entry) - set(SIDES):
        raise PredictionsError(f'{where}: expected {{"right": ..., "left": ...}}')
      hands = {}
      for side in SIDES:
        h = entry.get(side)
        w = f'{where}[{side!r}]'
        if h is not None and not isinstance(h, dict):
          raise PredictionsError(f'{w}: expected an object (MANO parameters or joints) or '
                                 f'null, got {type(h).__name__}')
        if h is None:
          hands[side] = None
        elif 'pose' in h:
          hands[side] = {'pose': _array(h.get('pose'), (48,), w + '.pose'),
                         'shape': _array(h.get('shape', [0.0] * 10), (10,), w + '.shape'),
                         'trans': _array(h.get('trans'), (3,), w + '.trans') * scale}
          trans_norms.append(float(np.linalg.norm(hands[side]['trans'])))
        elif 'joints' in h:
          hands[side] = {'joints': _array(h['joints'], (21, 3), w + '.joints') * scale}
          extents.append(float(_hand_extents(hands[side]['joints'][None])[0]))
          if 'vertices' in h:
            v = _array(h['vertices'], None, w + '.vertices') * scale
            if v.ndim != 2 or v.shape[1] != 3:
              raise PredictionsError(f'{w}.vertices: expected (V, 3), got {v.shape}')
            hands[side]['vertices'] = v
        else:
          raise PredictionsError(f'{w}: expected MANO "pose"/"shape"/"trans" or "joints"')
      self._entries[aid] = hands
    _check_units(path, doc['units'], extents, trans_norms)
    self._index = None

  def ids(self):
    return set(self._index) if self._index is not None else set(self._entries)

  def check_covers(self, annot_ids: Sequence[int], hand_present: np.ndarray):
    """Every id present, and a prediction for every hand the GT has."""
    have = self.ids()
    for i, aid in enumerate(annot_ids):
      if int(aid) not in have:
        raise PredictionsError(f'{self.path}: no prediction for annotation id {int(aid)} '
                               f'(first missing of the split)')
      if self._index is None:
        for k, side in enumerate(SIDES):
          if hand_present[i, k] and self._entries[int(aid)][side] is None:
            raise PredictionsError(f'{self.path}: predictions[{int(aid)!r}][{side!r}] is '
                                   f'null but the ground truth has that hand')

  def hands(self, annot_ids: Sequence[int], models) -> Dict[str, Optional[np.ndarray]]:
    """joints (n, 42, 3) m, vertices (n, 2, V, 3) m (None if absent) and
    from_mano (n, 2) bool: the hand was given as MANO parameters (its joints
    are then mano_jax's forward joints)."""
    n = len(annot_ids)
    if self._index is not None:
      rows = [self._index[int(a)] for a in annot_ids]
      return {'joints': self._joints[rows],
              'verts': None if self._verts is None else self._verts[rows],
              'from_mano': np.zeros((n, 2), bool)}
    joints = np.full((n, 42, 3), np.nan)
    from_mano = np.zeros((n, 2), bool)
    verts = None
    for k, side in enumerate(SIDES):
      ents = [self._entries[int(a)][side] for a in annot_ids]
      mano_rows = [i for i, e in enumerate(ents) if e is not None and 'pose' in e]
      if mano_rows:
        out = mano_jax.forward(models[k], np.stack([ents[i]['pose'] for i in mano_rows]),
                               np.stack([ents[i]['shape'] for i in mano_rows]),
                               np.stack([ents[i]['trans'] for i in mano_rows]),
                               joint_order='interhand')
        jv = np.asarray(out.joints, np.float64)
        vv = np.asarray(out.vertices, np.float64)
        if verts is None:
          verts = np.full((n, 2) + vv.shape[1:], np.nan)
        joints[mano_rows, 21 * k:21 * k + 21] = jv
        verts[mano_rows, k] = vv
        from_mano[mano_rows, k] = True
      for i, e in enumerate(ents):
        if e is not None and 'joints' in e:
          joints[i, 21 * k:21 * k + 21] = e['joints']
          if 'vertices' in e:
            if verts is None:
              verts = np.full((n, 2) + e['vertices'].shape, np.nan)
            if e['vertices'].shape != verts.shape[2:]:
              raise PredictionsError(f'{self.path}: predictions[{int(annot_ids[i])!r}]'
                                     f'[{side!r}].vertices: {e["vertices"].shape[0]} '
                                     f'vertices, others have {verts.shape[2]}')
            verts[i, k] = e['vertices']
    return {'joints': joints, 'verts': verts, 'from_mano': from_mano}
