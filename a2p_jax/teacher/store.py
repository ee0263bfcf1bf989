"""Prior feature store: array_record shards of teacher maps keyed by annot_id.

Layout of a store directory:

  meta.json                     teacher, signal ('outputs' maps | 'features'),
                                grid, channels, groups, flip_matrix, pca (if
                                any), the source it was made from
  pca_basis.npy                 the PCA basis (C_full, K) float64, if any
  shard-00000.array_record      one record per example (zstd, group_size 1)
  shard-00000.ids.npy           int64 annot_ids of the shard, in record order;
                                written last, so its presence commits the shard
  complete.json                 written when every shard is committed

A record: header `<4sBcHHHq` (b'A2PR', version 1, dtype code b'e' = float16,
h, w, C, annot_id), the affine (2, 3) float32 (source image px -> map px,
pixel centres at integers), then maps (h, w, C) float16 in C order. The
default grid (32, 24) with the oracle's 57 channels is 87,552 + 44 bytes
before compression (Sapiens: 46 channels, 70,656 + 44 bytes).

Channels. meta['groups'] = {'keypoint': [...], 'segmentation': [...],
'depth': [...]} lists the stored channel indices of each group. flip_matrix
(C, C): the maps of the horizontally mirrored image at mirrored positions are
`maps @ flip_matrix` (right/left keypoint and part channels swap). With PCA
(`fit_pca`, uncentred, per group, fitted on a sample and its mirror image so
the subspace is flip-invariant) a stored channel is maps_full @ B with the
block-diagonal basis B (C_full, K) in pca_basis.npy (`pca_basis`; stores
made before it hold it in meta['pca']['basis']), and flip_matrix = B^T P B
(P: meta['pca']['flip_permutation_full'], as a permutation).

`PriorStore` opens its files lazily in each process (it pickles to its path),
so it can travel to grain worker processes.
"""

import io
import json
import os
import struct
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

META = 'meta.json'
COMPLETE = 'complete.json'
FORMAT_VERSION = 1
_HEADER = struct.Struct('<4sBcHHHq')
_MAGIC = b'A2PR'
_AFFINE_BYTES = 6 * 4
HEADER_BYTES = _HEADER.size + _AFFINE_BYTES   # of a record, before its maps
WRITER_OPTIONS = 'group_size:1'  # random access; zstd:3 by default


class StoreError(ValueError):
  """A malformed prior store; the message names the file."""


def shard_name(k: int) -> str:
  return f'shard-{k:05d}'


def encode_record(annot_id: int, maps: np.ndarray, affine: np.ndarray) -> bytes:
  maps = np.ascontiguousarray(maps, np.float16)
  if maps.ndim != 3:
    raise ValueError(f'maps must be (h, w, C), got {maps.shape}')
  h, w, c = maps.shape
  return (_HEADER.pack(_MAGIC, FORMAT_VERSION, b'e', h, w, c, int(annot_id))
          + np.asarray(affine, np.float32).reshape(2, 3).tobytes() + maps.tobytes())


def decode_record(data: bytes, where: str) -> Tuple[int, np.ndarray, np.ndarray]:
  """-> (annot_id, maps float16 (h, w, C), affine float32 (2, 3))."""
  if len(data) < _HEADER.size + _AFFINE_BYTES:
    raise StoreError(f'{where}: record of {len(data)} bytes is truncated')
  magic, version, dtype, h, w, c, aid = _HEADER.unpack_from(data)
  if magic != _MAGIC or version != FORMAT_VERSION:
    raise StoreError(f'{where}: not a prior record (magic {magic!r}, version {version})')
  if dtype != b'e':
    raise StoreError(f'{where}: maps have dtype code {dtype!r}, expected float16 (e)')
  want = _HEADER.size + _AFFINE_BYTES + h * w * c * 2
  if len(data) != want:
    raise StoreError(f'{where}: record of {len(data)} bytes, expected {want} for '
                     f'float16 maps ({h}, {w}, {c}): truncated or wrong dtype')
  affine = np.frombuffer(data, np.float32, 6, _HEADER.size).reshape(2, 3)
  maps = np.frombuffer(data, np.float16, h * w * c, _HEADER.size + _AFFINE_BYTES)
  return aid, maps.reshape(h, w, c), affine


def _atomic_write(path: str, data: bytes):
  tmp = f'{path}.tmp{os.getpid()}'  # several processes may write the same file
  with open(tmp, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path: str, obj):
  _atomic_write(path, json.dumps(obj, indent=1).encode())


def write_shard(store_dir: str, k: int, records: Sequence[Tuple[int, np.ndarray, np.ndarray]]):
  """Writes shard k atomically: the array_record file, then its id list
  (the commit). A shard whose id list exists is complete."""
  base = os.path.join(store_dir, shard_name(k))
  tmp = base + '.array_record.tmp'
  w = ArrayRecordWriter(tmp, WRITER_OPTIONS)
  for aid, maps, affine in records:
    w.write(encode_record(aid, maps, affine))
  w.close()
  os.replace(tmp, base + '.array_record')
  buf = _npy_bytes(np.asarray([r[0] for r in records], np.int64))
  _atomic_write(base + '.ids.npy', buf)


def _npy_bytes(a: np.ndarray) -> bytes:
  b = io.BytesIO()
  np.save(b, a, allow_pickle=False)
  return b.getvalue()


def committed_shards(store_dir: str) -> List[int]:
  if not os.path.isdir(store_dir):
    return []
  out = []
  for name in os.listdir(store_dir):
    if name.startswith('shard-') and name.endswith('.ids.npy'):
      out.append(int(name[len('shard-'):-len('.ids.npy')]))
  return sorted(out)


def read_meta(store_dir: str) -> dict:
  path = os.path.join(store_dir, META)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{store_dir} is not a prior store (no {META})')
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as e:
    raise StoreError(f'{path}: malformed JSON ({e})') from None


def is_complete(store_dir: str) -> bool:
  return os.path.exists(os.path.join(store_dir, COMPLETE))


class PriorStore:
  """Read access to a prior store (see the module docstring).

  store.get(annot_id) -> (maps float16 (h, w, C), affine float32 (2, 3)).
  """

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    self.meta = read_meta(self.path)
    for key in ('groups', 'grid', 'num_channels', 'flip_matrix', 'teacher'):
      if key not in self.meta:
        raise StoreError(f'{os.path.join(self.path, META)}: missing key {key!r}')
    self.num_channels = int(self.meta['num_channels'])
    self.grid = tuple(int(v) for v in self.meta['grid'])
    self.flip_matrix = np.asarray(self.meta['flip_matrix'], np.float32)
    if self.flip_matrix.shape != (self.num_channels, self.num_channels):
      raise StoreError(f'{os.path.join(self.path, META)}: flip_matrix has shape '
                       f'{self.flip_matrix.shape}, expected {(self.num_channels,) * 2}')
    self._index = None
    self._readers: Dict[int, object] = {}
    self._lock = threading.Lock()  # grain reads from several threads

  # Pickles to its path: each process reopens the files lazily.
  def __getstate__(self):
    return {'path': self.path}

  def __setstate__(self, state):
    self.__init__(state['path'])

  def _load_index(self):
    if self._index is not None:
      return self._index
    with self._lock:
      if self._index is None:
        self._index = self._build_index()
    return self._index

  def _build_index(self):
    ids, shard, pos = [], [], []
    for k in committed_shards(self.path):
      f = os.path.join(self.path, shard_name(k) + '.ids.npy')
      try:
        a = np.load(f, allow_pickle=False)
      except (ValueError, OSError, EOFError) as e:
        raise StoreError(f'{f}: unreadable id list ({e})') from None
      if a.ndim != 1 or a.dtype.kind not in 'iu':
        raise StoreError(f'{f}: id list must be 1-D integers, got {a.dtype} {a.shape}')
      ids.append(a.astype(np.int64))
      shard.append(np.full(len(a), k, np.int32))
      pos.append(np.arange(len(a), dtype=np.int32))
    ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    shard = np.concatenate(shard) if shard else np.zeros(0, np.int32)
    pos = np.concatenate(pos) if pos else np.zeros(0, np.int32)
    order = np.argsort(ids, kind='stable')
    ids, shard, pos = ids[order], shard[order], pos[order]
    dup = np.nonzero(ids[1:] == ids[:-1])[0]
    if len(dup):
      raise StoreError(f'{self.path}: annot_id {int(ids[dup[0]])} is stored twice')
    return ids, shard, pos

  def ids(self) -> np.ndarray:
    """Sorted int64 annot_ids of the store."""
    return self._load_index()[0]

  def __len__(self) -> int:
    return len(self._load_index()[0])

  def _row(self, annot_id) -> Optional[int]:
    ids = self._load_index()[0]
    i = int(np.searchsorted(ids, int(annot_id)))
    return i if i < len(ids) and ids[i] == int(annot_id) else None

  def __contains__(self, annot_id) -> bool:
    return self._row(annot_id) is not None

  def _reader(self, k: int):
    r = self._readers.get(k)
    if r is not None:
      return r
    with self._lock:
      return self._open_reader(k)

  def _open_reader(self, k: int):
    r = self._readers.get(k)
    if r is None:
      f = os.path.join(self.path, shard_name(k) + '.array_record')
      if not os.path.exists(f):
        raise StoreError(f'{f}: missing (its id list exists)')
      try:
        r = ArrayRecordReader(f, 'readahead_buffer_size:0')
        n = r.num_records()
      except Exception as e:  # the C++ reader raises plain RuntimeErrors
        raise StoreError(f'{f}: unreadable array_record file ({e})') from None
      want = len(np.load(os.path.join(self.path, shard_name(k) + '.ids.npy')))
      if n != want:
        raise StoreError(f'{f}: {n} records, but its id list has {want}')
      self._readers[k] = r
    return r

  def get(self, annot_id) -> Tuple[np.ndarray, np.ndarray]:
    row = self._row(annot_id)
    if row is None:
      raise KeyError(f'prior store {self.path} has no maps for annot_id {int(annot_id)}')
    _, shard, pos = self._load_index()
    k = int(shard[row])
    f = os.path.join(self.path, shard_name(k) + '.array_record')
    try:
      data = self._reader(k).read([int(pos[row])])[0]
    except StoreError:
      raise
    except Exception as e:
      raise StoreError(f'{f}: cannot read record {int(pos[row])} ({e})') from None
    aid, maps, affine = decode_record(data, f'{f} record {int(pos[row])}')
    if aid != int(annot_id):
      raise StoreError(f'{f}: record {int(pos[row])} holds annot_id {aid}, its id list '
                       f'says {int(annot_id)}')
    if maps.shape != self.grid + (self.num_channels,):
      raise StoreError(f'{f}: maps of shape {maps.shape}, meta.json says '
                       f'{self.grid + (self.num_channels,)}')
    return maps, affine

  def check_covers(self, annot_ids):
    """Raises KeyError naming the store and the first id it lacks."""
    want = np.asarray(annot_ids, np.int64).reshape(-1)
    have = self.ids()
    i = np.searchsorted(have, want)
    ok = (i < len(have)) & (have[np.minimum(i, max(len(have) - 1, 0))] == want) if len(have) \
        else np.zeros(len(want), bool)
    if not ok.all():
      first = int(want[np.argmin(ok)])
      raise KeyError(f'prior store {self.path} lacks {int((~ok).sum())} of the '
                     f'{len(want)} annot_ids of the data, e.g. annot_id {first}')

  def __repr__(self):
    return (f'PriorStore({self.path!r}, teacher={self.meta["teacher"]!r}, '
            f'grid={self.grid}, channels={self.num_channels})')


def open_store(path: str) -> PriorStore:
  """A PriorStore over the store directory `path`."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f'prior store {path!r} is not a directory')
  return PriorStore(path)


# ----------------------------------------------------------------------------
# Channel reduction.

def group_covariances(samples: np.ndarray, groups: Dict[str, List[int]]) -> Dict[str, np.ndarray]:
  """Per group, the uncentred second moment sum x x^T (float64) of the
  sample rows (N, C), and the row count under key '_count': accumulate
  batch by batch and pass to `fit_pca_from_moments` (bounded memory)."""
  x = np.asarray(samples, np.float64)
  out = {name: x[:, np.asarray(idx)].T @ x[:, np.asarray(idx)] for name, idx in groups.items()}
  out['_count'] = np.float64(len(x))
  return out


def add_moments(a: Optional[Dict[str, np.ndarray]], b: Dict[str, np.ndarray]):
  return dict(b) if a is None else {k: a[k] + b[k] for k in b}


def fit_pca(samples: np.ndarray, groups: Dict[str, List[int]], flip: np.ndarray,
            k: int) -> Tuple[np.ndarray, Dict[str, List[int]]]:
  """Uncentred PCA per channel group of the rows of samples (N, C): see
  `fit_pca_from_moments`."""
  samples = np.asarray(samples)
  return fit_pca_from_moments(group_covariances(samples, groups), groups, flip, k,
                              samples.shape[1])


def fit_pca_from_moments(moments: Dict[str, np.ndarray], groups: Dict[str, List[int]],
                         flip: np.ndarray, k: int, num_channels: int
                         ) -> Tuple[np.ndarray, Dict[str, List[int]]]:
  """Uncentred PCA per channel group from `group_covariances` moments.

  flip (C, C) permutation matrix. Each group keeps min(k, its channels)
  components, fitted on the samples and their mirrored channels (so the
  basis spans a flip-invariant subspace and B^T P B is an exact signed
  permutation). Returns the block-diagonal basis B (C, K) and the groups'
  indices among the K reduced channels.
  """
  flip = np.asarray(flip, np.float64)
  count = max(float(moments['_count']), 1.0)
  cols, new_groups, start = [], {}, 0
  for name, idx in groups.items():
    idx = np.asarray(idx)
    p = flip[np.ix_(idx, idx)]
    cov = moments[name] / count
    cov = (cov + p.T @ cov @ p) / 2  # the samples and their mirror images
    # Diagonalise inside P's +1 and -1 eigenspaces, so every component is
    # flip-even or flip-odd (B^T P B = diag(+-1) exactly).
    pw, pv = np.linalg.eigh((p + p.T) / 2)
    vals, vecs = [], []
    for sign in (1.0, -1.0):
      u = pv[:, np.abs(pw - sign) < 0.5]
      if u.shape[1] == 0:
        continue
      w, v = np.linalg.eigh(u.T @ cov @ u)
      vals.append(w)
      vecs.append(u @ v)
    vals, vecs = np.concatenate(vals), np.concatenate(vecs, 1)
    order = np.argsort(-vals, kind='stable')[:min(k, len(idx))]
    v = vecs[:, order]
    # Deterministic sign: largest-magnitude entry positive.
    v = v * np.where(v[np.argmax(np.abs(v), 0), np.arange(v.shape[1])] < 0, -1.0, 1.0)
    b = np.zeros((num_channels, v.shape[1]))
    b[idx] = v
    new_groups[name] = list(range(start, start + v.shape[1]))
    start += v.shape[1]
    cols.append(b)
  return np.concatenate(cols, 1), new_groups


PCA_BASIS = 'pca_basis.npy'


def write_pca_basis(store_dir: str, basis: np.ndarray):
  _atomic_write(os.path.join(store_dir, PCA_BASIS), _npy_bytes(np.asarray(basis, np.float64)))


def pca_basis(store_dir: str, meta: dict) -> Optional[np.ndarray]:
  """The store's PCA basis (C_full, K) float64, or None without PCA (stores
  made before the basis moved to PCA_BASIS hold it in meta.json)."""
  pca = meta.get('pca')
  if not pca:
    return None
  if 'basis' in pca:
    return np.asarray(pca['basis'], np.float64)
  f = os.path.join(store_dir, pca.get('basis_file', PCA_BASIS))
  try:
    b = np.load(f, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise StoreError(f'{f}: unreadable PCA basis ({e})') from None
  want = (len(meta.get('channel_names', [])), int(meta['num_channels']))
  if b.shape != want:
    raise StoreError(f'{f}: PCA basis of shape {b.shape}, meta.json says {want}')
  return b
