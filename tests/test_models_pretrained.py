"""ImageNet ResNet files (torchvision / timm layout) into our ResNet: the
features equal torchvision's own for the same weights (.pth and
.safetensors), the reader handles F32/F16/BF16, bad files name the file and
key, and stage-1 training starts from the files and resumes without them."""

import json
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from a2p_jax.models import pretrained
from a2p_jax.models.resnet import ResNet
from a2p_jax.runtime import checkpoint as ckpt_lib
from tests import tiny_training

_REL_TOL = 1e-4


def _torchvision():
  """(torch, torchvision), or skip. torchvision 0.28.0's wheel has a
  CUDA-linked C extension that does not load against CPU torch; importing
  torchvision then fails in torchvision._meta_registrations (it registers
  fake kernels for torchvision::nms, which does not exist). The models are
  pure Python: an empty stand-in for that module lets them import."""
  torch = pytest.importorskip('torch')
  if 'torchvision' not in sys.modules:
    sys.modules.setdefault('torchvision._meta_registrations',
                           types.ModuleType('torchvision._meta_registrations'))
  return torch, pytest.importorskip('torchvision')


def _randomise_bn(torch, model, seed):
  """Non-trivial BatchNorm: random weight/bias (also the ones torchvision
  starts at 0 or 1) and running statistics."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        c = m.num_features
        m.weight.copy_(torch.rand(c, generator=g) * 0.8 + 0.4)
        m.bias.copy_(torch.randn(c, generator=g) * 0.2)
        m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
        m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
        m.num_batches_tracked.fill_(123)
  return model.eval()


def _torch_features(torch, model, x_nchw):
  trunk = torch.nn.Sequential(*list(model.children())[:-2])  # up to layer4, before avgpool
  with torch.no_grad():
    return trunk(torch.from_numpy(x_nchw)).numpy().transpose(0, 2, 3, 1)


def _state_numpy(model) -> dict:
  return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def _rel_err(got, want) -> float:
  return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


_ST_CODES = {np.dtype(np.float32): 'F32', np.dtype(np.float16): 'F16',
             np.dtype(np.int64): 'I64'}


def _write_safetensors(path, arrays: dict, bf16=()) -> None:
  """The safetensors format by hand (the package is not a dependency);
  keys in `bf16` are stored as bfloat16 (float32 truncated to its top 16 bits)."""
  header, blobs, offset = {}, [], 0
  for k, a in arrays.items():
    a = np.asarray(a)  # tobytes() is C order; ascontiguousarray would make 0-d 1-d
    if k in bf16:
      code, blob = 'BF16', (a.astype(np.float32).view(np.uint32) >> 16).astype('<u2').tobytes()
    else:
      code, blob = _ST_CODES[a.dtype], a.tobytes()
    header[k] = {'dtype': code, 'shape': list(a.shape),
                 'data_offsets': [offset, offset + len(blob)]}
    blobs.append(blob)
    offset += len(blob)
  head = json.dumps(header).encode()
  head += b' ' * (-len(head) % 8)
  with open(path, 'wb') as f:
    f.write(len(head).to_bytes(8, 'little') + head + b''.join(blobs))


def test_resnet50_vs_torchvision(tmp_path):
  torch, tv = _torchvision()
  torch.manual_seed(0)
  model = _randomise_bn(torch, tv.models.resnet50(), seed=1)
  x = np.random.default_rng(0).normal(size=(2, 3, 96, 128)).astype(np.float32)
  want = _torch_features(torch, model, x)
  assert want.shape == (2, 3, 4, 2048) and np.isfinite(want).all()
  pth, st = str(tmp_path / 'resnet50-test.pth'), str(tmp_path / 'model.safetensors')
  torch.save(model.state_dict(), pth)
  _write_safetensors(st, _state_numpy(model))
  forward = nnx.jit(lambda enc, x: enc(x))  # one compile (eager: one per op and shape)
  for path in (pth, st):
    got = forward(pretrained.resnet50_from_torch(path), jnp.asarray(x.transpose(0, 2, 3, 1)))
    err = _rel_err(got, want)
    print(f'{os.path.basename(path)}: max abs err / max |ref| = {err:.2e}')
    assert err < _REL_TOL, (path, err)


def _torch_layout(depth: int, width: int, seed: int) -> dict:
  """A torchvision-layout ResNet-18/34 state dict of random numbers, keys
  written by hand after torchvision's resnet.py (checked against
  torchvision's own keys in a test), so any width is possible."""
  rng = np.random.default_rng(seed)
  sd = {}

  def conv(name, cout, cin, k):
    sd[f'{name}.weight'] = rng.normal(0, (2 / (cin * k * k)) ** 0.5,
                                      (cout, cin, k, k)).astype(np.float32)

  def bn(name, c):
    sd[f'{name}.weight'] = rng.uniform(0.4, 1.2, c).astype(np.float32)
    sd[f'{name}.bias'] = rng.normal(0, 0.2, c).astype(np.float32)
    sd[f'{name}.running_mean'] = rng.normal(0, 0.2, c).astype(np.float32)
    sd[f'{name}.running_var'] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    sd[f'{name}.num_batches_tracked'] = np.array(7, np.int64)

  conv('conv1', width, 3, 7)
  bn('bn1', width)
  cin = width
  for s, n in enumerate({18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]):
    planes = width * 2 ** s
    for b in range(n):
      p = f'layer{s + 1}.{b}'
      conv(f'{p}.conv1', planes, cin, 3)
      bn(f'{p}.bn1', planes)
      conv(f'{p}.conv2', planes, planes, 3)
      bn(f'{p}.bn2', planes)
      if s > 0 and b == 0:
        conv(f'{p}.downsample.0', planes, cin, 1)
        bn(f'{p}.downsample.1', planes)
      cin = planes
  sd['fc.weight'] = rng.normal(size=(1000, cin)).astype(np.float32)
  sd['fc.bias'] = np.zeros(1000, np.float32)
  return sd


def test_resnet18_layout_vs_torchvision(tmp_path):
  """The lower-level loader on a ResNet-18 (basic blocks) in a wrapped,
  DataParallel-prefixed .pth; the hand-written layout of the training test
  has torchvision's keys and shapes."""
  torch, tv = _torchvision()
  torch.manual_seed(2)
  model = _randomise_bn(torch, tv.models.resnet18(), seed=3)
  sd = _state_numpy(model)
  mine = _torch_layout(18, 64, 0)
  assert {k: v.shape for k, v in mine.items()} == {k: v.shape for k, v in sd.items()}
  path = str(tmp_path / 'wrapped.pth')
  torch.save({'model': {f'module.{k}': v for k, v in model.state_dict().items()}}, path)
  enc = ResNet(18, 64, rngs=nnx.Rngs(0))
  pretrained.load_torch_resnet(enc, pretrained.read_state_dict(path), source=path)
  enc.eval()
  x = np.random.default_rng(1).normal(size=(2, 3, 64, 96)).astype(np.float32)
  err = _rel_err(enc(jnp.asarray(x.transpose(0, 2, 3, 1))), _torch_features(torch, model, x))
  print(f'resnet18: max abs err / max |ref| = {err:.2e}')
  assert err < _REL_TOL


def test_safetensors_dtypes(tmp_path):
  rng = np.random.default_rng(0)
  arrays = {'a': rng.normal(size=(3, 4)).astype(np.float32),
            'h': rng.normal(size=(5,)).astype(np.float16),
            'b': rng.normal(size=(2, 3)).astype(np.float32),
            'n': np.array(9, np.int64)}
  path = str(tmp_path / 'x.safetensors')
  _write_safetensors(path, arrays, bf16=('b',))
  got = pretrained.read_safetensors(path)
  np.testing.assert_array_equal(got['a'], arrays['a'])
  np.testing.assert_array_equal(got['h'], arrays['h'])
  bf16 = (arrays['b'].view(np.uint32) & 0xFFFF0000).view(np.float32)
  assert got['b'].dtype == np.float32
  np.testing.assert_array_equal(got['b'], bf16)
  assert got['n'] == 9 and got['n'].shape == ()


def _load_file(tmp_path, sd, name='bad.safetensors', depth=18, width=4):
  path = str(tmp_path / name)
  _write_safetensors(path, sd)
  pretrained.load_torch_resnet(ResNet(depth, width, rngs=nnx.Rngs(0)),
                               pretrained.read_state_dict(path), source=path)


def test_bad_files_name_file_and_key(tmp_path):
  good = _torch_layout(18, 4, 0)
  _load_file(tmp_path, good, 'good.safetensors')  # loads
  missing = {k: v for k, v in good.items() if k != 'layer3.0.downsample.1.running_var'}
  with pytest.raises(ValueError, match=r'bad\.safetensors: missing key '
                                       r'layer3\.0\.downsample\.1\.running_var'):
    _load_file(tmp_path, missing)
  with pytest.raises(ValueError, match=r'bad\.safetensors: unexpected key layer1\.0\.se\.weight'):
    _load_file(tmp_path, dict(good, **{'layer1.0.se.weight': np.zeros(3, np.float32)}))
  wrong = dict(good, **{'layer2.1.conv2.weight': np.zeros((8, 8, 1, 3), np.float32)})
  with pytest.raises(ValueError, match=r'bad\.safetensors: key layer2\.1\.conv2\.weight has '
                                       r'shape \(8, 8, 1, 3\).*\(8, 8, 3, 3\)'):
    _load_file(tmp_path, wrong)
  with pytest.raises(ValueError, match=r'bad\.safetensors: holds a ResNet-18 of width 4, the '
                                       r'module is a ResNet-18 of width 8'):
    _load_file(tmp_path, good, width=8)
  with pytest.raises(ValueError, match=r'bad\.safetensors: holds a ResNet-18 .* ResNet-34'):
    _load_file(tmp_path, good, depth=34)
  with pytest.raises(ValueError, match=r'bad\.safetensors: no key conv1\.weight'):
    _load_file(tmp_path, {k.replace('conv1.', 'conv1.0.'): v for k, v in good.items()})
  bad = tmp_path / 'trunc.safetensors'
  bad.write_bytes((10 ** 6).to_bytes(8, 'little') + b'{}')
  with pytest.raises(ValueError, match=r'trunc\.safetensors: not a safetensors file'):
    pretrained.read_state_dict(str(bad))
  with pytest.raises(FileNotFoundError, match='nope.pth'):
    pretrained.read_state_dict(str(tmp_path / 'nope.pth'))


# --- Training from the files -------------------------------------------------------------------

@pytest.fixture(scope='module')
def data(tmp_path_factory):
  return tiny_training.tiny_data(tmp_path_factory)


def _expected_arrays(sd, depth, width) -> dict:
  """{name: array} of a ResNet loaded with `sd` (parameters and statistics)."""
  ref = ResNet(depth, width, rngs=nnx.Rngs(0))
  pretrained.load_torch_resnet(ref, sd)
  return tiny_training.state_arrays(nnx.state(ref))


def _module_arrays(state, prefix) -> dict:
  """{name: array} of the submodule at `prefix` of a stage-1 train state
  (the split (model, optimizer))."""
  model = state[0]
  for p in prefix.split('.'):
    model = model[p]
  return tiny_training.state_arrays(model)


def _save_checkpoint(config, workdir, state, step):
  """Checkpoint `step` of a stage-1 run holding `state`, as
  stage1.train_and_evaluate saves it (state and data iterator), without
  compiling a train step (minutes on a loaded 2-core machine)."""
  from a2p_jax.data.hands import load_hand_models
  from a2p_jax.train import input as input_lib
  src = input_lib.source(config, workdir, config.data.train_split)
  priors = input_lib.prior_store(config, workdir, src)
  data_iter = iter(input_lib.train_dataset(config, src, load_hand_models(None),
                                           local_batch=config.batch_size, priors=priors))
  mngr = ckpt_lib.manager(workdir, async_save=False)
  ckpt_lib.save(mngr, step, state, data_iter, {'written_by': 'test'}, force=True)
  mngr.wait_until_finished()
  mngr.close()


def test_training_starts_from_files_and_resumes_without_them(data, tmp_path, capsys):
  from a2p_jax.train import stage1
  torch = pytest.importorskip('torch')
  # The 'test' config's ResNets are ResNet-18s of width 8.
  enc_sd, fae_sd = _torch_layout(18, 8, 10), _torch_layout(18, 8, 11)
  enc_file, fae_file = str(tmp_path / 'enc.safetensors'), str(tmp_path / 'fae.pth')
  _write_safetensors(enc_file, enc_sd)
  torch.save({k: torch.from_numpy(v) for k, v in fae_sd.items()}, fae_file)
  files = {'model.encoder_init': enc_file, 'model.fae_init': fae_file}

  wide = tiny_training.config(data, **files, **{'model.encoder_width': 16})
  with pytest.raises(ValueError, match=r'model\.encoder_init=.*enc\.safetensors holds a '
                                       r'ResNet-18 of width 8, but model\.encoder_depth/'
                                       r'encoder_width are 18/16'):
    stage1.load_pretrained(stage1.build_model(wide, 1), wide)

  # Step 0 (a run of 0 steps returns its initial state): the files' numbers,
  # BatchNorm statistics included.
  workdir = str(tmp_path / 'run')
  zero = tiny_training.config(data, num_train_steps=0, num_epochs=0.0, **files)
  start = stage1.train_and_evaluate(zero, workdir)
  assert start['step'] == 0
  assert 'initial weights: encoder (ResNet-18, width 8) from ' in capsys.readouterr().out
  for prefix, sd in (('encoder', enc_sd), ('fae.backbone', fae_sd)):
    tiny_training.assert_bitwise_equal(_module_arrays(start['state'], prefix),
                                       _expected_arrays(sd, 18, 8), prefix)

  # A checkpoint of "trained" numbers (the initial ones + 0.5); without the
  # files the run resumes from it and keeps them.
  trained = jax.tree.map(lambda x: x + 0.5 if jnp.issubdtype(x.dtype, jnp.floating) else x,
                         start['state'])
  config = tiny_training.config(data, num_train_steps=1, **files)
  _save_checkpoint(config, workdir, trained, step=1)
  os.remove(enc_file)
  os.remove(fae_file)
  again = stage1.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert 'resumed from step 1' in out and 'initial weights' not in out, out
  assert again['step'] == 1
  tiny_training.assert_bitwise_equal(tiny_training.state_arrays(again['state']),
                                     tiny_training.state_arrays(trained), 'resumed state')
