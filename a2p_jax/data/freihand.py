"""FreiHAND (v2, Zimmermann et al., ICCV 2019) reader, the official layout.

    ds = FreiHAND('/data/FreiHAND_pub_v2', 'training', mano_dir='/data/mano')
    ex = ds[0]

Layout read (FreiHAND_pub_v2.zip, plus FreiHAND_pub_v2_eval.zip unpacked
into the same folder; file names from lmb-freiburg/freihand utils/fh_utils.py
load_db_annotation / read_img, pred.py and eval.py):

    root/
      training/rgb/%08d.jpg       4 x N images (224 x 224): image index + k * N
                                  is version k of sample index, k = 0 'gs'
                                  (green screen), 1 'hom' (homogenized),
                                  2 'sample', 3 'auto' (auto-colourisation);
                                  fh_utils.sample_version
      training/mask/%08d.jpg      (not read)
      training_K.json             [N x 3 x 3] intrinsics, px
      training_mano.json          [N x [1 x 61]]: pose 48 (axis-angle, rad,
                                  flat_hand_mean=False: utils/model.py builds
                                  HandModel(use_mean_pose=True) ->
                                  load_model(flat_hand_mean=False)), shape 10,
                                  uv_root 2 (px), scale 1 (utils/model.py
                                  split_theta); no translation
      training_xyz.json           [N x 21 x 3] joints, camera space, m
      training_verts.json         [N x V x 3] MANO vertices, camera space, m
      training_scale.json         [N] length of the middle finger's proximal
                                  bone |xyz[9] - xyz[10]|, m (pred.py)
      evaluation/rgb/%08d.jpg     N_eval images, one version ('gs')
      evaluation_{K,mano,xyz,verts,scale}.json   the same, for evaluation
                                  (xyz/verts/mano come with the evaluation
                                  annotations release; eval.py reads xyz/verts)

Camera space is OpenCV's (x right, y down, z forward): fh_utils.projectPoints
is uv = (K @ xyz) / z. One example per listed image (training: per version
in `versions`), right hand only:

  image_path     str, root/{split}/rgb/%08d.jpg;  image_size (224, 224)
  annot_id, image_id   the image number (index + k * N): unique per image
  sample_id      the annotation index (0..N-1);  version 'gs'|'hom'|...
  hand_type      'right';  hand_type_valid 1
  joints_cam     (42, 3) float64 mm, InterHand order: rows 0-20 the released
                 xyz converted from FreiHAND's order (wrist, then thumb,
                 index, middle, ring, pinky, each base joint 1 to tip 4:
                 mano_utils.get_keypoints_from_mesh_ch and fh_utils.plot_hand)
                 to InterHand's (per finger tip..base, wrist last); rows
                 21-41 (left) zeros
  joint_valid    (42,) float32: 1 right, 0 left
  joints_img     (42, 2) float64 px: the right joints projected with K;
                 joints_img_valid (42,) float32 likewise
  bbox           (4,) float64 [x, y, w, h] px: the tight box of the projected
                 right joints with each side moved out by BBOX_MARGIN (0.1)
                 of its longer side (our choice: FreiHAND ships no box)
  camera         {'focal': (K00, K11), 'princpt': (K02, K12)} float64 px
                 (K must be skew-free pinhole, else AnnotationError)
  mano           {'right': {'pose' (48,), 'shape' (10,), 'trans' (3,)},
                  'left': None}: mano_jax.forward(right, pose, shape, trans)
                 reproduces the released vertices; `trans` is solved from them
                 exactly (least squares of MANO(pose, shape, 0) + t against
                 the released vertices: the mean of the difference)
  ref_bone_length  float, m: the {split}_scale.json entry

FreiHAND's joints are not MANO's forward-kinematics joints: the toolbox
(utils/model.py _calc_coords) regresses them from the mesh with J_regressor
and takes fingertip vertices 744, 320, 443, 555, 672 (thumb..pinky), where
mano_jax (InterWild) uses 745, 317, 445, 556, 673. So joints_cam (the
released xyz, what FreiHAND scores against) and the joints of a MANO forward
of the fit differ by millimetres at the tips; the meshes agree.

Vertices: FreiHAND's are MANO's 778, but nothing here assumes a count: the
released count must equal the hand model's (the procedural test hand has
833), else AnnotationError. The index (all files streamed once, the vertices
kept as a per-sample mean and a few probe vertices) is cached as .npy beside
the files (or under ~/.cache/a2p_jax); the translations, which depend on the
hand model, are cached beside it per model fingerprint. `summary` counts
missing images and gives the largest probe-vertex residual of the fits.
"""

import contextlib
import hashlib
import logging
import os
from typing import Optional, Sequence, Union

import jax
import numpy as np
from tqdm import tqdm

import mano_jax
from a2p_jax.data import camera as cam_lib
from a2p_jax.data import interhand26m as ih
from a2p_jax.data import jsonstream
from a2p_jax.data.hands import load_hand_models
from a2p_jax.data.interhand26m import AnnotationError, NUM_JOINTS, _floats
from a2p_jax.geometry.camera import project

log = logging.getLogger(__name__)

SPLITS = ('training', 'evaluation')
VERSIONS = ('gs', 'hom', 'sample', 'auto')
IMAGE_SIZE = (224, 224)           # (height, width), pred.py
BBOX_MARGIN = 0.1
_FILES = ('K', 'mano', 'xyz', 'verts', 'scale')
_SHAPES = {'K': (3, 3), 'mano': (61,), 'xyz': (21, 3), 'scale': (1,)}
_INDEX_VERSION = 1
_NUM_PROBES = 8
# A fit whose probe vertices miss the released ones by more than this (m)
# points at the wrong hand model or pose convention.
_RESIDUAL_WARN_M = 1e-3


def annotation_files(root: str, split: str) -> dict:
  """{'K'|'mano'|'xyz'|'verts'|'scale': root/{split}_{key}.json}."""
  return {k: os.path.join(root, f'{split}_{k}.json') for k in _FILES}


# ----------------------------------------------------------------------------
# Streaming the files (each a top-level JSON array, one entry per sample).

def _iter_entries(path, progress=False):
  name = os.path.basename(path)
  if not os.path.isfile(path):
    raise AnnotationError(f'{name}: file {path} not found')
  bar = tqdm(total=os.path.getsize(path), unit='B', unit_scale=True, desc=f'read {name}',
             disable=not progress)
  try:
    yield from jsonstream.iter_elements(path, on_progress=bar.update)
  except jsonstream.JsonStreamError as e:
    raise AnnotationError(f'{name}: {e}') from None
  finally:
    bar.close()


def iter_points(path: str, num_points: Optional[int] = None, *, progress: bool = False):
  """Yields each entry of an xyz/verts file as a (P, 3) float64 array (m);
  P = num_points, or the first entry's count (then all must agree)."""
  name = os.path.basename(path)
  for i, value in enumerate(_iter_entries(path, progress)):
    try:
      pts = np.asarray(value, np.float64)
    except (TypeError, ValueError):
      pts = None
    if pts is None or pts.ndim != 2 or pts.shape[1] != 3 or \
        pts.shape[0] != (num_points or pts.shape[0]) or not len(pts):
      want = f'({num_points or "P"}, 3)'
      got = 'a ragged or non-numeric list' if pts is None else f'shape {pts.shape}'
      raise AnnotationError(f'{name}: [{i}]: expected {want} points, got {got}')
    if not np.all(np.isfinite(pts)):
      raise AnnotationError(f'{name}: [{i}]: contains NaN or Inf')
    num_points = pts.shape[0]
    yield pts


def read_points(path: str, num_points: Optional[int] = None, *,
                progress: bool = False) -> np.ndarray:
  """An xyz/verts file as (N, P, 3) float64 m (eval.py's ground truth)."""
  pts = list(iter_points(path, num_points, progress=progress))
  if not pts:
    raise AnnotationError(f'{os.path.basename(path)}: no entries')
  return np.stack(pts)


def _read_fixed(path, shape, progress):
  name = os.path.basename(path)
  out = [_floats(v, shape, name, f'[{i}]') for i, v in enumerate(_iter_entries(path, progress))]
  if not out:
    raise AnnotationError(f'{name}: no entries')
  return np.stack(out)


def _probe_ids(num_vertices):
  return np.unique(np.linspace(0, num_vertices - 1, _NUM_PROBES).round().astype(np.int64))


def _read_verts(path, progress):
  """Per-sample vertex mean (N, 3) and probe vertices (N, P, 3) m, probe ids, V."""
  means, probes, ids = [], [], None
  for pts in iter_points(path, progress=progress):
    if ids is None:
      ids = _probe_ids(len(pts))
    means.append(pts.mean(0))
    probes.append(pts[ids])
  if not means:
    raise AnnotationError(f'{os.path.basename(path)}: no entries')
  return np.stack(means), np.stack(probes), ids, len(pts)


def _check_intrinsics(K, name):
  fx, fy = K[:, 0, 0], K[:, 1, 1]
  off = np.abs(np.stack([K[:, 0, 1], K[:, 1, 0], K[:, 2, 0], K[:, 2, 1], K[:, 2, 2] - 1], -1))
  bad = np.nonzero((fx <= 0) | (fy <= 0) | (off.max(-1) > 1e-6 * np.maximum(1.0, fx)))[0]
  if len(bad):
    raise AnnotationError(f'{name}: [{bad[0]}]: expected a pinhole matrix [[fx, 0, px], '
                          f'[0, fy, py], [0, 0, 1]] with fx, fy > 0, got {K[bad[0]].tolist()}')


def build_index(root: str, split: str, *, progress: bool = True) -> dict:
  """Streams the five annotation files of `split` into arrays."""
  files = annotation_files(root, split)
  names = {k: os.path.basename(p) for k, p in files.items()}
  arrays = {k: _read_fixed(files[k], _SHAPES[k], progress) for k in ('K', 'mano', 'xyz', 'scale')}
  arrays['scale'] = arrays['scale'][:, 0]
  arrays['verts_mean'], arrays['verts_probe'], probe_ids, nv = _read_verts(files['verts'],
                                                                           progress)
  _check_intrinsics(arrays['K'], names['K'])
  counts = {names[k]: len(arrays['verts_mean' if k == 'verts' else k]) for k in _FILES}
  if len(set(counts.values())) > 1:
    raise AnnotationError(f'FreiHAND {split}: the files disagree on the number of samples: '
                          + ', '.join(f'{f} has {n}' for f, n in counts.items()))
  meta = {'num_vertices': nv, 'probe_ids': probe_ids.tolist()}
  return {'arrays': arrays, 'names': meta}


# ----------------------------------------------------------------------------
# The index cache (the layout of interhand26m's, written by its helpers).

def _source_stamp(root, split):
  stamp = {'version': _INDEX_VERSION, 'reader': 'freihand'}
  for key, path in annotation_files(root, split).items():
    if not os.path.isfile(path):
      raise AnnotationError(f'{os.path.basename(path)}: file {path} not found (FreiHAND '
                            f'{split}; evaluation xyz/verts/mano come with the evaluation '
                            'annotations release)')
    st = os.stat(path)
    stamp[key] = [st.st_size, st.st_mtime_ns]
  return stamp


def _cache_dirs(root, split, cache_dir):
  local = os.path.join(os.path.abspath(root), '.a2p_jax_index', f'freihand_{split}')
  return ih.cache_places(local, ih.path_tag(f'freihand_{split}', root), cache_dir)


def load_index(root, split, *, cache=True, cache_dir=None, progress=True):
  """(index, stamp): from the cache when up to date, else built and cached."""
  stamp = _source_stamp(root, split)
  build = lambda: build_index(root, split, progress=progress)
  if not cache:
    return dict(build(), path=None), stamp
  index = ih.cached_index(_cache_dirs(root, split, cache_dir), stamp, build, what='FreiHAND')
  return index, stamp


# ----------------------------------------------------------------------------
# Translations: MANO(pose, shape, trans) onto the released vertices.

def model_fingerprint(model) -> str:
  """A short hash of the arrays that decide a MANO forward."""
  h = hashlib.sha1(repr(tuple(model.parents)).encode())
  for field in ('v_template', 'shapedirs', 'posedirs', 'J_regressor', 'weights', 'hands_mean'):
    h.update(np.ascontiguousarray(np.asarray(getattr(model, field), np.float64)).tobytes())
  return h.hexdigest()[:16]


@jax.jit
def _rest_stats(model, pose, shape, probe_ids):
  verts = mano_jax.forward(model, pose, shape).vertices
  return verts.mean(-2), verts[:, probe_ids]


def fit_translations(model, pose, shape, verts_mean, verts_probe, probe_ids, *,
                     chunk: int = 512, progress: bool = False):
  """trans (N, 3) m minimising |MANO(pose, shape, 0) + trans - released|^2 over
  all vertices (= mean(released) - mean(MANO(pose, shape, 0))), and the largest
  probe-vertex residual (N,) m of the fitted meshes. float64 throughout."""
  n = len(pose)
  chunk = max(1, min(chunk, n))
  trans, resid = np.zeros((n, 3)), np.zeros(n)
  with jax.enable_x64(True):
    for lo in tqdm(range(0, n, chunk), desc='FreiHAND MANO fits', disable=not progress):
      hi = min(lo + chunk, n)
      # Padded to one shape: one compilation for the whole split.
      p = np.zeros((chunk, 48))
      s = np.zeros((chunk, shape.shape[-1]))
      p[:hi - lo], s[:hi - lo] = pose[lo:hi], shape[lo:hi]
      mean, probe = (np.asarray(x)[:hi - lo] for x in _rest_stats(model, p, s, probe_ids))
      trans[lo:hi] = verts_mean[lo:hi] - mean
      resid[lo:hi] = np.linalg.norm(probe + trans[lo:hi, None] - verts_probe[lo:hi], axis=-1
                                    ).max(-1)
  return trans, resid


def _load_or_fit(index, model, progress):
  """(N, 4): trans and residual, from the index folder when cached there."""
  path = index['path'] and os.path.join(index['path'], f'fit_{model_fingerprint(model)}.npy')
  if path and os.path.isfile(path):
    with contextlib.suppress(OSError, ValueError):
      fit = np.load(path)
      if fit.shape == (len(index['arrays']['mano']), 4):
        return fit
  a = index['arrays']
  mano = np.asarray(a['mano'])
  trans, resid = fit_translations(model, mano[:, :48], mano[:, 48:58],
                                  np.asarray(a['verts_mean']), np.asarray(a['verts_probe']),
                                  np.asarray(index['names']['probe_ids']), progress=progress)
  fit = np.concatenate([trans, resid[:, None]], -1)
  if path:
    tmp = f'{path}.tmp{os.getpid()}.npy'
    try:
      np.save(tmp, fit)
      os.replace(tmp, path)
    except OSError as e:
      log.info('cannot cache the FreiHAND fits at %s (%s)', path, e)
  return fit


# ----------------------------------------------------------------------------
# The data set.

def joints_bbox(uv) -> np.ndarray:
  """[x, y, w, h]: the tight box of (21, 2) px, each side out by BBOX_MARGIN of
  its longer side."""
  x, y, w, h = cam_lib.bbox_of_points(uv)
  m = BBOX_MARGIN * max(w, h)
  return np.array([x - m, y - m, w + 2 * m, h + 2 * m])


def _version_ids(split, versions):
  if versions is None:
    versions = VERSIONS if split == 'training' else ('gs',)
  if isinstance(versions, (str, int)):
    versions = (versions,)
  ids = []
  for v in versions:
    k = v if isinstance(v, int) and not isinstance(v, bool) else (
        VERSIONS.index(v) if v in VERSIONS else -1)
    if not 0 <= k < len(VERSIONS):
      raise ValueError(f'versions: {v!r} is not one of {VERSIONS} (or 0-3)')
    ids.append(k)
  if split == 'evaluation' and ids != [0]:
    raise ValueError(f"FreiHAND evaluation has one image version ('gs'), got {versions!r}")
  if len(set(ids)) != len(ids):
    raise ValueError(f'versions: {versions!r} lists a version twice')
  return np.asarray(ids, np.int64)


class FreiHAND:
  """FreiHAND training or evaluation as a sequence of camera-space examples.

  root: the folder with training/, evaluation/ and the *.json files.
  split: 'training' | 'evaluation'. mano_dir: MANO_RIGHT.pkl's folder (None:
  the procedural hand, NOT MANO; real FreiHAND then fails the vertex-count
  check). versions: which image versions of the training samples to list
  (names of VERSIONS or 0-3; default all four; evaluation: 'gs' only).
  strict: raise on a missing image instead of a logged, counted skip.
  check_images / cache / cache_dir / progress: as InterHand26M's.
  """

  def __init__(self, root: str, split: str, *, mano_dir: Optional[str] = None,
               strict: bool = False, versions: Union[None, str, Sequence] = None,
               check_images: bool = True, cache: bool = True,
               cache_dir: Optional[str] = None, progress: bool = True):
    if split not in SPLITS:
      raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    self.root, self.split, self.mano_dir = root, split, mano_dir
    self._image_dir = os.path.join(root, split, 'rgb')
    version_ids = _version_ids(split, versions)
    self.versions = tuple(VERSIONS[k] for k in version_ids)
    index, self._stamp = load_index(root, split, cache=cache, cache_dir=cache_dir,
                                    progress=progress)
    self._loaded, self._index_path = index['arrays'], index['path']
    n = self.num_samples = len(self._arrays['mano'])
    model = load_hand_models(mano_dir)[0]
    nv = index['names']['num_vertices']
    if nv != model.num_vertices:
      raise AnnotationError(f'{split}_verts.json: {nv} vertices per sample, but the right hand '
                            f'model ({model.name}) has {model.num_vertices}; FreiHAND needs '
                            'MANO (mano_dir)')
    fit = _load_or_fit(index, model, progress)
    self._trans = np.ascontiguousarray(fit[:, :3])
    sample = np.tile(np.arange(n), len(version_ids))
    version = np.repeat(version_ids, n)
    summary = {'samples': n, 'images': len(sample), 'missing_images': 0,
               'max_vertex_residual_mm': float(fit[:, 3].max() * 1000.0)}
    if summary['max_vertex_residual_mm'] > _RESIDUAL_WARN_M * 1000.0:
      log.warning('FreiHAND %s: MANO fits miss the released vertices by up to %.3g mm: wrong '
                  'hand model (mano_dir)?', split, summary['max_vertex_residual_mm'])
    if check_images:
      missing = self._missing(sample + version * n)
      summary['missing_images'] = int(missing.sum())
      if missing.any():
        first = self._image_path(int((sample + version * n)[missing][0]))
        if strict:
          raise FileNotFoundError(f'FreiHAND {split}: {missing.sum()} image files are '
                                  f'missing, e.g. {first}')
        log.warning('FreiHAND %s: skipping %d images that are missing, e.g. %s', split,
                    missing.sum(), first)
        sample, version = sample[~missing], version[~missing]
    summary['examples'] = len(sample)
    self._sample, self._version = sample, version
    self.summary = summary
    log.info('FreiHAND %s: %s', split, summary)

  def _image_path(self, image_id):
    return os.path.join(self._image_dir, '%08d.jpg' % image_id)

  def _missing(self, image_ids):
    try:
      present = set(os.listdir(self._image_dir))
    except OSError:
      present = set()
    return np.array(['%08d.jpg' % i not in present for i in image_ids], bool)

  def __len__(self) -> int:
    return len(self._sample)

  @property
  def annot_ids(self) -> np.ndarray:
    """int64 (N,) annotation ids (image numbers) in example order."""
    return self._sample + self._version * self.num_samples

  def __getstate__(self):
    # Worker processes reopen the memory-mapped index (lazily, `_arrays`)
    # instead of receiving a copy of it.
    return self.__dict__ if self._index_path is None else dict(self.__dict__, _loaded=None)

  @property
  def _arrays(self):
    if self._loaded is None:
      found = ih._load_cached(self._index_path, self._stamp)
      if found is None:
        raise AnnotationError(f'FreiHAND {self.split}: the index at {self._index_path} '
                              'changed or vanished since the data set was opened')
      self._loaded = found['arrays']
    return self._loaded

  def __getitem__(self, i: int) -> dict:
    n = len(self._sample)
    if not -n <= i < n:
      raise IndexError(f'index {i} out of range for {n} examples')
    a = self._arrays
    s, k = int(self._sample[i]), int(self._version[i])
    image_id = s + k * self.num_samples
    K = np.array(a['K'][s])
    focal, princpt = np.array([K[0, 0], K[1, 1]]), np.array([K[0, 2], K[1, 2]])
    right = mano_jax.joints.convert(np.array(a['xyz'][s]) * 1000.0, 'openpose', 'interhand')
    joints = np.zeros((NUM_JOINTS, 3))
    joints[:21] = right
    uv = np.zeros((NUM_JOINTS, 2))
    uv[:21] = project(right, focal, princpt)
    valid = np.zeros(NUM_JOINTS, np.float32)
    valid[:21] = 1.0
    params = np.array(a['mano'][s])
    return {
        'image_path': self._image_path(image_id), 'image_size': IMAGE_SIZE,
        'hand_type': 'right', 'hand_type_valid': 1,
        'joints_cam': joints, 'joint_valid': valid,
        'joints_img': uv, 'joints_img_valid': valid.copy(),
        'bbox': joints_bbox(uv[:21]),
        'camera': {'focal': focal, 'princpt': princpt},
        'mano': {'right': {'pose': params[:48], 'shape': params[48:58],
                           'trans': self._trans[s].copy()}, 'left': None},
        'annot_id': image_id, 'image_id': image_id, 'sample_id': s, 'version': VERSIONS[k],
        'ref_bone_length': float(a['scale'][s]),
    }
