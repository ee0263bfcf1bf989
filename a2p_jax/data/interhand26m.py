"""InterHand2.6M v1.0 reader (official layout; the synthetic set uses it too).

    ds = InterHand26M('/data/InterHand2.6M', 'train', mano_dir='/data/mano',
                      subset='/data/aid_human_annot_train.txt')
    ex = ds[0]

Reads `images/{split}/<file_name>` and `annotations/{split}/InterHand2.6M_
{split}_{data,camera,joint_3d,MANO_NeuralAnnot}.json`. One example per
annotation of data.json (one camera view of one frame):

  image_path     str, images/{split}/Capture<c>/<seq>/cam<id>/image<frame>.jpg
  joints_cam     (42, 3) float64 mm, camera space, InterHand order (right
                 0-20, left 21-41; per hand thumb4..1, index, middle, ring,
                 pinky, wrist last)
  joint_valid    (42,) float32, data.json's as is (the wrist-validity rule of
                 the official loader is the pipeline's job)
  joint_valid_3d (42,) float32, joint_3d.json's joint_valid of the frame
                 (InterWild's evaluation skips frames where it is all 0 and
                 reads the joints it marks invalid as 1 mm)
  hand_type      'right' | 'left' | 'interacting';  hand_type_valid int 0/1
  bbox           (4,) float64 [x, y, w, h] px, data.json's
  camera         {'focal' (2,), 'princpt' (2,)} float64 px
  mano           {'right': {'pose' (48,), 'shape' (10,), 'trans' (3,)} | None,
                  'left': ...}: the frame's NeuralAnnot fits moved exactly
                 into camera space (pose axis-angle rad, flat_hand_mean=False,
                 trans m): mano_jax.forward(model, pose, shape, trans) is the
                 camera-space mesh. None where the file has null or no entry
                 for the frame (NeuralAnnot does not cover every frame); fits
                 are per frame, so use hand_type/joint_valid to know which
                 hand the view shows.
  annot_id, image_id, capture, seq_name, camera_id (str), frame_idx (int),
  image_size (height, width) px

Memory: the index is built by streaming the JSON files (`jsonstream`),
data.json record by record and joint_3d / MANO capture by capture, into
flat numpy arrays (about 0.5 KB per annotation) that are cached as .npy
files beside the annotations (or under ~/.cache when that folder is
read-only) and memory-mapped on later runs.

Errors: malformed or inconsistent files raise AnnotationError naming the
file and the key. Missing image files are skipped, counted and logged (with
a summary in `ds.summary`), or raise with strict=True.
"""

import array
import hashlib
import json
import logging
import os
import shutil
import tempfile
from typing import Callable, Iterable, Optional, Union

import numpy as np
from tqdm import tqdm

from a2p_jax.data import camera as cam_lib
from a2p_jax.data import jsonstream
from a2p_jax.data.hands import load_hand_models

log = logging.getLogger(__name__)

SPLITS = ('train', 'val', 'test')
HAND_TYPES = ('right', 'left', 'interacting')
SIDES = ('right', 'left')
NUM_JOINTS = 42
MANO_SIZES = (('pose', 48), ('shape', 10), ('trans', 3))
_MANO_DIM = sum(n for _, n in MANO_SIZES)
_INDEX_VERSION = 2  # 2: + frame_joint_valid (joint_3d.json's joint_valid)
_FILES = ('data', 'camera', 'joint_3d', 'MANO_NeuralAnnot')


class AnnotationError(ValueError):
  """A malformed or inconsistent annotation file; the message names file and key."""


def annotation_files(root: str, split: str) -> dict:
  """{'data'|'camera'|'joint_3d'|'MANO_NeuralAnnot': path} of one split."""
  ann_dir = os.path.join(root, 'annotations', split)
  return {k: os.path.join(ann_dir, f'InterHand2.6M_{split}_{k}.json') for k in _FILES}


# ----------------------------------------------------------------------------
# Key normalisation: the files mix int and str ids (capture 0 vs '0').

def _id_key(value, file, where):
  """A capture / frame id as its canonical string ('0', '20683')."""
  if isinstance(value, bool) or not isinstance(value, (int, str)):
    raise AnnotationError(f'{file}: {where}: expected an int or str id, got {value!r}')
  text = str(value).strip()
  # '020683' and '20683' are the same frame; non-numeric ids are kept as is.
  return str(int(text)) if text.lstrip('-').isdigit() else text


def _field(rec, key, file, where):
  if not isinstance(rec, dict):
    raise AnnotationError(f'{file}: {where}: expected an object, got {type(rec).__name__}')
  if key not in rec:
    raise AnnotationError(f'{file}: {where}: missing key {key!r}')
  return rec[key]


def _floats(value, shape, file, where, *, finite=True):
  """A JSON list -> float64 array of `shape`, or AnnotationError."""
  try:
    arr = np.asarray(value, np.float64)
  except (TypeError, ValueError):
    raise AnnotationError(f'{file}: {where}: expected numbers of shape {shape}, '
                          f'got {str(value)[:80]}') from None
  if arr.size != int(np.prod(shape)):
    raise AnnotationError(f'{file}: {where}: expected {int(np.prod(shape))} numbers '
                          f'(shape {shape}), got shape {arr.shape}')
  if finite and not np.all(np.isfinite(arr)):
    raise AnnotationError(f'{file}: {where}: contains NaN or Inf')
  return arr.reshape(shape)


def _int(value, file, where):
  if isinstance(value, bool):
    return int(value)
  if isinstance(value, float) and value.is_integer():
    return int(value)
  if not isinstance(value, int):
    try:
      return int(str(value))
    except ValueError:
      raise AnnotationError(f'{file}: {where}: expected an integer, got {value!r}') from None
  return value


# ----------------------------------------------------------------------------
# Building the index.

class _Codes:
  """Interns strings as small ints (captures, sequences, camera ids)."""

  def __init__(self):
    self.names, self._code = [], {}

  def __call__(self, name):
    code = self._code.get(name)
    if code is None:
      code = self._code[name] = len(self.names)
      self.names.append(name)
    return code


def _where(section, i, rec):
  tag = f'{section}[{i}]'
  if isinstance(rec, dict) and 'id' in rec:
    tag += f' (id {rec["id"]})'
  return tag


def _numbers(value, n, file, where):
  """A flat list of n numbers from [a, b, ...] or [[a], [b], ...] (joint_valid)."""
  if isinstance(value, list) and len(value) == n:
    if n and type(value[0]) is list:
      value = [x[0] if type(x) is list and len(x) == 1 else x for x in value]
    try:
      return array.array('d', value)
    except TypeError:
      pass
  # The slow path only to say what is wrong.
  _floats(value, (n,), file, where, finite=False)
  raise AnnotationError(f'{file}: {where}: expected {n} numbers, got {str(value)[:80]}')


class _DataColumns:
  """data.json as columns: plain lists and arrays while streaming (numpy per
  record would cost more than the JSON decoding)."""

  IMAGE_KEYS = ('id', 'width', 'height', 'capture', 'seq_name', 'camera', 'frame_idx',
                'file_name')
  ANNOT_KEYS = ('id', 'image_id', 'bbox', 'joint_valid', 'hand_type', 'hand_type_valid')

  def __init__(self, file):
    self.file = file
    self.captures, self.seqs, self.cams = _Codes(), _Codes(), _Codes()
    self._raw_codes = {}
    self.img = {k: array.array('q') for k in ('id', 'width', 'height', 'capture', 'seq',
                                               'camera', 'frame')}
    self.file_names = []
    self.ann = {k: array.array('q') for k in ('id', 'image_id', 'hand_type',
                                               'hand_type_valid')}
    self.bbox, self.joint_valid = array.array('d'), array.array('d')

  def _require(self, rec, keys, where):
    if not isinstance(rec, dict):
      raise AnnotationError(f'{self.file}: {where}: expected an object')
    for k in keys:
      if k not in rec:
        raise AnnotationError(f'{self.file}: {where}: missing key {k!r}')

  def add_image(self, rec):
    i = len(self.file_names)
    try:
      iid, w, h, fr = rec['id'], rec['width'], rec['height'], rec['frame_idx']
      cap, camid, seq, fn = rec['capture'], rec['camera'], rec['seq_name'], rec['file_name']
    except (KeyError, TypeError):
      self._require(rec, self.IMAGE_KEYS, f'images[{i}]')
    where = _where('images', i, rec)
    f = self.file
    if type(iid) is not int:
      iid = _int(iid, f, where + '.id')
    if type(fr) is not int:
      fr = _int(fr, f, where + '.frame_idx')
    if type(w) is not int:
      w = _int(w, f, where + '.width')
    if type(h) is not int:
      h = _int(h, f, where + '.height')
    if w <= 0 or h <= 0:
      raise AnnotationError(f'{f}: {where}: image size {w}x{h} (width x height) must be '
                            'positive')
    self.img['id'].append(iid)
    self.img['width'].append(w)
    self.img['height'].append(h)
    self.img['frame'].append(fr)
    # Few distinct ids: normalise each raw value once.
    code = self._raw_codes.get((type(cap), cap, 'capture'))
    if code is None:
      code = self.captures(_id_key(cap, f, where + '.capture'))
      self._raw_codes[(type(cap), cap, 'capture')] = code
    self.img['capture'].append(code)
    code = self._raw_codes.get((type(camid), camid, 'camera'))
    if code is None:
      code = self.cams(_id_key(camid, f, where + '.camera'))
      self._raw_codes[(type(camid), camid, 'camera')] = code
    self.img['camera'].append(code)
    self.img['seq'].append(self.seqs(str(seq)))
    if not isinstance(fn, str) or not fn:
      raise AnnotationError(f'{f}: {where}.file_name: expected a path, got {fn!r}')
    self.file_names.append(fn)

  def add_annotation(self, rec):
    i = len(self.ann['id'])
    try:
      aid, iid, bbox, jv = rec['id'], rec['image_id'], rec['bbox'], rec['joint_valid']
      hand_type, htv = rec['hand_type'], rec['hand_type_valid']
    except (KeyError, TypeError):
      self._require(rec, self.ANNOT_KEYS, f'annotations[{i}]')
    where = _where('annotations', i, rec)
    f = self.file
    self.ann['id'].append(aid if type(aid) is int else _int(aid, f, where + '.id'))
    self.ann['image_id'].append(iid if type(iid) is int else _int(iid, f, where + '.image_id'))
    self.bbox.extend(_numbers(bbox, 4, f, where + '.bbox'))
    self.joint_valid.extend(_numbers(jv, NUM_JOINTS, f, where + '.joint_valid'))
    if hand_type not in HAND_TYPES:
      raise AnnotationError(f'{f}: {where}.hand_type: expected one of {HAND_TYPES}, '
                            f'got {hand_type!r}')
    self.ann['hand_type'].append(HAND_TYPES.index(hand_type))
    self.ann['hand_type_valid'].append(
        htv if type(htv) is int else _int(htv, f, where + '.hand_type_valid'))

  def finish(self):
    f = self.file
    if not self.file_names:
      raise AnnotationError(f"{f}: no 'images' (missing key or empty list)")
    if not len(self.ann['id']):
      raise AnnotationError(f"{f}: no 'annotations' (missing key or empty list)")
    images = {k: np.frombuffer(v, np.int64).copy() for k, v in self.img.items()}
    annots = {k: np.frombuffer(v, np.int64).copy() for k, v in self.ann.items()}
    annots['bbox'] = np.frombuffer(self.bbox, np.float64).reshape(-1, 4).copy()
    annots['joint_valid'] = np.frombuffer(self.joint_valid, np.float64).reshape(
        -1, NUM_JOINTS).astype(np.float32)
    for key in ('bbox', 'joint_valid'):
      bad = np.nonzero(~np.isfinite(annots[key]).all(-1))[0]
      if len(bad):
        raise AnnotationError(f'{f}: annotations[{bad[0]}] (id {annots["id"][bad[0]]}).{key}: '
                              'contains NaN or Inf')
    blob = [s.encode('utf-8') for s in self.file_names]
    images['name_offsets'] = np.cumsum([0] + [len(b) for b in blob]).astype(np.int64)
    images['name_blob'] = np.frombuffer(b''.join(blob), np.uint8)
    names = dict(captures=self.captures.names, seqs=self.seqs.names, cameras=self.cams.names)
    return images, annots, names


def _read_data_json(path, progress):
  """Streams data.json into column arrays (images and annotations)."""
  cols = _DataColumns(os.path.basename(path))
  bar = tqdm(total=os.path.getsize(path), unit='B', unit_scale=True,
             desc=f'index {cols.file}', disable=not progress)
  try:
    for key, rec in jsonstream.iter_members(path, expand=('images', 'annotations'),
                                            on_progress=bar.update):
      if key == 'images':
        cols.add_image(rec)
      elif key == 'annotations':
        cols.add_annotation(rec)
  finally:
    bar.close()
  return cols.finish()


def _unique_rows(keys):
  """(N, k) int64 -> (unique rows (U, k), inverse (N,))."""
  uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
  return uniq, inverse.reshape(-1)


def _join(images, annots, file):
  """Image row of each annotation; checks the ids are unique and present."""
  order = np.argsort(images['id'], kind='stable')
  ids = images['id'][order]
  dup = ids[1:][ids[1:] == ids[:-1]]
  if len(dup):
    raise AnnotationError(f'{file}: images: duplicate id {int(dup[0])}')
  aids = np.sort(annots['id'])
  dup = aids[1:][aids[1:] == aids[:-1]]
  if len(dup):
    raise AnnotationError(f'{file}: annotations: duplicate id {int(dup[0])}')
  pos = np.minimum(np.searchsorted(ids, annots['image_id']), len(ids) - 1)
  bad = np.nonzero(ids[pos] != annots['image_id'])[0]
  if len(bad):
    k = bad[0]
    raise AnnotationError(f'{file}: annotations (id {int(annots["id"][k])}): image_id '
                          f'{int(annots["image_id"][k])} is not in images')
  return order[pos]


def _read_cameras(path, cam_keys, names):
  """camera.json -> campos (C, 3) mm, camrot (C, 3, 3), focal, princpt (C, 2)."""
  name = os.path.basename(path)
  try:
    with open(path, 'r', encoding='utf-8') as fh:
      data = json.load(fh)
  except json.JSONDecodeError as e:
    raise AnnotationError(f'{name}: invalid JSON: {e}') from None
  if not isinstance(data, dict):
    raise AnnotationError(f'{name}: expected an object keyed by capture id')
  by_capture = {_id_key(k, name, 'capture key'): v for k, v in data.items()}
  out = {k: np.zeros((len(cam_keys),) + s) for k, s in
         (('campos', (3,)), ('camrot', (3, 3)), ('focal', (2,)), ('princpt', (2,)))}
  for row, (cap_code, cam_code) in enumerate(cam_keys):
    cap, camid = names['captures'][cap_code], names['cameras'][cam_code]
    if cap not in by_capture:
      raise AnnotationError(f'{name}: capture {cap!r} (used in data.json) is missing')
    entry = by_capture[cap]
    for key, arr in out.items():
      where = f'[{cap!r}][{key!r}]'
      table = _field(entry, key, name, f'[{cap!r}]')
      if not isinstance(table, dict):
        raise AnnotationError(f'{name}: {where}: expected an object keyed by camera id')
      table = {_id_key(k, name, where): v for k, v in table.items()}
      if camid not in table:
        raise AnnotationError(f'{name}: {where}: camera {camid!r} (used in data.json) '
                              'is missing')
      arr[row] = _floats(table[camid], arr.shape[1:], name, f'{where}[{camid!r}]')
    err = cam_lib.rotation_error(out['camrot'][row])
    if err > cam_lib.ROTATION_TOL:
      raise AnnotationError(f'{name}: [{cap!r}][\'camrot\'][{camid!r}] is not a rotation '
                            f'(max |R R^T - I| = {err:.3g}, det = '
                            f'{np.linalg.det(out["camrot"][row]):.3g})')
    if np.any(out['focal'][row] <= 0):
      raise AnnotationError(f'{name}: [{cap!r}][\'focal\'][{camid!r}] must be positive')
  return out


def _frames_by_capture(frame_keys, names):
  """{capture str: (frame ids (n,), frame rows (n,))} of the frames data.json uses."""
  out = {}
  for cap_code in np.unique(frame_keys[:, 0]):
    rows = np.nonzero(frame_keys[:, 0] == cap_code)[0]
    out[names['captures'][cap_code]] = (frame_keys[rows, 1], rows)
  return out


def _stream_captures(path, needed, progress, *, required):
  """Yields (capture, {frame str: entry}) for the captures in `needed`.

  required: every needed capture must be in the file (joint_3d), else a
  capture may be absent (MANO fits do not cover everything).
  """
  name = os.path.basename(path)
  seen = set()
  bar = tqdm(total=os.path.getsize(path), unit='B', unit_scale=True,
             desc=f'index {name}', disable=not progress)
  try:
    for key, frames in jsonstream.iter_members(path, on_progress=bar.update):
      cap = _id_key(key, name, 'capture key')
      if cap not in needed:
        continue
      if not isinstance(frames, dict):
        raise AnnotationError(f'{name}: [{key!r}]: expected an object keyed by frame')
      seen.add(cap)
      yield cap, {_id_key(k, name, f'[{key!r}] frame key'): v for k, v in frames.items()}
  finally:
    bar.close()
  missing = sorted(set(needed) - seen)
  if missing and required:
    raise AnnotationError(f'{name}: capture {missing[0]!r} (used in data.json) is missing')


def _read_joint_3d(path, frames_by_cap, n_frames, progress):
  """joint_3d.json -> world joints (F, 42, 3) mm and their joint_valid (F, 42)
  of the needed frames."""
  name = os.path.basename(path)
  world = np.zeros((n_frames, NUM_JOINTS, 3))
  valid = np.zeros((n_frames, NUM_JOINTS), np.float32)
  for cap, frames in _stream_captures(path, frames_by_cap, progress, required=True):
    for fid, row in zip(*frames_by_cap[cap]):
      entry = frames.get(str(fid))
      if entry is None:
        raise AnnotationError(f'{name}: [{cap!r}]: frame {str(fid)!r} (used in data.json) '
                              'is missing')
      where = f'[{cap!r}][{str(fid)!r}]'
      world[row] = _floats(_field(entry, 'world_coord', name, where), (NUM_JOINTS, 3),
                           name, where + "['world_coord']")
      valid[row] = _numbers(_field(entry, 'joint_valid', name, where), NUM_JOINTS, name,
                            where + "['joint_valid']")
  return world, valid


def _read_mano(path, frames_by_cap, n_frames, progress):
  """MANO_NeuralAnnot.json -> params (F, 2, 61) [pose|shape|trans], valid (F, 2)."""
  name = os.path.basename(path)
  params = np.zeros((n_frames, 2, _MANO_DIM))
  valid = np.zeros((n_frames, 2), bool)
  for cap, frames in _stream_captures(path, frames_by_cap, progress, required=False):
    for fid, row in zip(*frames_by_cap[cap]):
      entry = frames.get(str(fid))
      if entry is None:
        continue      # no fit for this frame: both hands None, counted later
      where = f'[{cap!r}][{str(fid)!r}]'
      if not isinstance(entry, dict):
        raise AnnotationError(f'{name}: {where}: expected an object with right/left')
      for k, side in enumerate(SIDES):
        fit = entry.get(side)
        if fit is None:
          continue
        parts = [_floats(_field(fit, key, name, f'{where}[{side!r}]'), (n,), name,
                         f'{where}[{side!r}][{key!r}]') for key, n in MANO_SIZES]
        params[row, k] = np.concatenate(parts)
        valid[row, k] = True
  return params, valid


def build_index(root: str, split: str, *, progress: bool = True) -> dict:
  """Streams the four annotation files into flat arrays plus string tables."""
  files = annotation_files(root, split)
  for path in files.values():
    if not os.path.isfile(path):
      raise FileNotFoundError(f'InterHand2.6M {split}: annotation file {path} not found')
  data_name = os.path.basename(files['data'])
  images, annots, names = _read_data_json(files['data'], progress)
  annots['image_row'] = _join(images, annots, data_name)
  frame_keys, images['frame_row'] = _unique_rows(
      np.stack([images['capture'], images['frame']], -1))
  cam_keys, images['cam_row'] = _unique_rows(np.stack([images['capture'], images['camera']], -1))
  cams = _read_cameras(files['camera'], cam_keys, names)
  frames_by_cap = _frames_by_capture(frame_keys, names)
  world, world_valid = _read_joint_3d(files['joint_3d'], frames_by_cap, len(frame_keys),
                                      progress)
  mano, mano_valid = _read_mano(files['MANO_NeuralAnnot'], frames_by_cap, len(frame_keys),
                                progress)
  arrays = {f'image_{k}': v for k, v in images.items()}
  arrays.update({f'annot_{k}': v for k, v in annots.items()})
  arrays.update({f'cam_{k}': v for k, v in cams.items()})
  arrays.update(frame_world=world, frame_joint_valid=world_valid, frame_mano=mano,
                frame_mano_valid=mano_valid)
  return {'arrays': arrays, 'names': names}


# ----------------------------------------------------------------------------
# The on-disk cache of the index.

def _source_stamp(root, split):
  """Sizes and mtimes of the annotation files: a changed file rebuilds the index."""
  stamp = {'version': _INDEX_VERSION}
  for key, path in annotation_files(root, split).items():
    st = os.stat(path)
    stamp[key] = [st.st_size, st.st_mtime_ns]
  return stamp


def cache_places(local: str, tag: str, cache_dir: Optional[str] = None) -> list:
  """Where a reader's index cache may live, in order of preference: `local`
  (beside the data) then ~/.cache/a2p_jax/<tag>; only <cache_dir>/<tag>
  when cache_dir is given. Shared by every reader with an index cache."""
  if cache_dir is not None:
    return [os.path.join(cache_dir, tag)]
  return [local, os.path.join(os.path.expanduser('~/.cache/a2p_jax'), tag)]


def path_tag(prefix: str, folder: str) -> str:
  """'<prefix>_<16 hex digits of the folder's absolute path>': a cache name
  that tells apart data sets in different folders."""
  return f'{prefix}_{hashlib.sha1(os.path.abspath(folder).encode()).hexdigest()[:16]}'


def _cache_dirs(root, split, cache_dir):
  ann_dir = os.path.abspath(os.path.join(root, 'annotations', split))
  return cache_places(os.path.join(ann_dir, '.a2p_jax_index'),
                      path_tag(f'interhand26m_{split}', ann_dir), cache_dir)


def _load_cached(path, stamp):
  meta_path = os.path.join(path, 'meta.json')
  try:
    with open(meta_path) as fh:
      meta = json.load(fh)
  except (OSError, ValueError):
    return None
  if meta.get('stamp') != stamp:
    return None
  try:
    arrays = {k: np.load(os.path.join(path, k + '.npy'), mmap_mode='r')
              for k in meta['arrays']}
  except (OSError, ValueError) as e:
    log.warning('index cache %s unreadable (%s); rebuilding', path, e)
    return None
  return {'arrays': arrays, 'names': meta['names'], 'path': path}


def _save(path, index, stamp):
  """Writes the index atomically (a temp dir renamed into place)."""
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.tmp_index_', dir=parent)
  for k, v in index['arrays'].items():
    np.save(os.path.join(tmp, k + '.npy'), np.ascontiguousarray(v))
  with open(os.path.join(tmp, 'meta.json'), 'w') as fh:
    json.dump({'stamp': stamp, 'names': index['names'],
               'arrays': sorted(index['arrays'])}, fh)
  if os.path.isdir(path):
    # A stale index: move it aside first (rename is atomic), then delete it.
    old = tempfile.mkdtemp(prefix='.old_index_', dir=parent)
    os.replace(path, os.path.join(old, 'index'))
    shutil.rmtree(old, ignore_errors=True)
  try:
    os.replace(tmp, path)
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def cached_index(places, stamp, build: Callable[[], dict], *, what: str,
                 accept: Optional[Callable[[dict], bool]] = None) -> dict:
  """A reader's index {'arrays', 'names', 'path', 'stamp'}: memory-mapped from
  the first place in `places` holding an up-to-date cache (its meta.json
  stamp == `stamp`), else `build()` saved to the first place that can be
  written (a read-only data folder, or another process wrote it first: then
  that copy is used) and mapped from there. 'path' and 'stamp' are None when
  nothing could be cached. accept(found) False rejects a found cache (it is
  rebuilt) and ends the search."""
  for path in places:
    found = _load_cached(path, stamp)
    if found is None:
      continue
    if accept is None or accept(found):
      return dict(found, stamp=stamp)
    break
  index = build()
  for path in places:
    try:
      _save(path, index, stamp)
    except OSError as e:
      log.info('cannot write the %s index cache at %s (%s)', what, path, e)
    found = _load_cached(path, stamp)
    if found is not None:
      return dict(found, stamp=stamp)
  return dict(index, path=None, stamp=None)


class MappedIndex:
  """Pickling for a reader whose index arrays (`_arrays`) are memory-mapped
  from a cache (`_index_path`, `_stamp`, from `cached_index`): a worker
  process maps the cache again instead of receiving a copy, and reloads
  hand models (`_models`) itself. A cache that changed or vanished since the
  reader was opened is an error."""

  def __getstate__(self):
    state = dict(self.__dict__)
    if '_models' in state:
      state['_models'] = None
    if self._index_path is not None:
      state['_arrays'] = None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    if self._arrays is None:
      found = _load_cached(self._index_path, self._stamp)
      if found is None:
        raise AnnotationError(f'{type(self).__name__}: the index cache {self._index_path} '
                              'changed or vanished since the data set was opened')
      self._arrays = found['arrays']


def load_index(root, split, *, cache=True, cache_dir=None, progress=True):
  """The index from its cache when up to date, else built (and cached)."""
  build = lambda: build_index(root, split, progress=progress)
  if not cache:
    return dict(build(), path=None, stamp=None)
  return cached_index(_cache_dirs(root, split, cache_dir), _source_stamp(root, split), build,
                      what='InterHand2.6M')


# ----------------------------------------------------------------------------
# Subsets and image checks.

def read_subset(subset) -> np.ndarray:
  """Annotation ids from a file (one per line, '#' comments) or an iterable."""
  if isinstance(subset, (str, os.PathLike)):
    ids = []
    with open(subset, 'r', encoding='utf-8') as fh:
      for n, line in enumerate(fh, 1):
        text = line.split('#', 1)[0].strip()
        if not text:
          continue
        try:
          ids.append(int(text))
        except ValueError:
          raise AnnotationError(f'{subset}: line {n}: expected an annotation id, '
                                f'got {line.strip()!r}') from None
    return np.asarray(ids, np.int64)
  return np.asarray([int(x) for x in subset], np.int64)


def _file_name(arrays, image_row):
  off = arrays['image_name_offsets']
  return bytes(arrays['image_name_blob'][off[image_row]:off[image_row + 1]]).decode('utf-8')


def _missing_images(image_dir, arrays, image_rows):
  """Mask over `image_rows`: True where the image file does not exist."""
  names = [_file_name(arrays, r) for r in image_rows]
  by_dir = {}
  for k, name in enumerate(names):
    d, base = os.path.split(name)
    by_dir.setdefault(d, []).append((k, base))
  missing = np.zeros(len(names), bool)
  # One listdir per camera folder instead of a stat per image.
  for d, entries in by_dir.items():
    try:
      present = set(os.listdir(os.path.join(image_dir, d)))
    except OSError:
      present = set()
    for k, base in entries:
      missing[k] = base not in present
  return missing


# ----------------------------------------------------------------------------
# The data set.

class InterHand26M(MappedIndex):
  """InterHand2.6M (or the synthetic set) as a sequence of camera-space examples.

  root: the folder with images/ and annotations/. split: 'train'|'val'|'test'.
  mano_dir: folder with MANO_RIGHT.pkl / MANO_LEFT.pkl (None: the procedural
  hand, NOT MANO, right only for the synthetic set). subset: a file of
  annotation ids (InterWild's aid_human_annot_{split}.txt) or an iterable.
  strict: raise on a missing image or a subset id not in the annotations
  instead of skipping it (skips are logged and counted in `summary`).
  check_images: look for the image files (one listdir per camera folder).
  cache / cache_dir: keep the streamed index as .npy files (default beside
  the annotations, else ~/.cache/a2p_jax).
  """

  def __init__(self, root: str, split: str, *, mano_dir: Optional[str] = None,
               subset: Union[None, str, Iterable[int]] = None, strict: bool = False,
               check_images: bool = True, cache: bool = True,
               cache_dir: Optional[str] = None, progress: bool = True):
    if split not in SPLITS:
      raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    self.root, self.split, self.mano_dir = root, split, mano_dir
    self._image_dir = os.path.join(root, 'images', split)
    index = load_index(root, split, cache=cache, cache_dir=cache_dir, progress=progress)
    self._arrays, self._names, self._index_path = index['arrays'], index['names'], index['path']
    self._stamp = index['stamp']
    rows = np.arange(len(self._arrays['annot_id']))
    summary = {'annotations': len(rows)}
    if subset is not None:
      rows, summary['subset_ids_not_found'] = self._select(rows, read_subset(subset), strict)
      summary['in_subset'] = len(rows)
    summary['missing_images'] = 0
    if check_images:
      image_rows = self._arrays['annot_image_row'][rows]
      missing = _missing_images(self._image_dir, self._arrays, image_rows)
      summary['missing_images'] = int(missing.sum())
      if missing.any():
        first = os.path.join(self._image_dir, _file_name(self._arrays, image_rows[missing][0]))
        if strict:
          raise FileNotFoundError(f'InterHand2.6M {split}: {missing.sum()} image files are '
                                  f'missing, e.g. {first}')
        log.warning('InterHand2.6M %s: skipping %d annotations whose image is missing, '
                    'e.g. %s', split, missing.sum(), first)
        rows = rows[~missing]
    frame_rows = self._arrays['image_frame_row'][self._arrays['annot_image_row'][rows]]
    summary['without_mano_fit'] = int(
        (~np.asarray(self._arrays['frame_mano_valid'])[frame_rows].any(-1)).sum())
    summary['examples'] = len(rows)
    self._rows = rows
    self.summary = summary
    log.info('InterHand2.6M %s: %s', split, summary)
    self._models = None

  def _select(self, rows, ids, strict):
    aid = np.asarray(self._arrays['annot_id'])
    keep = np.isin(aid[rows], ids)
    not_found = np.setdiff1d(ids, aid)
    if len(not_found):
      msg = (f'InterHand2.6M {self.split}: {len(not_found)} subset ids are not in the '
             f'annotations, e.g. {int(not_found[0])}')
      if strict:
        raise AnnotationError(msg)
      log.warning(msg)
    return rows[keep], int(len(not_found))

  def _hand_models(self):
    if self._models is None:
      if self.mano_dir is None and not os.path.exists(
          os.path.join(self.root, 'synthetic_config.json')):
        # The wrist joint of the fit's shape comes from the model: the
        # procedural hand's is not MANO's, so real fits would move wrongly.
        log.warning('InterHand2.6M: no mano_dir, so camera-space MANO fits use the '
                    'procedural hand (NOT MANO); pass mano_dir for real InterHand2.6M')
      self._models = load_hand_models(self.mano_dir)
    return self._models

  def __len__(self) -> int:
    return len(self._rows)

  @property
  def annot_ids(self) -> np.ndarray:
    """int64 (N,) annotation ids in example order, from the index alone."""
    return np.asarray(self._arrays['annot_id'], np.int64)[self._rows]

  def __getitem__(self, i: int) -> dict:
    n = len(self._rows)
    if not -n <= i < n:
      raise IndexError(f'index {i} out of range for {n} examples')
    a = self._arrays
    row = int(self._rows[i])
    img = int(a['annot_image_row'][row])
    frame = int(a['image_frame_row'][img])
    cam = int(a['image_cam_row'][img])
    campos = np.array(a['cam_campos'][cam])
    camrot = np.array(a['cam_camrot'][cam])
    mano = {}
    models = None
    for k, side in enumerate(SIDES):
      if not a['frame_mano_valid'][frame, k]:
        mano[side] = None
        continue
      if models is None:
        models = self._hand_models()
      p = np.array(a['frame_mano'][frame, k])
      pose, shape, trans = p[:48], p[48:58], p[58:]
      j0 = cam_lib.root_joint(models[k], shape)
      pose, trans = cam_lib.mano_fit_to_camera(pose, trans, j0, campos, camrot)
      mano[side] = {'pose': pose, 'shape': shape, 'trans': trans}
    capture = self._names['captures'][int(a['image_capture'][img])]
    return {
        'image_path': os.path.join(self._image_dir, _file_name(a, img)),
        'joints_cam': cam_lib.world_to_camera(a['frame_world'][frame], campos, camrot),
        'joint_valid': np.array(a['annot_joint_valid'][row]),
        'joint_valid_3d': np.array(a['frame_joint_valid'][frame]),
        'hand_type': HAND_TYPES[int(a['annot_hand_type'][row])],
        'hand_type_valid': int(a['annot_hand_type_valid'][row]),
        'bbox': np.array(a['annot_bbox'][row]),
        'camera': {'focal': np.array(a['cam_focal'][cam]),
                   'princpt': np.array(a['cam_princpt'][cam])},
        'mano': mano,
        'annot_id': int(a['annot_id'][row]),
        'image_id': int(a['image_id'][img]),
        'capture': int(capture) if capture.lstrip('-').isdigit() else capture,
        'seq_name': self._names['seqs'][int(a['image_seq'][img])],
        'camera_id': self._names['cameras'][int(a['image_camera'][img])],
        'frame_idx': int(a['image_frame'][img]),
        'image_size': (int(a['image_height'][img]), int(a['image_width'][img])),
    }
