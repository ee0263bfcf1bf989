"""HO-3D (v2 and v3) reader: right hands holding YCB objects, official layout.

    ds = HO3D('/data/HO3D_v3', 'train', mano_dir='/data/mano')
    ex = ds[0]

Layout read (the release as downloaded, shreyashampali/ho3d README.md):

    <root>/
      train.txt                    one 'SEQ/frame' per line (e.g. 'ABF10/0000')
      evaluation.txt
      train/<SEQ>/rgb/<frame>.jpg  (v3; v2 has .png: utils/vis_utils.py
                                    read_RGB_img tries .png, then .jpg)
      train/<SEQ>/meta/<frame>.pkl a python-2 pickle of a dict, read with
                                   pickle encoding='latin1' (vis_utils.py
                                   load_pickle_data); depth/ etc. unused
      evaluation/<SEQ>/{rgb,meta}/...

Meta keys used (metres, radians, OpenGL camera axes: x right, y up, z
backward, the hand at negative z; vis_utils.py project_3D_points,
README.md 'Evaluate', pred.py):

  train       handPose (48,) axis-angle, MANO full pose with the hand mean
              included (vis_HO3D.py forwardKinematics: load_model(...,
              flat_hand_mean=True), fullpose set directly); handBeta (10,);
              handTrans (3,) m; handJoints3D (21, 3) m; camMat (3, 3).
  evaluation  handJoints3D (3,) m, the wrist only; handBoundingBox (4,)
              [x1, y1, x2, y2] px (vis_utils.py show2DBoundingBox draws the
              corners (bb[0], bb[1]) and (bb[2], bb[3])); camMat (3, 3).

handJoints3D order (setup_mano.py patches MANO's lbs.py so J_transformed is
the 16 forward-kinematics joints in MANO order, then the posed vertices 744,
333, 444, 555, 672 as thumb, index, middle, ring, pinky tips;
vis_HO3D.py jointsMapManoToSimple and compare_manual_anno.py fingerTipIds
20..16 agree): wrist, index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3,
tips thumb..pinky, i.e. mano_jax's 'mano' order. Note: the tips are not the
InterWild vertices (745, 317, 445, 556, 673) and the joints are kinematic,
not regressed from the mesh, so they differ by millimetres from mesh-regressed
joints of the same fit.

Frames whose meta is None, or whose handPose (train) / handJoints3D
(evaluation) is None or absent, have no hand annotation (HO-3D v3 has such
frames; vis_HO3D.py tests objRot for None): skipped and counted in
`ds.summary['unannotated']`.

Examples (the InterHand2.6M reader's schema plus 2D supervision):

  image_path     <root>/<split>/<SEQ>/rgb/<frame>.{jpg,png}
  image_size     (height, width) px, from the image header
  hand_type      'right' (HO-3D hands are right hands); hand_type_valid 1
  joints_cam     (42, 3) float64 mm, OpenCV camera axes, InterHand order
                 (right 0-20: thumb4..1, index, middle, ring, pinky, wrist
                 last); the left hand 21-41 zeros. evaluation: the wrist only.
  joint_valid    (42,) float32: train the 21 right joints, evaluation the
                 right wrist (index 20) only
  joints_img     (42, 2) float64 px, the joints projected with camMat;
                 joints_img_valid (42,) float32: valid and in front (z > 0)
  bbox           (4,) float64 [x, y, w, h] px: train the tight box of the
                 projected joints; evaluation handBoundingBox
  camera         {'focal': (fx, fy), 'princpt': (cx, cy)} from camMat
  mano           {'right': {'pose' (48,), 'shape' (10,), 'trans' (3,)} | None,
                  'left': None}: mano_jax.forward(right_model, pose, shape,
                 trans, flat_hand_mean=False) is the annotated mesh in metres,
                 OpenCV axes. None on the evaluation split.
  annot_id       int, the 0-based line of the example in <split>.txt
  seq_name, frame (str)

Conversions: OpenGL -> OpenCV is D = diag(1, -1, -1) (a rotation, det +1;
vis_utils.py coord_change_mat). Points: x' = D x. MANO: the hand mean is
subtracted from the finger joints (pose[3:] - hands_mean), the global
orientation becomes D R, and since the global orientation turns the hand
about the shape's rest wrist j0, trans' = D (j0 + trans) - j0, so that the
mesh is exactly D times the original one (camera.mano_fit_to_camera with
camrot D, campos 0).

Errors: a missing list or meta file, an unreadable pickle, a missing key,
a wrong shape or NaN raise AnnotationError naming the file and the key.
Pickles are unpickled with an allow-list (numpy arrays and scalars only):
a file naming any other global is refused before anything runs. Missing
images are skipped, counted and logged (`summary['missing_images']`), or
raise FileNotFoundError with strict=True.

Memory: the metas are read once into flat arrays (about 1 KB per train
frame), cached as .npy files under <root>/.a2p_jax_index/ (else ~/.cache)
and memory-mapped on later runs; the cache is rebuilt when the list file
or any meta file changes size or mtime.
"""

import hashlib
import io
import logging
import os
import pickle
from typing import Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

import mano_jax
from a2p_jax.data import camera as cam_lib
from a2p_jax.data import interhand26m as ih
from a2p_jax.data.hands import load_hand_models
from a2p_jax.data.interhand26m import AnnotationError, NUM_JOINTS, _field, _floats
from a2p_jax.geometry.camera import project
from mano_jax.io import _dtype, _frombuffer, _reconstruct

log = logging.getLogger(__name__)

SPLITS = ('train', 'evaluation')
GL_TO_CV = np.diag([1.0, -1.0, -1.0])
# handJoints3D is in mano_jax's 'mano' order (see the module doc).
TO_INTERHAND = np.asarray(mano_jax.joints.JOINT_ORDERS['interhand'])
WRIST = 20                        # InterHand order: the right wrist
IMAGE_EXTS = ('.jpg', '.png')     # v3, v2
_INDEX_VERSION = 1
_COLUMNS = {'train': (('pose', (48,)), ('beta', (10,)), ('trans', (3,)), ('joints', (21, 3)),
                      ('cam', (3, 3))),
            'evaluation': (('root', (3,)), ('hand_bbox', (4,)), ('cam', (3, 3)))}
# The key whose None (or absence) marks a frame without hand annotation.
_PRESENCE_KEY = {'train': 'handPose', 'evaluation': 'handJoints3D'}
_KEYS = {'train': {'pose': 'handPose', 'beta': 'handBeta', 'trans': 'handTrans',
                   'joints': 'handJoints3D', 'cam': 'camMat'},
         'evaluation': {'root': 'handJoints3D', 'hand_bbox': 'handBoundingBox',
                        'cam': 'camMat'}}


# ----------------------------------------------------------------------------
# Pickles.

def _scalar(dtype, data):
  # numpy.core.multiarray.scalar: a numpy scalar from its raw bytes (str when
  # a python-2 pickle is read with encoding='latin1').
  if not isinstance(dtype, np.dtype) or dtype.hasobject:
    raise pickle.UnpicklingError('numpy scalar of an object dtype')
  if isinstance(data, str):
    data = data.encode('latin1')
  return np.frombuffer(data, dtype, count=1)[0]


def _codecs_encode(text, encoding):
  # How python 3 writes bytes in protocol 2 pickles.
  if encoding not in ('latin1', 'latin-1'):
    raise pickle.UnpicklingError(f'_codecs.encode with encoding {encoding!r}')
  return text.encode('latin1')


_ALLOWED = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): _dtype,
            ('_codecs', 'encode'): _codecs_encode}
for _mod in ('numpy.core', 'numpy._core'):
  _ALLOWED[(f'{_mod}.multiarray', '_reconstruct')] = _reconstruct
  _ALLOWED[(f'{_mod}.multiarray', 'scalar')] = _scalar
  _ALLOWED[(f'{_mod}.numeric', '_frombuffer')] = _frombuffer


class _MetaUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) not in _ALLOWED:
      raise pickle.UnpicklingError(f'refusing global {module}.{name} (a HO-3D meta file '
                                   'holds numpy arrays, numbers and strings only)')
    return _ALLOWED[(module, name)]


def read_meta(path: str):
  """A meta .pkl (python 2, latin1 strings) -> its object (a dict, or None)."""
  try:
    with open(path, 'rb') as fh:
      raw = fh.read()
  except OSError as e:
    raise AnnotationError(f'{path}: cannot read the meta file ({e.strerror})') from None
  try:
    return _MetaUnpickler(io.BytesIO(raw), encoding='latin1').load()
  except Exception as e:  # noqa: BLE001 - any failure of a corrupt pickle
    raise AnnotationError(f'{path}: not a readable meta pickle ({type(e).__name__}: '
                          f'{e})') from None


# ----------------------------------------------------------------------------
# The list file and the metas.

def read_list(root: str, split: str):
  """<root>/<split>.txt -> [(seq, frame)] in file order."""
  path = os.path.join(root, f'{split}.txt')
  if not os.path.isfile(path):
    raise AnnotationError(f'{path}: HO-3D {split} list file not found')
  items = []
  with open(path, 'r', encoding='utf-8') as fh:
    for n, line in enumerate(fh, 1):
      text = line.strip()
      if not text:
        continue
      parts = text.split('/')
      if len(parts) != 2 or not all(parts):
        raise AnnotationError(f'{path}: line {n}: expected SEQ/frame, got {text!r}')
      items.append((parts[0], parts[1]))
  if not items:
    raise AnnotationError(f'{path}: no SEQ/frame lines')
  return items


def _camera_matrix(value, file):
  cam = _floats(value, (3, 3), file, "['camMat']")
  fx, fy = cam[0, 0], cam[1, 1]
  tol = 1e-6 * max(abs(fx), abs(fy), 1.0)
  if (fx <= 0 or fy <= 0 or abs(cam[0, 1]) > tol or abs(cam[1, 0]) > tol
      or np.abs(cam[2] - [0.0, 0.0, 1.0]).max() > 1e-9):
    raise AnnotationError(f"{file}: ['camMat']: expected [[fx, 0, cx], [0, fy, cy], "
                          f'[0, 0, 1]] with fx, fy > 0, got {cam.tolist()}')
  return cam


def parse_meta(meta, split: str, file: str) -> Optional[dict]:
  """One frame's meta -> {column: float64 array}, or None without hand annotation."""
  if meta is None:
    return None
  if not isinstance(meta, dict):
    raise AnnotationError(f'{file}: expected a dict of annotations, got '
                          f'{type(meta).__name__}')
  if meta.get(_PRESENCE_KEY[split]) is None:
    return None
  out = {}
  for column, shape in _COLUMNS[split]:
    key = _KEYS[split][column]
    value = _field(meta, key, file, 'meta')
    if value is None:
      raise AnnotationError(f'{file}: [{key!r}] is None while {_PRESENCE_KEY[split]!r} '
                            'is annotated')
    if column == 'cam':
      out[column] = _camera_matrix(value, file)
    else:
      out[column] = _floats(value, shape, file, f'[{key!r}]')
  if 'hand_bbox' in out:
    x1, y1, x2, y2 = out['hand_bbox']
    if x2 < x1 or y2 < y1:
      raise AnnotationError(f"{file}: ['handBoundingBox']: expected [x1, y1, x2, y2] with "
                            f'x2 >= x1 and y2 >= y1, got {out["hand_bbox"].tolist()}')
  return out


def meta_path(root, split, seq, frame):
  return os.path.join(root, split, seq, 'meta', frame + '.pkl')


def build_index(root: str, split: str, *, progress: bool = True) -> dict:
  """Reads every listed meta file into flat arrays plus the name tables."""
  items = read_list(root, split)
  seqs = sorted({s for s, _ in items})
  seq_code = {s: k for k, s in enumerate(seqs)}
  n = len(items)
  arrays = {c: np.zeros((n,) + shape) for c, shape in _COLUMNS[split]}
  annotated = np.zeros(n, bool)
  for row, (seq, frame) in enumerate(tqdm(items, desc=f'HO-3D {split} metas',
                                          disable=not progress)):
    path = meta_path(root, split, seq, frame)
    if not os.path.isfile(path):
      raise AnnotationError(f'{path}: meta file of {seq}/{frame} (listed in {split}.txt) '
                            'not found')
    parsed = parse_meta(read_meta(path), split, path)
    if parsed is None:
      continue
    annotated[row] = True
    for column, value in parsed.items():
      arrays[column][row] = value
  arrays.update(annotated=annotated, line=np.arange(n, dtype=np.int64),
                seq=np.asarray([seq_code[s] for s, _ in items], np.int64))
  return {'arrays': arrays, 'names': {'seqs': seqs, 'frames': [f for _, f in items]}}


# ----------------------------------------------------------------------------
# The index cache (interhand26m's atomic .npy writer and loader).

def _source_stamp(root, split):
  """Size and mtime of the list file and of every meta file of its sequences."""
  list_path = os.path.join(root, f'{split}.txt')
  if not os.path.isfile(list_path):
    raise AnnotationError(f'{list_path}: HO-3D {split} list file not found')
  st = os.stat(list_path)
  digest = hashlib.sha1()
  split_dir = os.path.join(root, split)
  for seq in sorted(os.listdir(split_dir)) if os.path.isdir(split_dir) else ():
    try:
      entries = sorted(os.scandir(os.path.join(split_dir, seq, 'meta')), key=lambda e: e.name)
    except OSError:
      continue
    for e in entries:
      est = e.stat()
      digest.update(f'{seq}/{e.name}:{est.st_size}:{est.st_mtime_ns}\n'.encode())
  return {'version': _INDEX_VERSION, 'list': [st.st_size, st.st_mtime_ns],
          'metas': digest.hexdigest()}


def _cache_dirs(root, split, cache_dir):
  # Not under <root>/<split>/: the toolbox lists that folder as sequences.
  return ih.cache_places(os.path.join(root, '.a2p_jax_index', f'ho3d_{split}'),
                         ih.path_tag(f'ho3d_{split}', root), cache_dir)


def load_index(root, split, *, cache=True, cache_dir=None, progress=True):
  """The index from its cache when up to date, else built (and cached)."""
  build = lambda: build_index(root, split, progress=progress)
  if not cache:
    return dict(build(), path=None, stamp=None)
  return ih.cached_index(_cache_dirs(root, split, cache_dir), _source_stamp(root, split),
                         build, what='HO-3D')


# ----------------------------------------------------------------------------
# Conversions.

def mano_to_opencv(model, pose, beta, trans):
  """A HO-3D fit (flat_hand_mean=True pose, OpenGL axes) -> (pose, trans) with
  mano_jax.forward(model, pose, beta, trans, flat_hand_mean=False) equal to
  D times the original mesh, D = diag(1, -1, -1)."""
  pose = np.array(pose, np.float64)
  pose[3:] -= np.asarray(model.hands_mean, np.float64)
  j0 = cam_lib.root_joint(model, beta)
  return cam_lib.mano_fit_to_camera(pose, trans, j0, np.zeros(3), GL_TO_CV)


def _find_images(root, split, arrays, names, rows):
  """Per row of `rows`: the image's extension index in IMAGE_EXTS, -1 if missing."""
  seq_of = np.asarray(arrays['seq'])
  ext = np.full(len(rows), -1, np.int64)
  listing = {}
  for k, row in enumerate(rows):
    seq = names['seqs'][int(seq_of[row])]
    if seq not in listing:
      try:
        listing[seq] = set(os.listdir(os.path.join(root, split, seq, 'rgb')))
      except OSError:
        listing[seq] = set()
    frame = names['frames'][int(row)]
    for e, suffix in enumerate(IMAGE_EXTS):
      if frame + suffix in listing[seq]:
        ext[k] = e
        break
  return ext


# ----------------------------------------------------------------------------
# The data set.

class HO3D(ih.MappedIndex):
  """HO-3D v2/v3 'train' or 'evaluation' as camera-space examples (module doc).

  mano_dir: folder with MANO_RIGHT.pkl (None: the procedural hand, NOT MANO;
  the hand mean and the wrist joint of the fits come from it). strict: raise
  on a missing image instead of a counted, logged skip. cache / cache_dir:
  keep the metas' arrays as .npy files (default <root>/.a2p_jax_index).
  """

  def __init__(self, root: str, split: str, *, mano_dir: Optional[str] = None,
               strict: bool = False, cache: bool = True, cache_dir: Optional[str] = None,
               progress: bool = True):
    if split not in SPLITS:
      raise ValueError(f'HO-3D split must be one of {SPLITS}, got {split!r}')
    self.root, self.split, self.mano_dir = root, split, mano_dir
    index = load_index(root, split, cache=cache, cache_dir=cache_dir, progress=progress)
    self._arrays, self._names = index['arrays'], index['names']
    self._index_path, self._stamp = index['path'], index['stamp']
    annotated = np.asarray(self._arrays['annotated'])
    rows = np.nonzero(annotated)[0]
    summary = {'listed': len(annotated), 'unannotated': int((~annotated).sum())}
    if summary['unannotated']:
      log.info('HO-3D %s: %d listed frames have no hand annotation; skipped', split,
               summary['unannotated'])
    ext = _find_images(root, split, self._arrays, self._names, rows)
    missing = ext < 0
    summary['missing_images'] = int(missing.sum())
    if missing.any():
      first = self._image_base(rows[missing][0]) + '.{jpg,png}'
      msg = (f'HO-3D {split}: {int(missing.sum())} image files are missing, '
             f'e.g. {first}')
      if strict:
        raise FileNotFoundError(msg)
      log.warning('%s; skipped', msg)
    self._rows, self._ext = rows[~missing], ext[~missing]
    summary['examples'] = len(self._rows)
    self.summary = summary
    log.info('HO-3D %s: %s', split, summary)
    self._models = None

  def _image_base(self, row):
    seq = self._names['seqs'][int(self._arrays['seq'][row])]
    return os.path.join(self.root, self.split, seq, 'rgb', self._names['frames'][int(row)])

  def _right_model(self):
    if self._models is None:
      if self.mano_dir is None:
        log.warning('HO-3D: no mano_dir, so the fits are converted with the procedural '
                    'hand (NOT MANO); pass mano_dir for real HO-3D')
      self._models = load_hand_models(self.mano_dir)
    return self._models[0]

  def __len__(self) -> int:
    return len(self._rows)

  @property
  def annot_ids(self) -> np.ndarray:
    """int64 (N,) annotation ids (lines of <split>.txt) in example order."""
    return np.asarray(self._arrays['line'], np.int64)[self._rows]

  def _hand(self, row):
    """(joints_cam (42, 3) mm, joint_valid (42,), right fit or None, hand bbox or None)."""
    a = self._arrays
    joints = np.zeros((NUM_JOINTS, 3))
    valid = np.zeros(NUM_JOINTS, np.float32)
    if self.split == 'evaluation':
      joints[WRIST] = GL_TO_CV @ a['root'][row] * 1000.0
      valid[WRIST] = 1.0
      x1, y1, x2, y2 = np.array(a['hand_bbox'][row])
      return joints, valid, None, np.array([x1, y1, x2 - x1, y2 - y1])
    joints[:21] = (np.array(a['joints'][row]) @ GL_TO_CV.T * 1000.0)[TO_INTERHAND]
    valid[:21] = 1.0
    beta = np.array(a['beta'][row])
    pose, trans = mano_to_opencv(self._right_model(), a['pose'][row], beta, a['trans'][row])
    return joints, valid, {'pose': pose, 'shape': beta, 'trans': trans}, None

  def __getitem__(self, i: int) -> dict:
    n = len(self._rows)
    if not -n <= i < n:
      raise IndexError(f'index {i} out of range for {n} examples')
    row = int(self._rows[i])
    image_path = self._image_base(row) + IMAGE_EXTS[int(self._ext[i])]
    cam = np.array(self._arrays['cam'][row])
    focal, princpt = cam[[0, 1], [0, 1]], cam[:2, 2]
    joints, valid, fit, bbox = self._hand(row)
    uv = np.zeros((NUM_JOINTS, 2))
    uv_valid = valid * (joints[:, 2] > 0)
    shown = uv_valid > 0
    uv[shown] = project(joints[shown], focal, princpt)
    with Image.open(image_path) as img:
      width, height = img.size
    if bbox is None:
      bbox = cam_lib.bbox_of_points(uv, uv_valid)
    if bbox is None:
      bbox = np.array([0.0, 0.0, width, height])
    return {
        'image_path': image_path, 'image_size': (int(height), int(width)),
        'hand_type': 'right', 'hand_type_valid': 1,
        'joints_cam': joints, 'joint_valid': valid,
        'joints_img': uv, 'joints_img_valid': uv_valid.astype(np.float32),
        'bbox': np.asarray(bbox, np.float64),
        'camera': {'focal': focal, 'princpt': princpt},
        'mano': {'right': fit, 'left': None},
        'annot_id': int(self._arrays['line'][row]),
        'seq_name': self._names['seqs'][int(self._arrays['seq'][row])],
        'frame': self._names['frames'][row],
    }
