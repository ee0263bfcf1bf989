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
"""

import json
import os
from typing import Dict, Optional, Sequence

import numpy as np

SIDES = ('right', 'left')


class PredictionsError(ValueError):
  pass


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
    with np.load(path, allow_pickle=False) as z:
      for key in ('annot_id', 'joints', 'units'):
        if key not in z:
          raise PredictionsError(f'{path}: missing array {key!r}')
      scale = _scale(str(z['units']), path)
      ids = np.asarray(z['annot_id']).astype(np.int64)
      joints = _array(z['joints'], (len(ids), 42, 3), f'{path}: joints') * scale
      verts = _array(z['vertices'], None, f'{path}: vertices') * scale \
          if 'vertices' in z else None
    if verts is not None and (verts.ndim != 4 or verts.shape[:2] != (len(ids), 2)):
      raise PredictionsError(f'{path}: vertices must be (N, 2, V, 3), got {verts.shape}')
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
    self._entries = {}
    for key, entry in doc['predictions'].items():
      where = f'{path}: predictions[{key!r}]'
      try:
        aid = int(key)
      except ValueError:
        raise PredictionsError(f'{where}: the key must be an annotation id') from None
      if not isinstance(entry, dict) or set(entry) - set(SIDES):
        raise PredictionsError(f'{where}: expected {{"right": ..., "left": ...}}')
      hands = {}
      for side in SIDES:
        h = entry.get(side)
        w = f'{where}[{side!r}]'
        if h is None:
          hands[side] = None
        elif 'pose' in h:
          hands[side] = {'pose': _array(h.get('pose'), (48,), w + '.pose'),
                         'shape': _array(h.get('shape', [0.0] * 10), (10,), w + '.shape'),
                         'trans': _array(h.get('trans'), (3,), w + '.trans') * scale}
        elif 'joints' in h:
          hands[side] = {'joints': _array(h['joints'], (21, 3), w + '.joints') * scale}
          if 'vertices' in h:
            v = _array(h['vertices'], None, w + '.vertices') * scale
            if v.ndim != 2 or v.shape[1] != 3:
              raise PredictionsError(f'{w}.vertices: expected (V, 3), got {v.shape}')
            hands[side]['vertices'] = v
        else:
          raise PredictionsError(f'{w}: expected MANO "pose"/"shape"/"trans" or "joints"')
      self._entries[aid] = hands
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
    """joints (n, 42, 3) m and vertices (n, 2, V, 3) m (None if absent)."""
    n = len(annot_ids)
    if self._index is not None:
      rows = [self._index[int(a)] for a in annot_ids]
      return {'joints': self._joints[rows],
              'verts': None if self._verts is None else self._verts[rows]}
    import mano_jax
    joints = np.full((n, 42, 3), np.nan)
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
    return {'joints': joints, 'verts': verts}
