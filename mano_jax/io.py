"""Loading MANO model files: the official pickles (without chumpy) and our .npz.

The official MANO_{RIGHT,LEFT}.pkl are python-2 pickles holding numpy arrays,
chumpy `Ch`/`Select` objects and a scipy `csc_matrix`. Unpickling normally
imports those classes and lets the file call any global it names, i.e. run
code. `_SafeUnpickler` instead maps the handful of globals the official files
reference to inert stand-ins and refuses every other global before anything
is called, so a hostile file runs nothing.
"""

import functools
import io as _io
import os
import pickle
from typing import Optional

import numpy as np

from mano_jax import model as model_lib


ASSET_DIR = os.path.join(os.path.dirname(__file__), 'assets')


class ManoFileError(ValueError):
  """A model file that cannot be read; the message names the file (and key)."""


class _ChStub:
  """Inert stand-in for chumpy.ch.Ch: keeps the pickled state only."""

  def __setstate__(self, state):
    self.state = state if isinstance(state, dict) else {'_raw': state}


class _SelectStub(_ChStub):
  """Inert stand-in for chumpy.reordering.Select."""


class _ReshapeStub(_ChStub):
  """Inert stand-in for chumpy.reordering.Reshape."""


class _CscStub:
  """Inert stand-in for scipy.sparse csc_matrix: keeps the pickled state."""

  def __setstate__(self, state):
    self.state = state


def _reconstruct(subtype, shape, dtype_code):
  # numpy's own `_reconstruct`, restricted to plain ndarrays: pickles of
  # ndarray subclasses would name other globals, which are refused anyway.
  if subtype is not np.ndarray:
    raise pickle.UnpicklingError('array reconstruct of a non-ndarray type')
  return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _frombuffer(buf, dtype, shape, order):
  return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


def _dtype(*args):
  return np.dtype(*args)


# Every global an official MANO pickle (python 2, or re-saved under python 3)
# can reference, mapped to a harmless callable. Nothing else is allowed.
_ALLOWED_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'): _reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): _reconstruct,
    ('numpy.core.numeric', '_frombuffer'): _frombuffer,
    ('numpy._core.numeric', '_frombuffer'): _frombuffer,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): _dtype,
    ('__builtin__', 'set'): set,
    ('builtins', 'set'): set,
    ('chumpy.ch', 'Ch'): _ChStub,
    ('chumpy.reordering', 'Select'): _SelectStub,
    ('chumpy.reordering', 'Reshape'): _ReshapeStub,
    ('scipy.sparse.csc', 'csc_matrix'): _CscStub,
    ('scipy.sparse._csc', 'csc_matrix'): _CscStub,
}


class _SafeUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f'refusing global {module}.{name}: a MANO model file only '
          'references numpy arrays, chumpy Ch/Select and scipy csc_matrix'
      ) from None


def _to_array(obj, key: str, source: str):
  """Evaluates a stub (Ch, Select, Reshape, csc) or array to a numpy array."""
  if isinstance(obj, np.ndarray):
    return obj
  if isinstance(obj, _SelectStub):
    st = obj.state
    for k in ('a', 'idxs'):
      if k not in st:
        raise ManoFileError(f'{source}: key {key!r}: chumpy Select without {k!r}')
    base = _to_array(st['a'], key, source).ravel()
    idxs = np.asarray(st['idxs']).ravel()
    if idxs.size and (idxs.min() < 0 or idxs.max() >= base.size):
      raise ManoFileError(f'{source}: key {key!r}: Select index out of range')
    out = base[idxs]
    shape = st.get('preferred_shape')
    return out.reshape(shape) if shape is not None else out
  if isinstance(obj, _ReshapeStub):
    return _to_array(obj.state['a'], key, source).reshape(obj.state['newshape'])
  if isinstance(obj, _ChStub):
    if 'x' not in obj.state:
      raise ManoFileError(f'{source}: key {key!r}: chumpy Ch without data')
    return _to_array(obj.state['x'], key, source)
  if isinstance(obj, _CscStub):
    return _csc_to_dense(obj.state, key, source)
  if isinstance(obj, (list, tuple, int, float)):
    return np.asarray(obj)
  raise ManoFileError(f'{source}: key {key!r}: unexpected type {type(obj).__name__}')


def _csc_to_dense(state, key, source):
  if not isinstance(state, dict):
    raise ManoFileError(f'{source}: key {key!r}: malformed csc_matrix state')
  shape = state.get('_shape', state.get('shape'))
  try:
    data = np.asarray(state['data'], np.float64)
    indices = np.asarray(state['indices'], np.int64)
    indptr = np.asarray(state['indptr'], np.int64)
    n_rows, n_cols = (int(s) for s in shape)
  except (KeyError, TypeError, ValueError) as e:
    raise ManoFileError(f'{source}: key {key!r}: malformed csc_matrix ({e})') from None
  if (indptr.shape != (n_cols + 1,) or indptr[-1] != data.size
      or indices.shape != data.shape or np.any(np.diff(indptr) < 0)
      or (indices.size and (indices.min() < 0 or indices.max() >= n_rows))):
    raise ManoFileError(f'{source}: key {key!r}: inconsistent csc_matrix arrays')
  dense = np.zeros((n_rows, n_cols), np.float64)
  cols = np.repeat(np.arange(n_cols), np.diff(indptr))
  np.add.at(dense, (indices, cols), data)
  return dense


def _side_from_name(path: str) -> Optional[str]:
  base = os.path.basename(path).upper()
  has_r, has_l = 'RIGHT' in base, 'LEFT' in base
  if has_r != has_l:
    return 'right' if has_r else 'left'
  return None


def _resolve_side(path, arg_side, file_side):
  name_side = _side_from_name(path)
  known = {s for s in (name_side, file_side) if s is not None}
  if arg_side is not None:
    if arg_side not in ('right', 'left'):
      raise ValueError(f'side must be "right" or "left", got {arg_side!r}')
    if known and known != {arg_side}:
      raise ManoFileError(
          f'{path}: side={arg_side!r} contradicts the file, which is '
          f'{" and ".join(sorted(known))}')
    return arg_side
  if len(known) > 1:
    raise ManoFileError(f'{path}: file name says {name_side} but the file '
                        f'says {file_side}')
  if not known:
    raise ManoFileError(f'{path}: cannot tell the side from the file name; '
                        'pass side="right" or side="left"')
  return known.pop()


def _read_pickle_dict(path):
  try:
    with open(path, 'rb') as fh:
      raw = fh.read()
  except OSError as e:
    raise ManoFileError(f'{path}: cannot read file ({e.strerror})') from None
  try:
    data = _SafeUnpickler(_io.BytesIO(raw), encoding='latin1').load()
  except pickle.UnpicklingError as e:
    raise ManoFileError(f'{path}: not a loadable MANO pickle: {e}') from None
  except (EOFError, ValueError, TypeError, AttributeError, IndexError,
          KeyError, MemoryError) as e:
    raise ManoFileError(f'{path}: truncated or corrupt pickle '
                        f'({type(e).__name__}: {e})') from None
  if not isinstance(data, dict):
    raise ManoFileError(f'{path}: expected a dict of model arrays, got '
                        f'{type(data).__name__}')
  return data


_REQUIRED = ('v_template', 'shapedirs', 'posedirs', 'J_regressor', 'weights',
             'f', 'kintree_table', 'hands_components', 'hands_mean')


def _arrays_from_dict(data, source):
  missing = [k for k in _REQUIRED if k not in data]
  if missing:
    raise ManoFileError(f'{source}: missing key(s) {missing}')
  arrays = {}
  for k in _REQUIRED:
    try:
      arrays[k] = np.asarray(_to_array(data[k], k, source))
    except ManoFileError:
      raise
    except Exception as e:  # malformed nested state: name the key
      raise ManoFileError(f'{source}: key {k!r}: cannot read ({e})') from None
  kt = arrays.pop('kintree_table')
  if kt.ndim != 2 or kt.shape[0] != 2:
    raise ManoFileError(f'{source}: key \'kintree_table\': expected shape '
                        f'(2, J), got {kt.shape}')
  # Row 0 holds parent ids by joint; the root's entry is a sentinel
  # (4294967295 in the official files), normalised to -1.
  parents = [-1] + [int(p) for p in kt[0, 1:]]
  arrays['faces'] = arrays.pop('f').astype(np.int64)
  return arrays, parents


def load(path, *, side: Optional[str] = None, fix_left_shapedirs: bool = False,
         tip_ids=None) -> model_lib.ManoModel:
  """Loads an official MANO pickle or a mano_jax .npz as a ManoModel.

  Args:
    path: MANO_RIGHT.pkl / MANO_LEFT.pkl (official), or a .npz written by
      `mano_jax.convert` / `save_npz`.
    side: 'right' or 'left'; by default taken from the file name (RIGHT/LEFT)
      or the .npz. A contradiction is an error.
    fix_left_shapedirs: apply InterHand2.6M's left-hand fix,
      shapedirs[:, 0, :] *= -1 (needed for InterHand2.6M's MANO fits, not
      for data sets fitted with the original left model, e.g. DexYCB).
    tip_ids: 5 fingertip vertex ids (thumb, index, middle, ring, pinky); by
      default the .npz's, or MANO's (745, 317, 445, 556, 673) for a
      778-vertex pickle.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ManoFileError(f'{path}: no such file')
  if path.endswith('.npz'):
    arrays, parents, file_side, file_tips, name = _read_npz(path)
  else:
    data = _read_pickle_dict(path)
    arrays, parents = _arrays_from_dict(data, path)
    file_side, file_tips = None, None
    name = f'MANO ({os.path.basename(path)})'
  side = _resolve_side(path, side, file_side)
  if tip_ids is None:
    tip_ids = file_tips
  if tip_ids is None:
    if arrays['v_template'].shape[0] != model_lib.MANO_NUM_VERTICES:
      raise ManoFileError(
          f'{path}: {arrays["v_template"].shape[0]} vertices is not MANO\'s '
          f'{model_lib.MANO_NUM_VERTICES}; pass tip_ids=(thumb, index, middle, '
          'ring, pinky) vertex ids')
    tip_ids = model_lib.MANO_TIP_VERTEX_IDS
  if fix_left_shapedirs:
    if side != 'left':
      raise ValueError(f'{path}: fix_left_shapedirs=True applies to the left '
                       f'model only, this one is {side}')
    arrays['shapedirs'] = np.array(arrays['shapedirs'], np.float64)
    arrays['shapedirs'][:, 0, :] *= -1
  try:
    return model_lib.make_model(arrays, parents=parents, side=side,
                                tip_ids=tip_ids, name=name, source=path)
  except ValueError as e:
    raise ManoFileError(str(e)) from None


def _read_npz(path):
  try:
    with np.load(path, allow_pickle=False) as z:
      data = {k: z[k] for k in z.files}
  except ValueError as e:
    raise ManoFileError(f'{path}: not a mano_jax .npz ({e})') from None
  except Exception as e:  # zipfile.BadZipFile, EOFError, OSError...
    raise ManoFileError(f'{path}: truncated or corrupt .npz '
                        f'({type(e).__name__}: {e})') from None
  arrays, parents = _arrays_from_dict(data, path)
  file_side = str(data['side']) if 'side' in data else None
  tips = tuple(int(t) for t in data['tip_ids']) if 'tip_ids' in data else None
  name = str(data['name']) if 'name' in data else os.path.basename(path)
  return arrays, parents, file_side, tips, name


def save_npz(model: model_lib.ManoModel, path) -> None:
  """Writes a model as a .npz that `load` reads back exactly (no pickle)."""
  kintree = np.stack([np.asarray(model.parents), np.arange(model.num_joints)])
  np.savez_compressed(
      path,
      v_template=np.asarray(model.v_template, np.float64),
      shapedirs=np.asarray(model.shapedirs, np.float64),
      posedirs=np.asarray(model.posedirs, np.float64),
      J_regressor=np.asarray(model.J_regressor, np.float64),
      weights=np.asarray(model.weights, np.float64),
      f=np.asarray(model.faces, np.int32),
      kintree_table=kintree.astype(np.int64),
      hands_components=np.asarray(model.hands_components, np.float64),
      hands_mean=np.asarray(model.hands_mean, np.float64),
      side=np.asarray(model.side), tip_ids=np.asarray(model.tip_ids, np.int64),
      name=np.asarray(model.name))


@functools.lru_cache(maxsize=None)
def load_procedural(side: str = 'right', *,
                    fix_left_shapedirs: bool = False) -> model_lib.ManoModel:
  """The shipped procedural hand (NOT MANO, see mano_jax.procedural).

  Same format and kinematic tree as MANO, its own mesh. `side`: 'right' or
  'left' (the mirror image of the right). `fix_left_shapedirs` as in `load`
  (for data in InterHand2.6M's convention).
  """
  if side not in ('right', 'left'):
    raise ValueError(f'load_procedural: side must be "right" or "left", got {side!r}')
  path = os.path.join(ASSET_DIR, f'procedural_hand_{side}.npz')
  if not os.path.exists(path):
    raise ManoFileError(f'{path} is missing; regenerate it with `make asset`')
  return load(path, side=side, fix_left_shapedirs=fix_left_shapedirs)
