"""Loading official-format pickles safely, .npz round trips, bad files."""

import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

import mano_jax
from mano_jax import io
from tests import mano_pickle_util

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def official_files(tmp_path_factory):
  d = tmp_path_factory.mktemp('mano')
  paths = {}
  for side in ('right', 'left'):
    paths[side] = str(d / f'MANO_{side.upper()}.pkl')
    mano_pickle_util.write_official_pickle(mano_jax.load_procedural(side), paths[side])
  return paths


def _assert_same_model(a, b):
  for k in ('v_template', 'shapedirs', 'posedirs', 'J_regressor', 'weights',
            'faces', 'hands_components', 'hands_mean'):
    np.testing.assert_array_equal(np.asarray(getattr(a, k)), np.asarray(getattr(b, k)), err_msg=k)
  assert a.parents == b.parents and a.side == b.side


def test_official_pickle_loads_without_chumpy(official_files):
  assert 'chumpy' not in sys.modules
  for side, path in official_files.items():
    m = mano_jax.load(path, tip_ids=mano_jax.load_procedural(side).tip_ids)
    _assert_same_model(m, mano_jax.load_procedural(side))
  assert 'chumpy' not in sys.modules


def test_official_pickle_uses_only_allowed_globals(official_files):
  import pickletools
  with open(official_files['right'], 'rb') as fh:
    ops = list(pickletools.genops(fh.read()))
  globs = {arg for op, arg, _ in ops if op.name == 'GLOBAL'}
  assert {'chumpy.ch Ch', 'chumpy.reordering Select', 'scipy.sparse.csc csc_matrix',
          '__builtin__ set'} <= globs
  assert all(tuple(g.split(' ')) in io._ALLOWED_GLOBALS for g in globs)


def _py2_array_pickle():
  """A python-2 pickle (SHORT_BINSTRING payloads) of {'v_template': [1.5, -2.0]}."""
  raw = struct.pack('<2d', 1.5, -2.0)
  dtype = (b'cnumpy\ndtype\nU\x02f8K\x00K\x01\x87R'
           b'(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb')
  arr = (b'cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R'
         b'(K\x01K\x02\x85' + dtype + b'\x89U' + bytes([len(raw)]) + raw + b'tb')
  return b'\x80\x02}U\nv_template' + arr + b's.'


def test_python2_string_payloads():
  data = io._SafeUnpickler(__import__('io').BytesIO(_py2_array_pickle()),
                           encoding='latin1').load()
  np.testing.assert_array_equal(data['v_template'], [1.5, -2.0])


class _Evil:
  def __reduce__(self):
    return (os.system, ('touch pwned_by_pickle',))


def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = tmp_path / 'MANO_RIGHT.pkl'
  path.write_bytes(pickle.dumps({'v_template': _Evil()}, protocol=2))
  with pytest.raises(mano_jax.ManoFileError, match=r'MANO_RIGHT.pkl.*refusing global (posix|os)\.system'):
    mano_jax.load(path)
  assert not (tmp_path / 'pwned_by_pickle').exists()
  # eval/exec-style globals and a class smuggled through a nested object.
  for payload in (pickle.dumps(eval), pickle.dumps({'a': [1, {'b': print}]})):
    path.write_bytes(payload)
    with pytest.raises(mano_jax.ManoFileError, match='refusing global'):
      mano_jax.load(path)


def test_truncated_pickle(official_files, tmp_path):
  raw = open(official_files['right'], 'rb').read()
  for cut in (10, len(raw) // 2, len(raw) - 3):
    p = tmp_path / 'MANO_RIGHT.pkl'
    p.write_bytes(raw[:cut])
    with pytest.raises(mano_jax.ManoFileError, match=r'MANO_RIGHT.pkl.*(truncated|corrupt)'):
      mano_jax.load(p)


def test_missing_key_and_wrong_shape(tmp_path):
  model = mano_jax.load_procedural('right')
  path = tmp_path / 'MANO_RIGHT.pkl'
  mano_pickle_util.write_official_pickle(model, path)
  data = mano_pickle_util.read_with_fake_chumpy(path)
  for key, value, match in [
      ('posedirs', np.zeros((5, 3, 135)), r"key 'posedirs': expected shape \(833, 3, 135\)"),
      ('weights', np.zeros((model.num_vertices, 15)), "key 'weights'"),
      ('hands_mean', np.full(45, np.nan), "key 'hands_mean': contains NaN"),
      ('f', np.full((3, 3), 10**6), "key 'f': vertex index out of range"),
      ('v_template', None, r"missing key\(s\) \['v_template'\]")]:
    bad = dict(data)
    bad['J_regressor'] = np.asarray(bad['J_regressor'].todense())
    if value is None:
      del bad[key]
    else:
      bad[key] = value
    npz = tmp_path / 'bad_right.npz'
    np.savez(npz, **bad)
    with pytest.raises(mano_jax.ManoFileError, match=match) as e:
      mano_jax.load(npz, tip_ids=model.tip_ids)
    assert 'bad_right.npz' in str(e.value)


def test_side_resolution(official_files, tmp_path):
  tips = mano_jax.load_procedural('right').tip_ids
  with pytest.raises(mano_jax.ManoFileError, match='contradicts'):
    mano_jax.load(official_files['right'], side='left', tip_ids=tips)
  plain = tmp_path / 'hand.pkl'
  plain.write_bytes(open(official_files['right'], 'rb').read())
  with pytest.raises(mano_jax.ManoFileError, match='cannot tell the side'):
    mano_jax.load(plain, tip_ids=tips)
  assert mano_jax.load(plain, side='right', tip_ids=tips).side == 'right'
  # A non-MANO vertex count needs explicit fingertip ids.
  with pytest.raises(mano_jax.ManoFileError, match='tip_ids'):
    mano_jax.load(official_files['right'])


def test_fix_left_shapedirs(official_files):
  tips = mano_jax.load_procedural('left').tip_ids
  plain = mano_jax.load(official_files['left'], tip_ids=tips)
  fixed = mano_jax.load(official_files['left'], tip_ids=tips, fix_left_shapedirs=True)
  np.testing.assert_array_equal(fixed.shapedirs[:, 0], -plain.shapedirs[:, 0])
  np.testing.assert_array_equal(fixed.shapedirs[:, 1:], plain.shapedirs[:, 1:])
  with pytest.raises(ValueError, match='left model only'):
    mano_jax.load(official_files['right'], tip_ids=tips, fix_left_shapedirs=True)


def test_convert_cli_round_trip(official_files, tmp_path):
  out = tmp_path / 'right.npz'
  cmd = [sys.executable, '-m', 'mano_jax.convert', official_files['right'], str(out)]
  r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
  # 833 vertices is not MANO: the fingertip ids must be given.
  assert r.returncode == 2 and 'tip_ids' in r.stderr and 'MANO_RIGHT.pkl' in r.stderr
  model = mano_jax.load_procedural('right')
  tips = ','.join(map(str, model.tip_ids))
  r = subprocess.run(cmd + ['--tip_ids', tips], capture_output=True, text=True, cwd=REPO)
  assert r.returncode == 0, r.stderr
  again = mano_jax.load(out)
  _assert_same_model(again, model)
  assert again.tip_ids == model.tip_ids


def test_missing_file_and_corrupt_npz(tmp_path):
  with pytest.raises(mano_jax.ManoFileError, match='no such file'):
    mano_jax.load(tmp_path / 'MANO_RIGHT.pkl')
  p = tmp_path / 'x_right.npz'
  p.write_bytes(b'PK\x03\x04 not really a zip')
  with pytest.raises(mano_jax.ManoFileError, match='x_right.npz'):
    mano_jax.load(p)
