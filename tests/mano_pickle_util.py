"""Official-format MANO pickles for tests, without chumpy.

`write_official_pickle` writes a model the way the official MANO_*.pkl files
are structured: numpy arrays, shapedirs as a chumpy `Select` over a `Ch`,
v_template/posedirs as `Ch`, J_regressor as a scipy `csc_matrix`, array
payloads as python-2 style latin-1 strings, kintree root sentinel 2**32-1.
The globals it references are named exactly as in the official files
(`chumpy.ch.Ch`, `chumpy.reordering.Select`, `scipy.sparse.csc.csc_matrix`).

`read_with_fake_chumpy` is the reading side used by the golden-file script
and the benchmark to feed smplx: an ordinary unpickler with minimal chumpy
stand-ins that evaluate `.r` like chumpy does.
"""

import contextlib
import pickle
import sys
import types

import numpy as np

try:
  from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
  from numpy.core.multiarray import _reconstruct


class _Py2Array:
  """Pickles like a python-2 ndarray: payload as a latin-1 str."""

  def __init__(self, a):
    self.a = np.ascontiguousarray(a)

  def __reduce__(self):
    a = self.a
    state = (1, a.shape, a.dtype, False, a.tobytes().decode('latin1'))
    return (_reconstruct, (np.ndarray, (0,), 'b'), state)


def _fake_module(name, **attrs):
  mod = types.ModuleType(name)
  for k, v in attrs.items():
    v.__module__ = name
    v.__qualname__ = k
    setattr(mod, k, v)
  return mod


class _Obj:
  """A pickled object with a state dict (NEWOBJ + BUILD, like chumpy's)."""

  def __init__(self, state):
    self._state = state

  def __reduce_ex__(self, protocol):
    import copyreg
    return (copyreg.__newobj__, (type(self),), self._state)


@contextlib.contextmanager
def _official_globals():
  """Temporarily makes chumpy/scipy.sparse.csc names resolve to stand-ins."""
  ch_cls = type('Ch', (_Obj,), {})
  sel_cls = type('Select', (_Obj,), {})
  csc_cls = type('csc_matrix', (_Obj,), {})
  mods = {
      'chumpy': _fake_module('chumpy'),
      'chumpy.ch': _fake_module('chumpy.ch', Ch=ch_cls),
      'chumpy.reordering': _fake_module('chumpy.reordering', Select=sel_cls),
      'scipy.sparse.csc': _fake_module('scipy.sparse.csc', csc_matrix=csc_cls),
  }
  saved = {k: sys.modules.get(k) for k in mods}
  sys.modules.update(mods)
  try:
    yield ch_cls, sel_cls, csc_cls
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v


def _ch_state(x):
  # The attributes a pickled chumpy Ch carries besides its data.
  return {'x': _Py2Array(x), '_dirty_vars': set(), '_itr': None,
          '_depends_on_deps': {}, '_make_dense': False, '_make_sparse': False}


def write_official_pickle(model, path):
  """Writes `model` (a ManoModel) in the official MANO pickle structure."""
  f64 = lambda x: np.asarray(x, np.float64)
  with _official_globals() as (ch, select, csc):
    sd = f64(model.shapedirs)
    # Like the official file: a Select picking the shape dirs out of a
    # larger Ch (here padded with junk components that must not leak).
    big = np.concatenate([sd, np.full(sd.shape[:2] + (2,), 7.0)], -1)
    idxs = np.arange(big.size).reshape(big.shape)[:, :, :sd.shape[2]].ravel()
    sel_state = dict(_ch_state(np.zeros(0)))
    sel_state.pop('x')
    sel_state.update(a=ch(_ch_state(big)), idxs=_Py2Array(idxs),
                     preferred_shape=sd.shape)
    jr = f64(model.J_regressor)
    cols = [np.nonzero(jr[:, c])[0] for c in range(jr.shape[1])]
    indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])])
    indices = np.concatenate(cols) if cols else np.zeros(0, np.int32)
    data_ = np.concatenate([jr[c, i] for i, c in enumerate(cols)])
    csc_state = {'data': _Py2Array(data_), 'indices': _Py2Array(indices.astype(np.int32)),
                 'indptr': _Py2Array(indptr.astype(np.int32)), '_shape': jr.shape,
                 'maxprint': 50}
    parents = np.array(model.parents, np.int64)
    parents[0] = 2 ** 32 - 1
    kintree = np.stack([parents, np.arange(len(parents))])
    payload = {
        'hands_components': _Py2Array(f64(model.hands_components)),
        'f': _Py2Array(np.asarray(model.faces, np.uint32)),
        'J_regressor': csc(csc_state),
        'kintree_table': _Py2Array(kintree),
        'J': _Py2Array(jr @ f64(model.v_template)),
        'bs_style': 'lbs',
        'hands_coeffs': _Py2Array(np.zeros((4, f64(model.hands_components).shape[1]))),
        'weights': _Py2Array(f64(model.weights)),
        'posedirs': ch(_ch_state(f64(model.posedirs))),
        'hands_mean': _Py2Array(f64(model.hands_mean)),
        'v_template': ch(_ch_state(f64(model.v_template))),
        'shapedirs': select(sel_state),
        'bs_type': 'lrotmin',
    }
    with open(path, 'wb') as fh:
      pickle.dump(payload, fh, protocol=2)


# ---------------------------------------------------------------------------
# Reading side for smplx (reference runs only).

class _FakeCh:
  def __setstate__(self, d):
    self.__dict__.update(d)

  @property
  def r(self):
    return np.asarray(self.x)

  def __array__(self, dtype=None, copy=None):
    return np.asarray(self.r, dtype=dtype)


class _FakeSelect(_FakeCh):
  @property
  def r(self):
    out = np.asarray(self.a.r).ravel()[np.asarray(self.idxs).ravel()]
    return out.reshape(self.preferred_shape)


class _RefUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if module == 'chumpy.ch' and name == 'Ch':
      return _FakeCh
    if module == 'chumpy.reordering' and name == 'Select':
      return _FakeSelect
    if module.startswith('scipy.sparse') and name == 'csc_matrix':
      return _csc_from_state
    return super().find_class(module, name)


class _csc_from_state:
  """Builds a real scipy csc_matrix from the pickled attribute dict."""

  def __setstate__(self, d):
    import scipy.sparse
    shape = d.get('_shape', d.get('shape'))
    self.m = scipy.sparse.csc_matrix((d['data'], d['indices'], d['indptr']), shape=shape)


def read_with_fake_chumpy(path):
  """The pickle's dict with chumpy objects evaluated to arrays and a real csc."""
  with open(path, 'rb') as fh:
    data = _RefUnpickler(fh, encoding='latin1').load()
  out = {}
  for k, v in data.items():
    if isinstance(v, _FakeCh):
      v = np.array(v.r)
    elif isinstance(v, _csc_from_state):
      v = v.m
    out[k] = v
  return out


def make_smplx_mano(model, tmp_dir, *, use_pca=False, num_pca_comps=6,
                    flat_hand_mean=False, dtype=None, batch_size=1):
  """smplx.MANO built from `model` written as an official pickle (needs torch+smplx)."""
  import os
  import smplx
  import torch
  from smplx.utils import Struct
  side = model.side
  path = os.path.join(tmp_dir, f'MANO_{side.upper()}.pkl')
  write_official_pickle(model, path)
  data = read_with_fake_chumpy(path)
  return smplx.MANO(model_path=path, is_rhand=(side == 'right'),
                    data_struct=Struct(**data), use_pca=use_pca,
                    num_pca_comps=num_pca_comps, flat_hand_mean=flat_hand_mean,
                    dtype=dtype or torch.float32, batch_size=batch_size)
