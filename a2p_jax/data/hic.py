"""HIC (Tzionas et al., IJCV 2016) reader, test split only, InterWild's format.

    ds = HIC('/data/HIC/data', mano_dir='/data/mano')

`root` holds HIC.json (COCO-like: 'images' with id/file_name/width/height,
'annotations' with id/image_id/hand_type/right_mano_path/left_mano_path and
optionally bbox) and the files it names (paths relative to `root`). The
ground truth are MANO meshes (.ply, camera space, metres), one per present
hand; the camera is fixed (focal 525, 525; princpt 319.5, 239.5). Examples:

  image_path, image_size (height, width), annot_id, image_id,
  seq_name (str or None)
  hand_type      'right' | 'left' | 'interacting';  hand_type_valid 1
  camera         {'focal' (2,), 'princpt' (2,)} float64 px
  verts          {'right': (V, 3) float64 m | None, 'left': ...}
  joints_cam     (42, 3) float64 mm, InterHand order (right 0-20, left
                 21-41): HIC has no 3D joints, so they are regressed from
                 the meshes with the MANO joint regressor (16 joints) plus the
                 fingertip vertices, as InterWild evaluates HIC; zeros for an
                 absent hand. Needs the real MANO (`mano_dir`): the
                 procedural hand's regressor does not fit HIC's meshes.
  joint_valid    (42,) float32, 1 for the joints of the present hands
  bbox           (4,) float64 [x, y, w, h] px: the annotation's when it has
                 one, else the box of the projected mesh vertices, else the
                 whole image
  mano           {'right': None, 'left': None} (HIC ships meshes, not fits)
  joints_2d_hic  HIC's own 2D keypoints as in the annotation ('joint_2d',
                 noisy, HIC's joint set) or None; joints_2d_hic_valid likewise
"""

import json
import logging
import os
from typing import Optional

import numpy as np

import mano_jax
from a2p_jax.data import camera as cam_lib
from a2p_jax.data.hands import load_hand_models
from a2p_jax.data.interhand26m import AnnotationError, HAND_TYPES, NUM_JOINTS
from a2p_jax.geometry.camera import project

log = logging.getLogger(__name__)

FOCAL = (525.0, 525.0)
PRINCPT = (319.5, 239.5)
SIDES = ('right', 'left')


# ----------------------------------------------------------------------------
# PLY meshes.

_PLY_TYPES = {
    'char': 'i1', 'int8': 'i1', 'uchar': 'u1', 'uint8': 'u1', 'short': 'i2', 'int16': 'i2',
    'ushort': 'u2', 'uint16': 'u2', 'int': 'i4', 'int32': 'i4', 'uint': 'u4', 'uint32': 'u4',
    'float': 'f4', 'float32': 'f4', 'double': 'f8', 'float64': 'f8'}


def _ply_header(fh, path):
  """Parses the header -> (format, [(element, count, [(prop, type or list)])])."""
  if fh.readline().strip() != b'ply':
    raise ValueError(f'{path}: not a PLY file (no "ply" magic)')
  fmt, elements = None, []
  while True:
    line = fh.readline()
    if not line:
      raise ValueError(f'{path}: PLY header has no end_header')
    words = line.decode('ascii', 'replace').split()
    if not words or words[0] in ('comment', 'obj_info'):
      continue
    if words[0] == 'end_header':
      break
    if words[0] == 'format' and len(words) >= 2:
      fmt = words[1]
    elif words[0] == 'element' and len(words) == 3:
      elements.append((words[1], int(words[2]), []))
    elif words[0] == 'property' and elements:
      if words[1] == 'list':
        elements[-1][2].append((words[-1], 'list'))
      elif words[1] in _PLY_TYPES and len(words) == 3:
        elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
      else:
        raise ValueError(f'{path}: PLY header: bad property line {line.strip()!r}')
    else:
      raise ValueError(f'{path}: PLY header: unexpected line {line.strip()!r}')
  if fmt not in ('ascii', 'binary_little_endian', 'binary_big_endian'):
    raise ValueError(f'{path}: PLY format {fmt!r} is not supported')
  return fmt, elements


def read_ply_vertices(path) -> np.ndarray:
  """Vertex positions (V, 3) float64 of a PLY mesh (ascii or binary)."""
  with open(path, 'rb') as fh:
    fmt, elements = _ply_header(fh, path)
    if not elements or elements[0][0] != 'vertex':
      # Every exporter writes vertices first; skipping list elements would
      # need the whole file parsed, so say so instead.
      raise ValueError(f'{path}: PLY: the first element must be "vertex"')
    _, count, props = elements[0]
    names = [p for p, _ in props]
    if any(t == 'list' for _, t in props) or not {'x', 'y', 'z'} <= set(names):
      raise ValueError(f'{path}: PLY vertex element needs scalar x, y, z properties')
    if fmt == 'ascii':
      rows = [fh.readline().split() for _ in range(count)]
      if any(len(r) != len(props) for r in rows):
        raise ValueError(f'{path}: PLY: truncated or malformed vertex data')
      try:
        cols = np.asarray(rows, np.float64)
      except ValueError:
        raise ValueError(f'{path}: PLY: non-numeric vertex data') from None
    else:
      order = '<' if fmt == 'binary_little_endian' else '>'
      dtype = np.dtype([(p, order + t) for p, t in props])
      raw = fh.read(dtype.itemsize * count)
      if len(raw) != dtype.itemsize * count:
        raise ValueError(f'{path}: PLY: truncated vertex data')
      cols = np.frombuffer(raw, dtype)
  if fmt == 'ascii':
    xyz = cols[:, [names.index(c) for c in 'xyz']]
  else:
    xyz = np.stack([cols[c].astype(np.float64) for c in 'xyz'], -1)
  if not np.all(np.isfinite(xyz)):
    raise ValueError(f'{path}: PLY: vertex positions contain NaN or Inf')
  return xyz


# ----------------------------------------------------------------------------
# The data set.

def mesh_joints_interhand(model, verts):
  """(V, 3) mesh -> (21, 3) joints in InterHand order: J_regressor + tips."""
  verts = np.asarray(verts, np.float64)
  joints = np.asarray(model.J_regressor, np.float64) @ verts
  tips = verts[np.asarray(model.tip_ids, np.int64)]
  return mano_jax.joints.reorder(np.concatenate([joints, tips], 0), 'interhand')


def _find_json(root):
  for path in (os.path.join(root, 'HIC.json'), os.path.join(root, 'data', 'HIC.json')):
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(f'HIC: {os.path.join(root, "HIC.json")} not found')


def _get(rec, key, where):
  if not isinstance(rec, dict):
    raise AnnotationError(f'HIC.json: {where}: expected an object')
  if key not in rec:
    raise AnnotationError(f'HIC.json: {where}: missing key {key!r}')
  return rec[key]


class HIC:
  """HIC test set as a sequence of camera-space examples (see the module doc).

  mano_dir: MANO_RIGHT.pkl / MANO_LEFT.pkl for the joint regressor (None:
  the procedural hand, NOT MANO, only right for meshes made with it).
  strict: raise on a missing image or mesh file instead of a counted,
  logged skip (`summary`).
  """

  def __init__(self, root: str, split: str = 'test', *, mano_dir: Optional[str] = None,
               strict: bool = False):
    if split != 'test':
      raise ValueError(f'HIC has only a test split, got split={split!r}')
    self.json_path = _find_json(root)
    self.root = os.path.dirname(self.json_path)
    self.mano_dir = mano_dir
    try:
      with open(self.json_path, 'r', encoding='utf-8') as fh:
        db = json.load(fh)
    except json.JSONDecodeError as e:
      raise AnnotationError(f'{self.json_path}: invalid JSON: {e}') from None
    self._items = self._parse(db)
    missing = [it for it in self._items if not self._files_exist(it)]
    self.summary = {'annotations': len(self._items), 'missing_files': len(missing)}
    if missing:
      msg = (f'HIC: {len(missing)} annotations miss their image or mesh file, e.g. '
             f'annotation {missing[0]["annot_id"]} ({missing[0]["image_path"]})')
      if strict:
        raise FileNotFoundError(msg)
      log.warning('%s; skipped', msg)
      bad = {id(it) for it in missing}
      self._items = [it for it in self._items if id(it) not in bad]
    self.summary['examples'] = len(self._items)
    log.info('HIC: %s', self.summary)
    self._models = None

  def _parse(self, db):
    images = {}
    for i, img in enumerate(_get(db, 'images', 'top level')):
      where = f'images[{i}]'
      images[_get(img, 'id', where)] = img
      _get(img, 'file_name', where)
      for key in ('width', 'height'):
        value = _get(img, key, where)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (np.isfinite(value) and value > 0 and value == int(value)):
          raise AnnotationError(f'HIC.json: {where}.{key}: expected a positive integer '
                                f'(image size in px), got {value!r}')
    items = []
    for i, ann in enumerate(_get(db, 'annotations', 'top level')):
      where = f'annotations[{i}]'
      image_id = _get(ann, 'image_id', where)
      if image_id not in images:
        raise AnnotationError(f'HIC.json: {where}: image_id {image_id!r} is not in images')
      img = images[image_id]
      hand_type = _get(ann, 'hand_type', where)
      if hand_type not in HAND_TYPES:
        raise AnnotationError(f'HIC.json: {where}.hand_type: expected one of {HAND_TYPES}, '
                              f'got {hand_type!r}')
      mesh = {s: _get(ann, f'{s}_mano_path', where) for s in SIDES}
      if all(p is None for p in mesh.values()):
        raise AnnotationError(f'HIC.json: {where}: right_mano_path and left_mano_path '
                              'are both null')
      bbox = ann.get('bbox')
      if bbox is not None:
        try:
          bbox = np.asarray(bbox, np.float64)
        except (TypeError, ValueError):
          bbox = None
        if bbox is None or bbox.shape != (4,) or not np.all(np.isfinite(bbox)):
          raise AnnotationError(f'HIC.json: {where}.bbox: expected [x, y, w, h] (4 finite '
                                f'numbers), got {str(ann.get("bbox"))[:80]}')
      items.append({
          'annot_id': ann.get('id', i), 'image_id': image_id,
          'image_path': os.path.join(self.root, img['file_name']),
          'image_size': (int(img['height']), int(img['width'])),
          'seq_name': img.get('seq_name'), 'hand_type': hand_type, 'bbox': bbox,
          'mesh_paths': {s: None if p is None else os.path.join(self.root, p)
                         for s, p in mesh.items()},
          'joints_2d_hic': ann.get('joint_2d'), 'joints_2d_hic_valid': ann.get('joint_valid'),
      })
    return items

  @staticmethod
  def _files_exist(item):
    paths = [item['image_path']] + [p for p in item['mesh_paths'].values() if p]
    return all(os.path.isfile(p) for p in paths)

  def __len__(self) -> int:
    return len(self._items)

  @property
  def annot_ids(self) -> np.ndarray:
    """int64 (N,) annotation ids in example order, without reading any mesh."""
    return np.asarray([it['annot_id'] for it in self._items], np.int64)

  def __getstate__(self):
    # Worker processes load the hand models themselves.
    return dict(self.__dict__, _models=None)

  def _hand_models(self):
    if self._models is None:
      if self.mano_dir is None:
        log.warning('HIC: no mano_dir, so joints are regressed with the procedural hand '
                    '(NOT MANO); pass mano_dir for real HIC meshes')
      self._models = load_hand_models(self.mano_dir)
    return self._models

  def __getitem__(self, i: int) -> dict:
    n = len(self._items)
    if not -n <= i < n:
      raise IndexError(f'index {i} out of range for {n} examples')
    it = self._items[i]
    focal, princpt = np.array(FOCAL), np.array(PRINCPT)
    verts, joints = {}, np.zeros((NUM_JOINTS, 3))
    joint_valid = np.zeros(NUM_JOINTS, np.float32)
    for k, side in enumerate(SIDES):
      path = it['mesh_paths'][side]
      if path is None:
        verts[side] = None
        continue
      v = read_ply_vertices(path)
      model = self._hand_models()[k]
      if v.shape[0] != model.num_vertices:
        raise ValueError(f'{path}: {v.shape[0]} vertices, the {side} hand model '
                         f'({model.name}) has {model.num_vertices}')
      verts[side] = v
      joints[21 * k:21 * k + 21] = mesh_joints_interhand(model, v) * 1000.0
      joint_valid[21 * k:21 * k + 21] = 1.0
    bbox = it['bbox']
    if bbox is None:
      present = [v for v in verts.values() if v is not None]
      bbox = cam_lib.bbox_of_points(project(np.concatenate(present), focal, princpt))
    if bbox is None:
      h, w = it['image_size']
      bbox = np.array([0.0, 0.0, w, h])
    hic2d = it['joints_2d_hic']
    hic2d_valid = it['joints_2d_hic_valid']
    return {
        'image_path': it['image_path'], 'image_size': it['image_size'],
        'annot_id': it['annot_id'], 'image_id': it['image_id'], 'seq_name': it['seq_name'],
        'hand_type': it['hand_type'], 'hand_type_valid': 1,
        'camera': {'focal': focal, 'princpt': princpt},
        'verts': verts, 'joints_cam': joints, 'joint_valid': joint_valid,
        'bbox': np.array(bbox, np.float64), 'mano': {'right': None, 'left': None},
        'joints_2d_hic': None if hic2d is None else np.asarray(hic2d, np.float64),
        'joints_2d_hic_valid': None if hic2d_valid is None else np.asarray(hic2d_valid,
                                                                           np.float64),
    }
