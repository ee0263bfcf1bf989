"""COCO-WholeBody v1.0 hands reader, as InterWild reads it (2D keypoints,
hand boxes, NeuralAnnot pseudo-GT MANO fits).

    ds = COCOWholeBody('/data/MSCOCO', 'train')
    ex = ds[0]

Layout read (InterWild README "Data" tree; COCO 2017 images, COCO-WholeBody
annotations, the NeuralAnnot file linked from InterWild's README):

    <root>/
      images/train2017/000000000009.jpg ...     COCO 2017 images
      images/val2017/000000000139.jpg ...
      annotations/coco_wholebody_train_v1.0.json
      annotations/coco_wholebody_val_v1.0.json
      annotations/MSCOCO_train_MANO_NeuralAnnot.json    (train only)

coco_wholebody_{split}_v1.0.json (COCO-WholeBody data_format.md): COCO
keypoint format, 'images' [{id, file_name, width, height, ...}],
'annotations' [{id, image_id, iscrowd, num_keypoints, bbox [x, y, w, h] px
(the person), lefthand_kpts / righthand_kpts (21 x [x, y, v]) px,
lefthand_box / righthand_box [x, y, w, h] px, lefthand_valid /
righthand_valid (JSON bool; invalid hands are all zeros), ...}]. The hand
keypoint order is wrist, thumb1..4, forefinger1..4, middle1..4, ring1..4,
pinky1..4, each finger from its base (1) to its tip (4) (InterWild's
MSCOCO.py joints_name 'Wrist, Thumb_1..4, Index_1..4, ...'; COCO-WholeBody
hand dataset info). v is 0 (not labelled, x = y = 0), 1 or 2, or a float
confidence in (0, 1) for machine-labelled points; v > 0 counts as labelled
(data_format.md: "v>0 means that the keypoint is reliable"; MSCOCO.py:
`joint_img[:, 2] > 0`).

MSCOCO_train_MANO_NeuralAnnot.json (MSCOCO.py, common/utils/preprocessing.py
get_mano_data): {str(annotation id): {'right': fit | null, 'left': fit |
null}}, fit = {'mano_param': {'pose' (48,) rad axis-angle, 'shape' (10,),
'trans' (3,) m}, 'cam_param': {'focal' (2,), 'princpt' (2,) px}}. The fits
are already in camera space: InterWild runs MANO (smplx, flat_hand_mean=
False, left shapedirs fixed) on them and projects with the hand's own
focal/princpt, with no rotation or translation (cam_param has no R, t).
NeuralAnnot fitted each hand in its own crop with a fixed camera (focal
5000, princpt 128) and mapped that camera back to the full image
(mks0601/NeuralAnnot_RELEASE issue 14), so each hand has its own camera.

Which annotations are examples (InterWild's MSCOCO.load_data, exactly): not
`iscrowd`, `num_keypoints` != 0, `lefthand_valid` or `righthand_valid`
true, and a person box that survives `sanitize_bbox` in the image (w * h >
0 and, after clipping to the image, positive width and height). A hand is
present (hand_type) when its *_valid flag is true; its box counts
(`hand_bbox[side]`, InterWild's lhand_bbox/rhand_bbox) when the hand is
valid and its box survives `sanitize_bbox` too. Skipped annotations are
counted per rule in `ds.summary`.

Examples (the InterHand2.6M reader's schema plus 2D supervision):

  image_path     str, <root>/images/{split}2017/<file_name>
  image_size     (height, width) px;  image_id, annot_id  int
  hand_type      'right' | 'left' | 'interacting' from the *_valid flags;
                 hand_type_valid 1
  joints_img     (42, 2) float64 px, InterHand order (right 0-20, left 21-41;
                 per hand thumb4..1, index, middle, ring, pinky, wrist last)
  joints_img_valid (42,) float32, 1 where v > 0 (the hand's validity flag
                 is not applied, as in InterWild)
  joints_cam     (42, 3) zeros and joint_valid (42,) zeros: no 3D joints (and
                 so no relative root)
  hand_bbox      {'right': (4,) | None, 'left': ...} float64 [x, y, w, h] px,
                 InterWild's sanitised box: x, y clipped to >= 0, the far
                 corner to the last pixel, w, h = (far - near), i.e. one
                 pixel less than the file's w, h inside the image
  bbox           (4,) float64 [x, y, w, h] px: the union of the hand boxes
                 that count, else the person box (sanitised)
  body_bbox      (4,) float64 the file's person box [x, y, w, h] px
  mano           {'right': {'pose' (48,), 'shape' (10,), 'trans' (3,) m,
                  'camera': {'focal' (2,), 'princpt' (2,)} px} | None,
                  'left': ...}: the NeuralAnnot fit as is (camera space,
                 OpenCV axes, flat_hand_mean=False; left hand: the model with
                 the shapedirs fix, i.e. `load_hand_models`), each with the
                 camera it was fitted in. None without an entry (every val
                 annotation: InterWild reads no fits for val).
  camera         {'focal' (2,), 'princpt' (2,)} float64 px: the right fit's
                 camera when there is a right fit, else the left fit's
                 (the two differ: project the other hand with its own
                 mano[side]['camera']); camera_valid 1. Without any fit a
                 nominal camera of ours, focal (max(H, W),) * 2 and princpt
                 the image centre ((W - 1) / 2, (H - 1) / 2), camera_valid 0.

Precision: keypoints and fits are kept as float32 in the index, the
precision InterWild reads them in (np.float32, torch.FloatTensor); hand and
person boxes and cameras as float64.

Memory: the train annotation file is ~1.4 GB of JSON. The index is built by
streaming it (`jsonstream`, one image or annotation record at a time) into
flat numpy arrays (~0.5 KB per example plus ~0.3 KB per fitted hand),
cached as .npy files beside the annotations (else ~/.cache/a2p_jax) and
memory-mapped on later runs; the cache is rebuilt when a source file's size
or mtime changes. benchmarks/coco_index_memory.py, 200k annotations (832 MB
+ 164 MB of JSON): first run 42 s and +193 MB peak RSS, cached run 0.01 s.

Errors: a missing or wrongly typed key, a wrong shape or NaN raise
AnnotationError naming the file and the key; a missing annotation file raises
MissingFileError (an AnnotationError and a FileNotFoundError) naming it. Missing
image files are skipped, counted and logged (`ds.summary`), or raise with
strict=True.
"""

import array
import logging
import os
from typing import Optional

import numpy as np
from tqdm import tqdm

from a2p_jax.data import jsonstream
from a2p_jax.data.interhand26m import (AnnotationError, NUM_JOINTS, SIDES, _field,
                                       _file_name, _int, _join, _numbers,
                                       _where, MappedIndex, cache_places, cached_index,
                                       path_tag)
from mano_jax.joints import INTERHAND_NAMES, OPENPOSE_NAMES

log = logging.getLogger(__name__)

SPLITS = ('train', 'val')
_INDEX_VERSION = 1
_HAND_KPTS = 21 * 3
# COCO-WholeBody's hand order is OpenPose's (wrist, then each finger base to
# tip): the COCO keypoint index of each InterHand-order joint.
COCO_TO_INTERHAND = np.array([OPENPOSE_NAMES.index(n) for n in INTERHAND_NAMES], np.int64)
_SKIP_RULES = ('crowd', 'no_keypoints', 'no_valid_hand', 'bad_person_box')


class MissingFileError(AnnotationError, FileNotFoundError):
  """An annotation file is missing (both an AnnotationError and a FileNotFoundError)."""


def annotation_files(root: str, split: str) -> dict:
  """{'wholebody': path, 'mano': path (train) or None (val)}."""
  ann = os.path.join(root, 'annotations')
  mano = os.path.join(ann, 'MSCOCO_train_MANO_NeuralAnnot.json') if split == 'train' else None
  return {'wholebody': os.path.join(ann, f'coco_wholebody_{split}_v1.0.json'), 'mano': mano}


def sanitize_boxes(xywh, width, height):
  """InterWild's sanitize_bbox, vectorised: ([x, y, w, h] boxes, ok mask).

  xywh (..., 4); width, height broadcastable to xywh[..., 0] (px).
  """
  x, y, w, h = np.moveaxis(np.asarray(xywh, np.float64), -1, 0)
  x1, y1 = np.maximum(0.0, x), np.maximum(0.0, y)
  x2 = np.minimum(width - 1.0, x1 + np.maximum(0.0, w - 1.0))
  y2 = np.minimum(height - 1.0, y1 + np.maximum(0.0, h - 1.0))
  ok = (w * h > 0) & (x2 > x1) & (y2 > y1)
  return np.stack([x1, y1, x2 - x1, y2 - y1], -1), ok


# ----------------------------------------------------------------------------
# Streaming the annotation file.

def _flag(value, file, where):
  """A *_valid flag: JSON bool (0/1 accepted)."""
  if isinstance(value, bool):
    return value
  if type(value) is int and value in (0, 1):
    return bool(value)
  raise AnnotationError(f'{file}: {where}: expected true or false, got {value!r}')


class _WholeBodyColumns:
  """The annotation file as flat columns, filled record by record."""

  def __init__(self, file):
    self.file = file
    self.img_id, self.img_w, self.img_h = (array.array('q') for _ in range(3))
    self.names = []
    self.aid, self.image_id = array.array('q'), array.array('q')
    self.hand_valid = array.array('b')                   # right, left
    self.boxes = array.array('d')                        # person, right, left
    self.kpts = array.array('f')                         # right 63, left 63
    self.seen = 0
    self.skipped = dict.fromkeys(_SKIP_RULES, 0)

  def add_image(self, rec):
    where = _where('images', len(self.names), rec)
    f = self.file
    iid, w, h = (_field(rec, k, f, where) for k in ('id', 'width', 'height'))
    name = _field(rec, 'file_name', f, where)
    w = w if type(w) is int else _int(w, f, where + '.width')
    h = h if type(h) is int else _int(h, f, where + '.height')
    if w <= 0 or h <= 0:
      raise AnnotationError(f'{f}: {where}: image size {w}x{h} (width x height) must be '
                            'positive')
    if not isinstance(name, str) or not name:
      raise AnnotationError(f'{f}: {where}.file_name: expected a file name, got {name!r}')
    self.img_id.append(iid if type(iid) is int else _int(iid, f, where + '.id'))
    self.img_w.append(w)
    self.img_h.append(h)
    self.names.append(name)

  def add_annotation(self, rec):
    where = _where('annotations', self.seen, rec)
    self.seen += 1
    f = self.file
    # InterWild's order of checks: crowd, labelled body keypoints, a valid hand.
    if _int(_field(rec, 'iscrowd', f, where), f, where + '.iscrowd'):
      self.skipped['crowd'] += 1
      return
    if _int(_field(rec, 'num_keypoints', f, where), f, where + '.num_keypoints') == 0:
      self.skipped['no_keypoints'] += 1
      return
    valid = [_flag(_field(rec, f'{s}hand_valid', f, where), f, f'{where}.{s}hand_valid')
             for s in SIDES]
    if not any(valid):
      self.skipped['no_valid_hand'] += 1
      return
    aid, iid = _field(rec, 'id', f, where), _field(rec, 'image_id', f, where)
    boxes = [_numbers(_field(rec, key, f, where), 4, f, f'{where}.{key}')
             for key in ('bbox', 'righthand_box', 'lefthand_box')]
    for side in SIDES:
      key = f'{side}hand_kpts'
      _append_numbers(self.kpts, _field(rec, key, f, where), _HAND_KPTS, f, f'{where}.{key}')
    self.aid.append(aid if type(aid) is int else _int(aid, f, where + '.id'))
    self.image_id.append(iid if type(iid) is int else _int(iid, f, where + '.image_id'))
    self.hand_valid.extend(valid)
    for box in boxes:
      self.boxes.extend(box)

  def finish(self):
    """(images, annots) dicts of arrays; annots filtered by the person-box rule."""
    f = self.file
    if not self.names:
      raise AnnotationError(f"{f}: no 'images' (missing key or empty list)")
    if not self.seen:
      raise AnnotationError(f"{f}: no 'annotations' (missing key or empty list)")
    images = {'id': np.frombuffer(self.img_id, np.int64),
              'width': np.frombuffer(self.img_w, np.int64),
              'height': np.frombuffer(self.img_h, np.int64)}
    blob = [s.encode('utf-8') for s in self.names]
    images['name_offsets'] = np.cumsum([0] + [len(b) for b in blob]).astype(np.int64)
    images['name_blob'] = np.frombuffer(b''.join(blob), np.uint8)
    n = len(self.aid)
    annots = {'id': np.frombuffer(self.aid, np.int64),
              'image_id': np.frombuffer(self.image_id, np.int64)}
    boxes = np.frombuffer(self.boxes, np.float64).reshape(n, 3, 4)
    kpts = np.frombuffer(self.kpts, np.float32).reshape(n, 2, 21, 3)
    for key, arr in (('bbox / righthand_box / lefthand_box', boxes),
                     ('righthand_kpts / lefthand_kpts', kpts)):
      bad = np.nonzero(~np.isfinite(arr).all(axis=tuple(range(1, arr.ndim))))[0]
      if len(bad):
        raise AnnotationError(f'{f}: annotation id {annots["id"][bad[0]]}: {key}: contains '
                              'NaN or Inf')
    image_row = _join(images, annots, f)
    width = images['width'][image_row].astype(np.float64)
    height = images['height'][image_row].astype(np.float64)
    _, person_ok = sanitize_boxes(boxes[:, 0], width, height)
    self.skipped['bad_person_box'] = int((~person_ok).sum())
    hand_box, hand_ok = sanitize_boxes(boxes[:, 1:], width[:, None], height[:, None])
    hand_valid = np.frombuffer(self.hand_valid, np.int8).reshape(n, 2).astype(bool)
    box_ok = hand_ok & hand_valid
    keep = np.nonzero(person_ok)[0]
    annots = {k: v[keep] for k, v in annots.items()}
    annots.update(
        image_row=image_row[keep], body_bbox=boxes[keep, 0], hand_valid=hand_valid[keep],
        hand_bbox=np.where(box_ok[..., None], hand_box, 0.0)[keep], hand_bbox_valid=box_ok[keep])
    annots['joints_img'], annots['joints_img_valid'] = _interhand_order(kpts, keep)
    return images, annots


def _interhand_order(kpts, keep, chunk=1 << 14):
  """(n, 2, 21, 3) [right, left] COCO-order keypoints -> the `keep` rows as
  (m, 42, 2) float32 px and (m, 42) bool (v > 0), InterHand order. In chunks,
  so memory peaks at the output plus one chunk."""
  xy = np.empty((len(keep), NUM_JOINTS, 2), np.float32)
  valid = np.empty((len(keep), NUM_JOINTS), bool)
  for s in range(0, len(keep), chunk):
    part = kpts[keep[s:s + chunk]][:, :, COCO_TO_INTERHAND]
    xy[s:s + chunk] = part[..., :2].reshape(-1, NUM_JOINTS, 2)
    valid[s:s + chunk] = part[..., 2].reshape(-1, NUM_JOINTS) > 0
  return xy, valid


def _stream(path, expand, progress):
  """(key, value) members of a JSON file, with a byte progress bar."""
  bar = tqdm(total=os.path.getsize(path), unit='B', unit_scale=True,
             desc=f'index {os.path.basename(path)}', disable=not progress)
  try:
    yield from jsonstream.iter_members(path, expand=expand, on_progress=bar.update)
  finally:
    bar.close()


def _read_wholebody(path, progress):
  cols = _WholeBodyColumns(os.path.basename(path))
  add = {'images': cols.add_image, 'annotations': cols.add_annotation}
  for key, rec in _stream(path, tuple(add), progress):
    if key in add:
      add[key](rec)
  images, annots = cols.finish()
  return images, annots, dict(cols.skipped, annotations=cols.seen)


def _append_numbers(out, value, n, file, where):
  """Appends a JSON list of n numbers to array `out` (NaN checked later)."""
  try:
    if type(value) is not list or len(value) != n:
      raise TypeError
    out.fromlist(value)
  except TypeError:
    _numbers(value, n, file, where)      # raises, saying what is wrong
    raise


_FIT_COLUMNS = {('mano_param', 'pose'): (0, 48), ('mano_param', 'shape'): (48, 58),
                ('mano_param', 'trans'): (58, 61), ('cam_param', 'focal'): (0, 2),
                ('cam_param', 'princpt'): (2, 4)}


def _check_fits(name, params, cams, aid, side):
  """NaN / Inf and non-positive focal lengths, named by annotation and key."""
  for (group, key), (lo, hi) in _FIT_COLUMNS.items():
    arr = (params if group == 'mano_param' else cams)[:, lo:hi]
    bad = ~np.isfinite(arr).all(-1)
    what = 'contains NaN or Inf'
    if key == 'focal' and not bad.any():
      bad, what = (arr <= 0).any(-1), 'must be positive'
    if bad.any():
      k = int(np.argmax(bad))
      raise AnnotationError(f"{name}: ['{aid[k]}'][{SIDES[side[k]]!r}][{group!r}][{key!r}]: "
                            f'{what}, got {arr[k].tolist()}')


def _read_mano(path, aids, progress):
  """NeuralAnnot fits of the annotations `aids` -> (row (N, 2) int32, -1 = no
  fit; params (M, 61) float32 [pose|shape|trans]; camera (M, 4) [focal|princpt];
  the number of entries of other annotations)."""
  name = os.path.basename(path)
  order = np.argsort(aids, kind='stable')
  sorted_aids = aids[order]
  fit_row = np.full((len(aids), 2), -1, np.int32)
  params, cams = array.array('f'), array.array('d')
  fit_aid, fit_side = array.array('q'), array.array('b')
  seen = np.zeros(len(aids), bool)
  unmatched = 0
  for key, entry in _stream(path, (), progress):
    try:
      aid = int(key)
    except ValueError:
      raise AnnotationError(f'{name}: key {key!r}: expected an annotation id') from None
    k = int(np.searchsorted(sorted_aids, aid))
    if k == len(aids) or sorted_aids[k] != aid:
      unmatched += 1        # a skipped annotation (crowd, no valid hand, ...)
      continue
    row = order[k]
    if seen[row]:
      raise AnnotationError(f'{name}: annotation id {aid} appears twice')
    seen[row] = True
    for s, side in enumerate(SIDES):
      where = f'[{key!r}][{side!r}]'
      fit = _field(entry, side, name, f'[{key!r}]')
      if fit is None:
        continue
      for (group, field), (lo, hi) in _FIT_COLUMNS.items():
        sub = _field(fit, group, name, where)
        _append_numbers(params if group == 'mano_param' else cams,
                        _field(sub, field, name, f'{where}[{group!r}]'), hi - lo, name,
                        f'{where}[{group!r}][{field!r}]')
      fit_row[row, s] = len(fit_aid)
      fit_aid.append(aid)
      fit_side.append(s)
  params = np.frombuffer(params, np.float32).reshape(-1, 61)
  cams = np.frombuffer(cams, np.float64).reshape(-1, 4)
  _check_fits(name, params, cams, fit_aid, fit_side)
  return fit_row, params, cams, unmatched


def _existing_files(root, split):
  files = annotation_files(root, split)
  for path in files.values():
    if path is not None and not os.path.isfile(path):
      raise MissingFileError(f'COCO-WholeBody {split}: annotation file {path} not found')
  return files


def build_index(root: str, split: str, *, progress: bool = True) -> dict:
  """Streams the annotation files into flat arrays ({'arrays', 'names'})."""
  files = _existing_files(root, split)
  images, annots, counts = _read_wholebody(files['wholebody'], progress)
  arrays = {f'image_{k}': v for k, v in images.items()}
  arrays.update({f'annot_{k}': v for k, v in annots.items()})
  counts['mano_entries_unmatched'] = 0
  if files['mano'] is not None:
    fit_row, params, cams, counts['mano_entries_unmatched'] = _read_mano(
        files['mano'], annots['id'], progress)
  else:
    fit_row = np.full((len(annots['id']), 2), -1, np.int32)
    params, cams = np.zeros((0, 61), np.float32), np.zeros((0, 4))
  arrays.update(annot_fit_row=fit_row, fit_params=params, fit_camera=cams)
  return {'arrays': arrays, 'names': {'counts': counts}}


# ----------------------------------------------------------------------------
# The index cache (interhand26m's .npy format and atomic writer).

def _stamp(root, split):
  stamp = {'version': _INDEX_VERSION, 'reader': 'coco_wholebody'}
  for key, path in annotation_files(root, split).items():
    if path is not None:
      st = os.stat(path)
      stamp[key] = [st.st_size, st.st_mtime_ns]
  return stamp


def _cache_candidates(root, split, cache_dir):
  ann_dir = os.path.abspath(os.path.join(root, 'annotations'))
  tag = f'coco_wholebody_{split}'
  return cache_places(os.path.join(ann_dir, '.a2p_jax_index', tag), path_tag(tag, ann_dir),
                      cache_dir)


def load_index(root, split, *, cache=True, cache_dir=None, progress=True) -> dict:
  """The index from the first up-to-date cache, else built and cached there
  (the first place that can be written); 'path' None when not cached."""
  build = lambda: build_index(root, split, progress=progress)
  if not cache:
    return dict(build(), path=None, stamp=None)
  _existing_files(root, split)
  return cached_index(_cache_candidates(root, split, cache_dir), _stamp(root, split), build,
                      what='COCO-WholeBody')


# ----------------------------------------------------------------------------
# The data set.

def _hand_type(valid_right, valid_left):
  if valid_right and valid_left:
    return 'interacting'
  return 'right' if valid_right else 'left'


class COCOWholeBody(MappedIndex):
  """COCO-WholeBody hands (train / val) as a sequence of examples (module doc).

  root: InterWild's data/MSCOCO folder (images/, annotations/). mano_dir:
  accepted like every reader's, but not needed: the NeuralAnnot fits are
  already in camera space, so no model is used. strict: raise on a missing
  image instead of a logged, counted skip. cache / cache_dir: keep the
  streamed index as .npy files (default beside the annotations, else
  ~/.cache/a2p_jax) and memory-map them on later runs.
  """

  def __init__(self, root: str, split: str, *, mano_dir: Optional[str] = None,
               strict: bool = False, cache: bool = True, cache_dir: Optional[str] = None,
               progress: bool = True):
    if split not in SPLITS:
      raise ValueError(f'COCO-WholeBody: split must be one of {SPLITS}, got {split!r}')
    self.root, self.split, self.mano_dir = root, split, mano_dir
    self._image_dir = os.path.join(root, 'images', f'{split}2017')
    index = load_index(root, split, cache=cache, cache_dir=cache_dir, progress=progress)
    self._arrays, self._index_path = index['arrays'], index['path']
    self._stamp = index['stamp']
    counts = index['names']['counts']
    a = self._arrays
    summary = {'annotations': counts['annotations']}
    summary.update({f'skipped_{k}': counts[k] for k in _SKIP_RULES})
    summary['in_index'] = len(a['annot_id'])
    missing, first = self._missing_images()
    summary['missing_images'] = int(missing.sum())
    if missing.any():
      if strict:
        raise FileNotFoundError(f'COCO-WholeBody {split}: {missing.sum()} image files are '
                                f'missing, e.g. {first}')
      log.warning('COCO-WholeBody %s: skipping %d annotations whose image is missing, e.g. '
                  '%s', split, missing.sum(), first)
    self._rows = np.nonzero(~missing)[0]
    fit_row = np.asarray(a['annot_fit_row'])[self._rows]
    summary['without_mano_fit'] = int((fit_row < 0).all(-1).sum())
    summary['mano_entries_unmatched'] = counts['mano_entries_unmatched']
    summary['examples'] = len(self._rows)
    self.summary = summary
    log.info('COCO-WholeBody %s: %s', split, summary)

  def _missing_images(self):
    """(mask over the index rows: image file absent, the first absent path)."""
    a = self._arrays
    rows, inverse = np.unique(np.asarray(a['annot_image_row']), return_inverse=True)
    try:
      present = set(os.listdir(self._image_dir))      # one listdir, not a stat per image
    except OSError:
      present = set()
    absent = np.array([_file_name(a, r) not in present for r in rows], bool)
    first = None
    if absent.any():
      first = os.path.join(self._image_dir, _file_name(a, rows[np.argmax(absent)]))
    return absent[inverse.reshape(-1)], first

  def __len__(self) -> int:
    return len(self._rows)

  @property
  def annot_ids(self) -> np.ndarray:
    """int64 (N,) annotation ids in example order, from the index alone."""
    return np.asarray(self._arrays['annot_id'], np.int64)[self._rows]

  def _fit(self, row, k):
    a = self._arrays
    f = int(a['annot_fit_row'][row, k])
    if f < 0:
      return None
    p = np.asarray(a['fit_params'][f], np.float64)
    c = np.asarray(a['fit_camera'][f], np.float64)
    return {'pose': p[:48], 'shape': p[48:58], 'trans': p[58:],
            'camera': {'focal': c[:2].copy(), 'princpt': c[2:].copy()}}

  def __getitem__(self, i: int) -> dict:
    n = len(self._rows)
    if not -n <= i < n:
      raise IndexError(f'index {i} out of range for {n} examples')
    a = self._arrays
    row = int(self._rows[i])
    img = int(a['annot_image_row'][row])
    height, width = int(a['image_height'][img]), int(a['image_width'][img])
    mano = {side: self._fit(row, k) for k, side in enumerate(SIDES)}
    fitted = [m for m in (mano['right'], mano['left']) if m is not None]
    if fitted:
      camera = {k: v.copy() for k, v in fitted[0]['camera'].items()}
    else:
      camera = {'focal': np.full(2, float(max(height, width))),
                'princpt': np.array([(width - 1) / 2.0, (height - 1) / 2.0])}
    valid = np.asarray(a['annot_hand_valid'][row])
    box_ok = np.asarray(a['annot_hand_bbox_valid'][row])
    boxes = np.asarray(a['annot_hand_bbox'][row], np.float64)
    hand_bbox = {side: boxes[k].copy() if box_ok[k] else None for k, side in enumerate(SIDES)}
    body = np.array(a['annot_body_bbox'][row], np.float64)
    if box_ok.any():
      lo = boxes[box_ok, :2].min(0)
      hi = (boxes[box_ok, :2] + boxes[box_ok, 2:]).max(0)
      bbox = np.concatenate([lo, hi - lo])
    else:
      bbox = sanitize_boxes(body, float(width), float(height))[0]
    return {
        'image_path': os.path.join(self._image_dir, _file_name(a, img)),
        'image_size': (height, width),
        'image_id': int(a['image_id'][img]),
        'annot_id': int(a['annot_id'][row]),
        'hand_type': _hand_type(bool(valid[0]), bool(valid[1])),
        'hand_type_valid': 1,
        'joints_cam': np.zeros((NUM_JOINTS, 3)),
        'joint_valid': np.zeros(NUM_JOINTS, np.float32),
        'joints_img': np.asarray(a['annot_joints_img'][row], np.float64),
        'joints_img_valid': np.asarray(a['annot_joints_img_valid'][row], np.float32),
        'bbox': bbox,
        'hand_bbox': hand_bbox,
        'body_bbox': body,
        'camera': camera,
        'camera_valid': int(bool(fitted)),
        'mano': mano,
    }
