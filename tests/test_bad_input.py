"""Bad input at every public entry point: a clear error naming the file, key
or argument, or a counted skip where the README says so; and nothing already
written (store, report folder, inference folder, workdir) is touched.

The suite is the index of the whole project's bad-input coverage: cases
tested elsewhere are listed here, not repeated.

| entry point | bad input | behaviour | test |
|---|---|---|---|
| mano_jax.load | hostile pickle (os.system, eval, nested print; protocol 2) | ManoFileError "refusing global", runs nothing | test_mano_io::test_hostile_pickle_is_refused_and_runs_nothing |
| mano_jax.load | hostile pickle, protocols 0-5, INST, persistent id, extension code, non-ndarray reconstruct, object array | same | here: test_hostile_pickles_are_refused_before_anything_runs |
| mano_jax.load | truncated pickle / empty file / not a dict | ManoFileError "truncated or corrupt" | test_mano_io::test_truncated_pickle; here (empty, list) |
| mano_jax.load | missing key, wrong shape, NaN array, face index out of range | ManoFileError naming the key | test_mano_io::test_missing_key_and_wrong_shape |
| mano_jax.load | missing file, corrupt .npz / object array in .npz | ManoFileError | test_mano_io::test_missing_file_and_corrupt_npz; here (object array) |
| mano_jax.load | side contradicting the file name, no tip ids | ManoFileError | test_mano_io::test_side_resolution |
| mano_jax.forward | wrong shapes, unknown options, NaN pose | ValueError naming the argument | test_mano_api::test_bad_input_raises |
| mano_jax.forward | NaN betas, Inf transl; NaN under jit | ValueError; under jit NaN comes out (README) | here |
| InterHand26M | malformed JSON, missing keys, wrong types, bad ids, non-rotation camrot, focal | AnnotationError naming file and key | test_data_interhand::test_malformed_annotations_raise_naming_file_and_key, ::test_invalid_json_and_missing_files, ::test_jsonstream_errors_name_the_file |
| InterHand26M | zero or non-integer image size; NaN campos, princpt/camrot shape, focal 0 | AnnotationError | here |
| InterHand26M | missing images | counted, logged skip (strict: error) | test_data_interhand::test_missing_images_are_counted_logged_or_strict |
| InterHand26M | subset ids not in the split, malformed subset file | counted skip (strict: error); error naming the line | test_data_interhand::test_subset_file_and_iterable |
| HIC | malformed JSON, missing keys, bad hand_type/bbox shape; bad PLY | AnnotationError / ValueError naming file | test_data_hic::test_malformed_json_raises_naming_the_key, ::test_bad_meshes_raise_naming_the_file |
| HIC | missing image or mesh | counted, logged skip (strict: error) | test_data_hic::test_missing_files_are_counted_or_strict; here (JSON fine, files absent) |
| HIC | zero/non-integer image size, non-numeric or NaN bbox | AnnotationError | here |
| ReInterHand | malformed or missing JSON, missing keys, wrong shapes, NaN, non-rotation R, zero focal, fisheye D | AnnotationError naming file and key | test_data_reinterhand::test_malformed_files_raise_naming_file_and_key, ::test_missing_or_invalid_json_files |
| ReInterHand | missing images (cached index) | counted, logged skip (strict: error) | test_data_reinterhand::test_missing_images_are_counted_logged_or_strict |
| COCOWholeBody | missing file, malformed wholebody or NeuralAnnot JSON, bad split | AnnotationError naming file and key | test_data_coco_wholebody::test_missing_annotation_file, ::test_bad_wholebody_file, ::test_bad_mano_file, ::test_bad_split |
| COCOWholeBody | missing images | counted, logged skip (strict: error) | test_data_coco_wholebody::test_missing_images_are_skipped_counted_or_strict |
| FreiHAND | malformed, truncated or missing JSON, wrong shapes, NaN, skewed K, vertex count vs model | AnnotationError naming file and entry | test_data_freihand::test_malformed_files_raise_naming_file_and_entry, ::test_bad_json_and_missing_files |
| FreiHAND | missing images | counted, logged skip (strict: error) | test_data_freihand::test_missing_images_are_skipped_and_counted |
| FreiHAND pred.json | wrong structure, shapes, NaN, mm instead of m, wrong sample count | PredictionsError naming the file | test_eval_freihand::test_read_pred_json_errors_name_the_file, ::test_eval_py_scores_a_pred_json |
| HO3D | bad or hostile pickle, missing keys, shapes, NaN, bad camMat, missing list/meta file | AnnotationError naming file and key, nothing unpickled runs | test_data_ho3d::test_bad_pickles_name_the_file, ::test_bad_train_meta_names_file_and_key, ::test_bad_evaluation_meta, ::test_missing_list_or_meta_file_and_bad_lines |
| HO3D | missing images | counted, logged skip (strict: error) | test_data_ho3d::test_missing_images_skipped_counted_or_strict |
| config.data.mix | part without a root, unknown field, stores with different channels | FileNotFoundError / ValueError naming config.data.mix.<part> | test_train_stage1::test_training_on_a_mix |
| synthetic set (WORKDIR/data/synthetic) | made with other options than the config's (frames, seed, size, orientations, cameras) | ValueError naming both option sets; the set untouched | test_data_synthetic::test_a_set_made_with_other_cameras_is_refused_not_overwritten |
| pipeline | missing image | OSError naming the file | test_data_pipeline::test_missing_image_names_the_file |
| pipeline | empty, truncated, non-image file or bytes | OSError naming the file / annotation | here |
| prior store | missing id, truncated shard, float32 record, truncated record, not a store | KeyError / StoreError naming the file | test_teacher_store::test_round_trip_missing_id_and_pickle, ::test_bad_files_are_named |
| prior store | malformed/incomplete meta.json, ids of wrong dtype, missing shard, record count | StoreError naming the file | here |
| prior store | ids the data needs but the store lacks | KeyError naming store and id | test_teacher_oracle::test_prior_store_from_config |
| precompute | interrupted run | rerun resumes, equals an uninterrupted run | test_teacher_oracle::test_precompute_resume_equals_uninterrupted |
| precompute | rerun with other arguments | refused | test_teacher_store::test_pca_basis_and_flip_matrix; here (store byte-identical) |
| precompute | NaN teacher output, failing example, duplicate ids | error, finished shards byte-identical, not marked complete | here |
| train.py | config typo, value of the wrong type | one-line usage error naming the flag (exit 2, no traceback) | here |
| configs.*.get_config() from Python | setting a field that does not exist (typo) | AttributeError naming the key (configs come locked) | here |
| train.py | batch size not dividing the devices | ValueError naming config.batch_size; checkpoints untouched | here |
| train | NaN loss | stops, last checkpoint kept | test_train_loop::test_nonfinite_step_stops_and_keeps_the_checkpoints; test_train_stage1::test_nonfinite_step_stops_and_keeps_checkpoint (slow) |
| eval | corrupt or missing checkpoint | CheckpointError | test_train_stage1::test_eval_scores_the_checkpoint; test_train_checkpoint::test_all_corrupt_is_an_error_not_a_fresh_start |
| Predictions | missing id, wrong shape, unknown units, null hand the GT has | PredictionsError naming the entry | test_eval_predictions::test_bad_files_name_the_entry |
| Predictions | NaN/Inf, units contradicting the numbers, duplicate ids, wrong types, corrupt npz | PredictionsError naming the entry | here |
| eval.py --predictions | bad file | non-zero exit naming the entry; --out untouched | here |
| infer | corrupt image, bad boxes | InferenceError naming the file/flag | test_train_stage1::test_infer_writes_hands_meshes_and_overlays |
| infer | empty/truncated image, missing checkpoint, non-positive focal | InferenceError / CheckpointError; --out untouched | here |
| python -m a2p_jax.build_pairs | no --num for perturbed pairs, --stage1_step without --stage1_workdir | usage error naming the flag, nothing written | here |
| train stage 2 (a2p_diffusion.py) | no stage-1 prediction pairs while stage1_fraction > 0; a pairs file that does not exist | ValueError / FileNotFoundError naming the config field and the command that builds them, before anything is read | here |
"""

import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import mano_jax
from a2p_jax import infer
from a2p_jax.data import hic, pipeline
from a2p_jax.data.hands import load_hand_models
from a2p_jax.data.interhand26m import AnnotationError, InterHand26M
from a2p_jax.eval import run as eval_run
from a2p_jax.eval.predictions import Predictions, PredictionsError
from a2p_jax.teacher import precompute as pre
from tests import tiny_training
from a2p_jax.teacher import store as store_lib
from a2p_jax.runtime import checkpoint as ckpt_lib
from tests import interhand_fixtures as fx
from tests.test_teacher_store import _FakeTeacher

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLIT = 'test'


def snapshot(root):
  """{relative path: bytes} of every file under root (the 'nothing lost' check)."""
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      p = os.path.join(d, f)
      with open(p, 'rb') as fh:
        out[os.path.relpath(p, root)] = fh.read()
  return out


def _jpeg(path, size=(48, 64)):
  os.makedirs(os.path.dirname(str(path)), exist_ok=True)
  Image.fromarray(np.full(size + (3,), 90, np.uint8)).save(str(path), quality=90)
  return str(path)


def _corrupt_images(tmp_path):
  """{kind: path} of unreadable image files."""
  good = _jpeg(tmp_path / 'src' / 'good.jpg', (64, 64))
  raw = open(good, 'rb').read()
  paths = {}
  for kind, data in (('empty', b''), ('truncated', raw[:len(raw) // 3]),
                     ('text', b'not an image at all\n')):
    p = tmp_path / 'src' / f'{kind}.jpg'
    p.write_bytes(data)
    paths[kind] = str(p)
  return paths


# ----------------------------------------------------------------------------
# MANO.

class _Evil:
  def __reduce__(self):
    return (os.system, ('touch pwned_by_pickle',))


HOSTILE = {
    **{f'protocol{k}': pickle.dumps({'v_template': _Evil()}, protocol=k) for k in (0, 1, 3, 4, 5)},
    # Text-opcode INST (python 2 style) calling os.system.
    'inst': b"(S'touch pwned_by_pickle'\nios\nsystem\n.",
    'persistent_id': b'\x80\x02Pfoo\n.',
    'extension_code': b'\x80\x02\x82\x01.',
    # An allowed global (numpy's _reconstruct) used to build a non-ndarray type.
    'reconstruct_set': (b'\x80\x02cnumpy.core.multiarray\n_reconstruct\nc__builtin__\nset\n'
                        b'K\x00\x85U\x01b\x87R.'),
    # An object array: its items need _codecs.encode, refused.
    'object_array': pickle.dumps({'v_template': np.array([1, 'a'], dtype=object)}, protocol=2),
}


@pytest.mark.parametrize('name', sorted(HOSTILE))
def test_hostile_pickles_are_refused_before_anything_runs(name, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = tmp_path / 'MANO_RIGHT.pkl'
  path.write_bytes(HOSTILE[name])
  with pytest.raises(mano_jax.ManoFileError, match='MANO_RIGHT.pkl'):
    mano_jax.load(path)
  assert not (tmp_path / 'pwned_by_pickle').exists()


@pytest.mark.parametrize('data,match', [
    (b'', 'truncated or corrupt'),
    (pickle.dumps([1, 2], protocol=2), 'expected a dict'),
])
def test_empty_or_non_dict_pickle(data, match, tmp_path):
  path = tmp_path / 'MANO_LEFT.pkl'
  path.write_bytes(data)
  with pytest.raises(mano_jax.ManoFileError, match=f'MANO_LEFT.pkl.*{match}'):
    mano_jax.load(path)


def test_npz_with_object_array_is_refused(tmp_path):
  path = tmp_path / 'hand_right.npz'
  np.savez(path, v_template=np.array([1, 'a'], dtype=object))
  with pytest.raises(mano_jax.ManoFileError, match='hand_right.npz'):
    mano_jax.load(path)


@pytest.mark.parametrize('kwargs,name', [
    (dict(betas=np.full(10, np.nan)), 'betas'),
    (dict(transl=np.array([0.0, np.inf, 0.0])), 'transl'),
])
def test_forward_nonfinite_inputs_are_named(kwargs, name):
  model = mano_jax.load_procedural('right')
  with pytest.raises(ValueError, match=f'{name} contains NaN or Inf'):
    mano_jax.forward(model, np.zeros(48), **kwargs)


def test_forward_under_jit_passes_nan_through_not_a_finite_number():
  # Traced values cannot be checked (README): NaN in, NaN out, never a
  # plausible-looking mesh.
  model = mano_jax.load_procedural('right')
  pose = jnp.zeros(48).at[0].set(jnp.nan)
  out = jax.jit(lambda p: mano_jax.forward(model, p).vertices)(pose)
  assert np.all(np.isnan(np.asarray(out)))


# ----------------------------------------------------------------------------
# Data: InterHand2.6M layout, HIC, the input pipeline.

@pytest.fixture(scope='module')
def ih_base(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('ih_bad'))
  truth = fx.write(root, load_hand_models(), split=SPLIT)
  return root, truth


@pytest.fixture
def ih(ih_base, tmp_path):
  return fx.private_copy(ih_base, tmp_path)


def _open(root, **kw):
  return InterHand26M(root, SPLIT, cache=False, progress=False, **kw)


IH_ERRORS = [
    ('data', lambda o: o['images'][2].__setitem__('width', 0), 'data.json',
     'images[2] (id 2): image size 0x512'),
    ('data', lambda o: o['images'][1].__setitem__('height', -4), 'data.json', 'image size 334x-4'),
    ('data', lambda o: o['images'][0].__setitem__('width', 'wide'), 'data.json',
     'images[0] (id 0).width'),
    ('data', lambda o: o['images'][0].__setitem__('height', 12.5), 'data.json', '.height'),
    ('camera', lambda o: o['0']['campos'].__setitem__('400262', [0.0, float('nan'), 1.0]),
     'camera.json', "['0']['campos']['400262']: contains NaN"),
    ('camera', lambda o: o['0']['princpt'].__setitem__('400263', [1.0, 2.0, 3.0]),
     'camera.json', "['0']['princpt']['400263']: expected 2 numbers"),
    ('camera', lambda o: o['1']['focal'].__setitem__('400262', [0.0, 1000.0]),
     'camera.json', "['1']['focal']['400262'] must be positive"),
    ('camera', lambda o: o['0']['camrot'].__setitem__('400262', [[1, 0, 0], [0, 1, 0]]),
     'camera.json', "['0']['camrot']['400262']: expected 9 numbers"),
    ('camera', lambda o: o['0']['camrot'].__setitem__('400263', 'identity'),
     'camera.json', "['0']['camrot']['400263']: expected numbers"),
]


@pytest.mark.parametrize('key,edit,file,what', IH_ERRORS, ids=[e[3] for e in IH_ERRORS])
def test_interhand_image_sizes_and_cameras_are_named(ih, key, edit, file, what):
  root, _ = ih
  fx.rewrite(root, SPLIT, key, edit)
  with pytest.raises(AnnotationError) as e:
    _open(root)
  assert file in str(e.value) and what in str(e.value), str(e.value)


def test_unreadable_image_files_are_named_when_read(ih, tmp_path):
  """Present but unreadable images (empty, truncated, not an image) are not
  'missing' (no per-image stat at index time): reading one is an OSError
  naming the file, in the pipeline as in the teacher."""
  root, _ = ih
  ds = _open(root)
  bad = _corrupt_images(tmp_path)
  models = load_hand_models()
  for k, (kind, src) in enumerate(sorted(bad.items())):
    ex = ds[k]
    shutil.copyfile(src, ex['image_path'])
    assert len(_open(root)) == len(ds)  # not skipped as missing
    with pytest.raises(OSError, match=re.escape(f'cannot read image {ex["image_path"]}')):
      pipeline.process(ex, np.random.default_rng(0), cfg=pipeline.AugmentConfig(),
                       models=models, training=False)
  # Encoded bytes (TFDS records) that are not an image name the annotation.
  with pytest.raises(OSError, match='annotation 1234'):
    pipeline.load_image({'image': b'\xff\xd8garbage', 'annot_id': 1234})


def _hic_json(root, edit):
  os.makedirs(root, exist_ok=True)
  db = {'images': [{'id': 1, 'file_name': 'a.jpg', 'width': 640, 'height': 480}],
        'annotations': [{'id': 0, 'image_id': 1, 'hand_type': 'right', 'bbox': [1, 2, 30, 40],
                         'right_mano_path': 'r.ply', 'left_mano_path': None}]}
  edit(db)
  with open(os.path.join(root, 'HIC.json'), 'w') as f:
    json.dump(db, f)


HIC_ERRORS = [
    (lambda d: d['images'][0].__setitem__('width', 0), 'images[0].width'),
    (lambda d: d['images'][0].__setitem__('height', '480px'), 'images[0].height'),
    (lambda d: d['images'][0].__setitem__('height', float('inf')), 'images[0].height'),
    (lambda d: d['images'][0].__setitem__('width', 640.5), 'images[0].width'),
    (lambda d: d['annotations'][0].__setitem__('bbox', ['a', 2, 3, 4]), 'annotations[0].bbox'),
    (lambda d: d['annotations'][0].__setitem__('bbox', [1, float('nan'), 3, 4]),
     'annotations[0].bbox'),
]


@pytest.mark.parametrize('edit,what', HIC_ERRORS, ids=[f'{w}-{i}' for i, (_, w) in
                                                       enumerate(HIC_ERRORS)])
def test_hic_image_sizes_and_boxes_are_named(tmp_path, edit, what):
  _hic_json(str(tmp_path), edit)
  with pytest.raises(AnnotationError, match='HIC.json') as e:
    hic.HIC(str(tmp_path))
  assert what in str(e.value), str(e.value)


def test_hic_good_json_with_files_missing_is_a_counted_skip(tmp_path):
  _hic_json(str(tmp_path), lambda d: None)
  ds = hic.HIC(str(tmp_path))
  assert len(ds) == 0 and ds.summary == {'annotations': 1, 'missing_files': 1, 'examples': 0}


# ----------------------------------------------------------------------------
# Teacher: prior store files, and precompute into an existing store.

def _store(path, n=6, shard_size=3, teacher=None):
  t = teacher or _FakeTeacher()
  src = [{'annot_id': 1000 + 7 * i} for i in range(n)]
  return pre.precompute(t, src, str(path), grid=t.grid, shard_size=shard_size,
                        progress=False), t, src


def _np_bytes(a):
  import io
  b = io.BytesIO()
  np.save(b, a)
  return b.getvalue()


def _edit_json(path, fn):
  with open(path) as f:
    obj = json.load(f)
  with open(path, 'w') as f:
    json.dump(fn(obj), f)


def _write_bytes(path, data):
  with open(path, 'wb') as f:
    f.write(data)


STORE_CORRUPTIONS = {
    'meta_not_json': ('meta.json', lambda p: _write_bytes(p, b'{"grid": [8,'),
                      'meta.json: malformed JSON'),
    'meta_missing_key': ('meta.json', lambda p: _edit_json(
        p, lambda m: {k: v for k, v in m.items() if k != 'grid'}),
        "meta.json: missing key 'grid'"),
    'flip_matrix_shape': ('meta.json', lambda p: _edit_json(
        p, lambda m: dict(m, flip_matrix=[[1.0]])), 'meta.json: flip_matrix has shape'),
    'ids_float': ('shard-00000.ids.npy', lambda p: _write_bytes(
        p, _np_bytes(np.array([1000.0, 1007.0, 1014.0]))),
        'shard-00000.ids.npy: id list must be'),
    'ids_garbage': ('shard-00001.ids.npy', lambda p: _write_bytes(p, b'garbage'),
                    'shard-00001.ids.npy: unreadable id list'),
    'shard_missing': ('shard-00001.array_record', os.remove,
                      'shard-00001.array_record: missing'),
    'record_count': ('shard-00001.ids.npy', lambda p: _write_bytes(
        p, _np_bytes(np.array([1021, 1028, 1035, 5000]))),
        'shard-00001.array_record: 3 records'),
}


@pytest.mark.parametrize('name', sorted(STORE_CORRUPTIONS))
def test_store_file_errors_are_named(name, tmp_path):
  _store(tmp_path / 's')
  file, corrupt, match = STORE_CORRUPTIONS[name]
  corrupt(str(tmp_path / 's' / file))
  with pytest.raises(store_lib.StoreError, match=match):
    st = store_lib.open_store(str(tmp_path / 's'))
    for aid in (1000, 1021):
      st.get(aid)


class _BadTeacher(_FakeTeacher):
  """Fails on one annot_id: NaN maps, or an exception (an unreadable image)."""

  def __init__(self, bad_id, mode):
    super().__init__()
    self.bad_id, self.mode = bad_id, mode

  def __call__(self, exs):
    out = super().__call__(exs)
    for ex, (maps, _) in zip(exs, out):
      if ex['annot_id'] == self.bad_id:
        if self.mode == 'raise':
          raise OSError(f'cannot read image /data/img{ex["annot_id"]}.jpg')
        maps[1, 2, 3] = np.nan if self.mode == 'nan' else 1e6  # 1e6: float16 overflow
    return out


def test_precompute_with_other_arguments_leaves_a_complete_store_intact(tmp_path):
  t = _FakeTeacher()
  src = [{'annot_id': 1000 + 7 * i} for i in range(6)]
  args = dict(grid=t.grid, shard_size=3, pca=2, pca_samples=6, progress=False)
  pre.precompute(t, src, str(tmp_path / 's'), **args)
  before = snapshot(tmp_path / 's')
  for kw in (dict(grid=(4, 3)), dict(shard_size=2), dict(pca=0), dict(pca=3)):
    teacher = _FakeTeacher(kw.get('grid', t.grid))
    with pytest.raises(ValueError, match='other arguments'):
      pre.precompute(teacher, src, str(tmp_path / 's'), **dict(args, **kw))
  assert snapshot(tmp_path / 's') == before
  # The same command again is a no-op (resume of a finished store).
  assert len(pre.precompute(t, src, str(tmp_path / 's'), **args)) == 6
  assert snapshot(tmp_path / 's') == before
  # PCA asked of a store made without it: refused, not silently full maps.
  pre.precompute(t, src, str(tmp_path / 'full'), **dict(args, pca=0))
  with pytest.raises(ValueError, match=r"differs in \['pca'\]"):
    pre.precompute(t, src, str(tmp_path / 'full'), **args)


@pytest.mark.parametrize('mode', ['nan', 'overflow', 'raise'])
def test_precompute_failure_keeps_finished_shards_and_is_not_complete(tmp_path, mode):
  out = tmp_path / 's'
  src = [{'annot_id': 1000 + 7 * i} for i in range(6)]

  class Stop(Exception):
    pass

  def stop_after_shard_0(n):
    if n == 4:
      raise Stop()

  t = _FakeTeacher()
  with pytest.raises(Stop):
    pre.precompute(t, src, str(out), grid=t.grid, shard_size=3, progress=False,
                   callback=stop_after_shard_0)
  before = snapshot(out)
  assert 'shard-00000.ids.npy' in before and 'complete.json' not in before
  bad = _BadTeacher(1028, mode)
  match = 'img1028.jpg' if mode == 'raise' else 'non-finite maps.*annot_id 1028'
  with pytest.raises((ValueError, OSError), match=match):
    pre.precompute(bad, src, str(out), grid=bad.grid, shard_size=3, progress=False)
  assert snapshot(out) == before
  # Once the input is fixed, the same command completes the store.
  st = pre.precompute(t, src, str(out), grid=t.grid, shard_size=3, progress=False)
  assert len(st) == 6 and store_lib.is_complete(str(out))


def test_precompute_duplicate_ids_is_an_error_and_never_complete(tmp_path):
  src = [{'annot_id': a} for a in (5, 6, 7, 5)]
  t = _FakeTeacher()
  with pytest.raises(store_lib.StoreError, match='annot_id 5 is stored twice'):
    pre.precompute(t, src, str(tmp_path / 's'), grid=t.grid, shard_size=2, progress=False)
  assert not store_lib.is_complete(str(tmp_path / 's'))


# ----------------------------------------------------------------------------
# Train (train.py; the library itself is tested in test_train_*).

def _train_py(args, **env):
  return subprocess.run([sys.executable, os.path.join(REPO, 'train.py')] + args, cwd=REPO,
                        env=dict(os.environ, JAX_PLATFORMS='cpu', **env),
                        capture_output=True, text=True, check=False, timeout=600)


def test_train_config_typo_and_wrong_type_are_refused(tmp_path):
  wd = tmp_path / 'wd'
  base = ['--config=a2p_jax/configs/synthetic_tiny.py:test', f'--workdir={wd}']
  run = _train_py(base + ['--config.data.rooot=/data'])
  assert run.returncode == 2 and 'Traceback' not in run.stderr, run.stderr[-2000:]
  assert ('--config.data.rooot' in run.stderr and "no field 'rooot'" in run.stderr
          and 'Did you mean "root"' in run.stderr), run.stderr[-2000:]
  run = _train_py(base + ['--config.batch_size=eight'])
  assert run.returncode == 2 and 'Traceback' not in run.stderr, run.stderr[-2000:]
  assert '--config.batch_size=eight' in run.stderr, run.stderr[-2000:]
  assert not wd.exists()


def test_train_batch_not_dividing_devices_leaves_checkpoints_intact(tmp_path):
  wd = tmp_path / 'wd'
  for rel, data in (('checkpoints/4/meta/metadata', b'{"config": "{}"}'),
                    ('checkpoints/4/state/data.bin', os.urandom(256)),
                    ('tb/events.out.tfevents.1.host', b'events')):
    os.makedirs(os.path.dirname(wd / rel), exist_ok=True)
    (wd / rel).write_bytes(data)
  before = snapshot(wd)
  run = _train_py(['--config=a2p_jax/configs/synthetic_tiny.py:test', f'--workdir={wd}',
                   '--config.batch_size=12'],
                  XLA_FLAGS=tiny_training.xla_flags(8))
  assert run.returncode != 0
  assert 'config.batch_size=12 must be a multiple of the device count 8' in run.stderr, \
      run.stderr[-2000:]
  assert snapshot(wd) == before  # the batch size is checked before anything is written
  run = _train_py(['--config=a2p_jax/configs/synthetic_tiny.py:test', f'--workdir={wd}',
                   '--config.batch_size=0'])
  assert run.returncode != 0
  assert 'config.batch_size=0 must be a positive integer' in run.stderr, run.stderr[-2000:]
  assert snapshot(wd) == before


# ----------------------------------------------------------------------------
# Eval: predictions files, eval.py --predictions into an existing --out.

@pytest.fixture(scope='module')
def hand_joints():
  """(21, 3) m camera-space joints of a right and a left hand (InterHand order)."""
  r, l = load_hand_models()
  out = []
  for m, x in ((r, 0.05), (l, -0.05)):
    j = mano_jax.forward(m, np.zeros(48), transl=np.array([x, 0.0, 0.6]),
                         joint_order='interhand').joints
    out.append(np.asarray(j, np.float64))
  return out


def _preds(ids, joints, units='m', scale=1.0, edit=None):
  doc = {'units': units, 'predictions': {
      str(a): {s: {'joints': (joints[k] * scale).tolist()} for k, s in
               enumerate(('right', 'left'))} for a in ids}}
  if edit:
    edit(doc)
  return doc


def _write(path, doc):
  with open(path, 'w') as f:
    json.dump(doc, f)  # NaN/Infinity are written as JSON's NaN/Infinity tokens
  return str(path)


def _first(d):
  return d['predictions'][next(iter(d['predictions']))]


PRED_ERRORS = {
    'nan_joints': (dict(edit=lambda d: _first(d)['right']['joints'][3].__setitem__(
        0, float('nan'))), r"\['right'\].joints: contains NaN"),
    'inf_trans': (dict(edit=lambda d: _first(d).__setitem__(
        'left', {'pose': [0.0] * 48, 'shape': [0.0] * 10, 'trans': [0, float('inf'), 1]})),
        r"\['left'\].trans: contains NaN or Inf"),
    'nan_pose': (dict(edit=lambda d: _first(d).__setitem__(
        'left', {'pose': [float('nan')] * 48, 'trans': [0, 0, 1]})), r"\['left'\].pose"),
    'mm_declared_m': (dict(scale=1000.0), 'units.*is \'m\'.*span .* m.*in mm'),
    'm_declared_mm': (dict(units='mm'), 'units.*is \'mm\'.*span .* m.*in m\\?'),
    'trans_mm_declared_m': (dict(edit=lambda d: [e.__setitem__('right', {
        'pose': [0.0] * 48, 'shape': [0.0] * 10, 'trans': [50.0, 0.0, 600.0]}) for e in
        d['predictions'].values()]), 'MANO "trans" put the hands 602 m'),
    'duplicate_id': (dict(edit=lambda d: d['predictions'].__setitem__(
        '0' + next(iter(d['predictions'])), _first(d))), 'appears twice'),
    'predictions_list': (dict(edit=lambda d: d.__setitem__('predictions', [])),
                         '"predictions" must be an object'),
    'hand_not_object': (dict(edit=lambda d: _first(d).__setitem__('right', [1, 2, 3])),
                        r"\['right'\]: expected an object"),
}


@pytest.mark.parametrize('name', sorted(PRED_ERRORS))
def test_predictions_json_errors_name_the_entry(name, hand_joints, tmp_path):
  kw, match = PRED_ERRORS[name]
  path = _write(tmp_path / 'p.json', _preds([11, 12], hand_joints, **kw))
  with pytest.raises(PredictionsError, match=match) as e:
    Predictions(path)
  assert 'p.json' in str(e.value)


def test_predictions_good_json_in_both_units(hand_joints, tmp_path):
  for units, scale in (('m', 1.0), ('mm', 1000.0)):
    p = Predictions(_write(tmp_path / f'{units}.json',
                           _preds([11, 12], hand_joints, units, scale)))
    got = p.hands([12], None)['joints'][0]
    np.testing.assert_allclose(got, np.concatenate(hand_joints), atol=1e-9)


def _npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def test_predictions_npz_errors_name_the_file(hand_joints, tmp_path):
  j = np.concatenate(hand_joints)[None].repeat(2, 0)
  ok = dict(annot_id=np.array([11, 12]), joints=j, units=np.array('m'))
  Predictions(_npz(tmp_path / 'ok.npz', **ok))
  cases = [
      (dict(ok, joints=j * 1000), 'span .* m.*in mm'),
      (dict(ok, annot_id=np.array([11, 11])), 'annotation id 11 appears 2 times'),
      (dict(ok, annot_id=np.array([11.0, 12.5])), 'non-integer'),
      (dict(ok, annot_id=np.array(['a', 'b'])), 'annot_id must be a 1-D array of integers'),
      ({k: v for k, v in ok.items() if k != 'units'}, "missing array 'units'"),
      (dict(ok, joints=np.where(np.arange(42)[:, None] == 3, np.nan, j)), 'joints: contains NaN'),
      (dict(ok, vertices=np.zeros((2, 2, 5, 2))), r'vertices must be \(N, 2, V, 3\)'),
  ]
  for k, (arrays, match) in enumerate(cases):
    path = _npz(tmp_path / f'bad{k}.npz', **arrays)
    with pytest.raises(PredictionsError, match=match) as e:
      Predictions(path)
    assert f'bad{k}.npz' in str(e.value)
  obj = _npz(tmp_path / 'obj.npz', **dict(ok, joints=np.array([None, 1], dtype=object)))
  (tmp_path / 'zip.npz').write_bytes(b'PK\x03\x04 not a zip')
  for path in (obj, str(tmp_path / 'zip.npz')):
    with pytest.raises(PredictionsError, match=f'{os.path.basename(path)}: not a readable'):
      Predictions(path)


def _fake_report(out):
  os.makedirs(out / 'figures', exist_ok=True)
  (out / 'report.json').write_text('{"mpjpe": 5.36}')
  (out / 'report.md').write_text('| MPJPE |\n| 5.36 |\n')
  (out / 'per_sample.npz').write_bytes(os.urandom(128))
  _jpeg(out / 'figures' / 'best.png')
  return snapshot(out)


def test_eval_predictions_bad_file_leaves_report_folder_intact(ih, hand_joints, tmp_path):
  root, truth = ih
  ids = [a['annot_id'] for a in truth['annotations']]
  out = tmp_path / 'eval_out'
  before = _fake_report(out)
  missing = _write(tmp_path / 'missing.json', _preds(ids[1:], hand_joints))
  with pytest.raises(PredictionsError, match=f'no prediction for annotation id {ids[0]} '):
    eval_run.evaluate_predictions(missing, 'interhand26m', root, SPLIT, str(out),
                                  penetration=False)
  units = _write(tmp_path / 'units.json', _preds(ids, hand_joints, scale=1000.0))
  with pytest.raises(PredictionsError, match='units'):
    eval_run.evaluate_predictions(units, 'interhand26m', root, SPLIT, str(out))
  assert snapshot(out) == before


def test_eval_py_predictions_with_nan_exits_naming_the_entry(ih, hand_joints, tmp_path):
  root, truth = ih
  ids = [a['annot_id'] for a in truth['annotations']]
  out = tmp_path / 'eval_out'
  before = _fake_report(out)
  bad = _preds(ids, hand_joints)
  bad['predictions'][str(ids[2])]['left']['joints'][0][2] = float('nan')
  path = _write(tmp_path / 'nan.json', bad)
  run = subprocess.run([sys.executable, os.path.join(REPO, 'eval.py'), f'--predictions={path}',
                        '--dataset=interhand26m', f'--root={root}', f'--split={SPLIT}',
                        f'--out={out}'], cwd=REPO, env=dict(os.environ, JAX_PLATFORMS='cpu'),
                       capture_output=True, text=True, check=False, timeout=600)
  assert run.returncode != 0
  assert f"predictions['{ids[2]}']['left'].joints: contains NaN" in run.stderr, run.stderr[-2000:]
  assert snapshot(out) == before


def test_eval_py_stage2_sampling_overrides_are_typed_and_checked():
  """--stage2_sampling FIELD=VALUE takes the type of the stage-2 config's
  field; an unknown field, a missing '=' or a value of the wrong type is a
  usage error naming it."""
  import importlib.util
  from absl import app
  spec = importlib.util.spec_from_file_location('eval_cli', os.path.join(REPO, 'eval.py'))
  cli = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(cli)
  got = cli.sampling_overrides(['direction=mean', 'pullback_max=4', 'pullback_steps=10',
                                'keep=betas,fingers,roots'])
  assert got == {'direction': 'mean', 'pullback_max': 4.0, 'pullback_steps': 10,
                 'keep': 'betas,fingers,roots'}
  assert isinstance(got['pullback_steps'], int) and isinstance(got['pullback_max'], float)
  for bad, named in (('pullbak_steps=3', 'pullbak_steps'), ('pullback_steps', 'pullback_steps'),
                     ('pullback_steps=many', 'takes int values')):
    with pytest.raises(app.UsageError, match=named):
      cli.sampling_overrides([bad])


# ----------------------------------------------------------------------------
# Infer: images and checkpoints, into an existing --out.

def _previous_inference(out):
  d = out / 'good'
  os.makedirs(d, exist_ok=True)
  (d / 'hands.json').write_text('{"right": {}, "left": {}, "units": "m"}')
  (d / 'right.obj').write_text('v 0 0 0\n')
  _jpeg(d / 'overlay.png')
  return snapshot(out)


@pytest.mark.parametrize('kind', ['empty', 'truncated', 'text', 'absent'])
def test_infer_unreadable_image_fails_before_any_work_or_write(kind, tmp_path):
  bad = _corrupt_images(tmp_path)
  good = _jpeg(tmp_path / 'src' / 'good.jpg')
  path = bad.get(kind, str(tmp_path / 'src' / 'absent.jpg'))
  out = tmp_path / 'out'
  before = _previous_inference(out)
  # The checkpoint does not exist either: images are checked first.
  with pytest.raises(infer.InferenceError,
                     match=re.escape(path) + ': (no such image|cannot read)'):
    infer.run([good, path], str(tmp_path / 'no_run'), str(out))
  assert snapshot(out) == before


def test_infer_missing_or_unreadable_checkpoint(tmp_path, capsys):
  good = _jpeg(tmp_path / 'src' / 'good.jpg')
  out = tmp_path / 'out'
  before = _previous_inference(out)
  nothing = tmp_path / 'no_run'
  with pytest.raises(ckpt_lib.CheckpointError, match=re.escape(f'no checkpoint in {nothing}')):
    infer.run([good], str(nothing), str(out))
  assert infer.main([good, '--checkpoint', str(nothing), '--out', str(out)]) == 2
  assert f'error: no checkpoint in {nothing}' in capsys.readouterr().err
  broken = tmp_path / 'broken'
  os.makedirs(broken / 'checkpoints' / '7')
  with pytest.raises(ckpt_lib.CheckpointError, match='checkpoints/7: cannot read its meta'):
    infer.run([good], str(broken), str(out))
  assert snapshot(out) == before


@pytest.mark.parametrize('kw,match', [
    (dict(focal=np.array([-500.0, 500.0])), 'focal must be two finite numbers'),
    (dict(focal=np.array([500.0])), 'focal'),
    (dict(princpt=np.array([np.nan, 1.0])), 'princpt'),
])
def test_infer_bad_camera_is_named(kw, match, tmp_path):
  good = _jpeg(tmp_path / 'good.jpg')
  with pytest.raises(infer.InferenceError, match=match):
    infer.run([good], str(tmp_path / 'no_run'), str(tmp_path / 'out'), **kw)
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('args, message', [
    ([], '--num is required'),
    (['--num', '4', '--stage1_step', '200'], '--stage1_step needs --stage1_workdir')])
def test_pairs_cli_flags(tmp_path, capsys, args, message):
  from a2p_jax import build_pairs
  out = tmp_path / 'pairs.npz'
  with pytest.raises(SystemExit) as e:
    build_pairs.main(['--root', str(tmp_path / 'nowhere'), '--out', str(out)] + args)
  assert e.value.code == 2 and message in capsys.readouterr().err
  assert not out.exists()


@pytest.mark.parametrize('file, error, match', [
    ('', ValueError, r'stage1_pairs_file is empty: build them with `python -m a2p_jax.build_pairs'),
    ('missing.npz', FileNotFoundError, r'stage1_pairs_file=.*missing.npz'),
])
def test_paper_stage2_needs_stage1_pairs(tmp_path, file, error, match):
  """The paper's stage-2 config trains with stage-1 prediction pairs: without
  a pairs file it stops before reading any data, naming the field and the
  command that builds them."""
  from a2p_jax.configs import a2p_diffusion
  from a2p_jax.train import stage2
  c = a2p_diffusion.get_config()
  c.data.root = str(tmp_path / 'nowhere')
  c.data.stage1_pairs_file = str(tmp_path / file) if file else ''
  with pytest.raises(error, match=match):
    stage2.load_pairs(c, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('name', ['synthetic_tiny', 'a2p_interhand26m', 'diffusion_tiny',
                                  'a2p_diffusion'])
def test_config_typo_from_python_is_an_error(name):
  import importlib
  c = importlib.import_module(f'a2p_jax.configs.{name}').get_config()
  c.data.root = '/data'  # existing fields stay settable
  with pytest.raises(AttributeError, match='prior_group|does not exist'):
    c.data.prior_group = 'keypoint'
  with pytest.raises(AttributeError, match='num_train_step'):
    c.num_train_step = 10
