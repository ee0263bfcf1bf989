"""ImageNet ResNet weights from torchvision / timm files into our ResNet.

`read_state_dict(path)` reads a file into {torch key: numpy array};
`load_torch_resnet(resnet, state_dict, source)` writes such a dict into an
existing `ResNet` in place (what training does for the encoder and the FAE
backbone); `resnet50_from_torch(path)` gives a ready ResNet-50 feature
extractor in inference mode.

Files: torchvision's downloads (`resnet50-0676ba61.pth` IMAGENET1K_V1,
`resnet50-11ad3fa6.pth` IMAGENET1K_V2: bare state dicts) and timm's
Hugging Face `model.safetensors` (e.g. resnet50.a1_in1k). timm's plain
`resnet50` has torchvision's state-dict keys and shapes exactly (checked
on timm 1.0.31's timm/models/resnet.py: conv1/bn1, layer1-4 with
conv1-3/bn1-3 and downsample.0/1, fc; its state_dict() equals
torchvision's key for key), so one mapping serves both. Variants with a
deep stem or an average-pool shortcut (resnet50d etc.) have other keys and
are refused with the key that is missing.

Key mapping (torchvision -> ours): conv1 -> stem_conv, bn1 -> stem_bn,
layer{S}.{B}.conv{i}/bn{i} -> blocks[k].conv{i}/bn{i},
layer{S}.{B}.downsample.0/1 -> blocks[k].shortcut.conv/bn; conv weights
OIHW -> HWIO, BatchNorm weight/bias/running_mean/running_var ->
scale/bias/mean/var. `fc.*` and `num_batches_tracked` are ignored; any
other key left over, any parameter of ours not found and any shape that
differs is an error naming the file and the key.
"""

import json
import os
import re
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from a2p_jax.models import resnet as resnet_lib
from a2p_jax.models.resnet import ResNet

_BN = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}
_IGNORED = re.compile(r'(^fc\.|\.num_batches_tracked$|^num_batches_tracked$)')
_BLOCK_KEY = re.compile(r'^layer([1-4])\.(\d+)\.')


def resnet50_from_torch(path: str) -> ResNet:
  """A ResNet(50, 64) holding the weights of a torchvision/timm ResNet-50
  file, in eval mode: `enc(x_NxHxWx3) -> (N, H/32, W/32, 2048)`, torch's
  features before the average pool. `x` is normalised as
  `stage1.normalize_images` does (ImageNet mean/std on 0-255 pixels, what
  torchvision's ToTensor + Normalize give)."""
  state_dict = read_state_dict(path)
  # Built abstract: every array is then written from the file (checked).
  enc = nnx.eval_shape(lambda: ResNet(50, 64, rngs=nnx.Rngs(0)))
  load_torch_resnet(enc, state_dict, source=path)
  enc.eval()
  return enc


def resnet_layout(state_dict: Mapping[str, np.ndarray], source: str = 'state dict') -> tuple:
  """(depth, width) of a torchvision-layout ResNet-18/34/50 state dict
  (width: conv1's output channels)."""
  if 'conv1.weight' not in state_dict:
    raise ValueError(f'{source}: no key conv1.weight: not a torchvision-layout ResNet '
                     f'(first keys: {sorted(state_dict)[:5]})')
  width = int(np.shape(state_dict['conv1.weight'])[0])
  blocks = [set() for _ in range(4)]
  for k in state_dict:
    m = _BLOCK_KEY.match(k)
    if m:
      blocks[int(m.group(1)) - 1].add(int(m.group(2)))
  counts = tuple(len(b) for b in blocks)
  kind = 'bottleneck' if 'layer1.0.conv3.weight' in state_dict else 'basic'
  for depth, layout in resnet_lib._LAYOUTS.items():
    if layout == (kind, counts):
      return depth, width
  raise ValueError(f'{source}: blocks per stage {counts} with {kind} blocks is not a '
                   f'ResNet-{"/".join(map(str, sorted(resnet_lib._LAYOUTS)))} layout')


def load_torch_resnet(resnet: ResNet, state_dict: Mapping[str, np.ndarray],
                      source: str = 'state dict') -> None:
  """Writes a torchvision-layout state dict into `resnet` in place (all its
  parameters and BatchNorm statistics). The depth and width of the dict
  must be the module's; nothing is written unless every key and shape
  checks out. `source` names the file in errors."""
  depth, width = resnet_layout(state_dict, source)
  if (depth, width) != (resnet.depth, resnet.width):
    raise ValueError(f'{source}: holds a ResNet-{depth} of width {width}, the module is a '
                     f'ResNet-{resnet.depth} of width {resnet.width}')
  flat = list(nnx.to_flat_state(nnx.state(resnet)))
  names = _torch_names(resnet)
  used, new = set(), []
  for path, var in flat:
    key = names.get(path)
    if key is None:
      raise ValueError(f'{source}: no torchvision key for parameter {_dotted(path)} of the module')
    if key not in state_dict:
      raise ValueError(f'{source}: missing key {key} (for {_dotted(path)})')
    w = np.asarray(state_dict[key])
    if path[-1] == 'kernel':
      if w.ndim != 4:
        raise ValueError(f'{source}: key {key} has shape {w.shape}, expected a conv weight '
                         f'(O, I, H, W)')
      w = w.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if tuple(w.shape) != tuple(var.shape):
      raise ValueError(f'{source}: key {key} has shape {np.shape(state_dict[key])}, the module '
                       f'needs {_torch_shape(var.shape, path)} ({_dotted(path)})')
    if not np.issubdtype(w.dtype, np.floating):
      raise ValueError(f'{source}: key {key} has dtype {w.dtype}, expected floating point')
    used.add(key)
    new.append((path, jnp.asarray(w, var.dtype)))
  extra = sorted(k for k in state_dict if k not in used and not _IGNORED.search(k))
  if extra:
    raise ValueError(f'{source}: unexpected key {extra[0]}' +
                     (f' (and {len(extra) - 1} more: {extra[1:4]})' if len(extra) > 1 else ''))
  nnx.update(resnet, nnx.from_flat_state(new))


def _torch_names(resnet: ResNet) -> dict:
  """{our variable path: torchvision key} for every variable of `resnet`."""
  out = {}

  def bn(path, prefix):
    for ours, theirs in _BN.items():
      out[path + (ours,)] = f'{prefix}.{theirs}'

  out[('stem_conv', 'kernel')] = 'conv1.weight'
  bn(('stem_bn',), 'bn1')
  _, counts = resnet_lib._LAYOUTS[resnet.depth]
  k = 0
  for stage, n in enumerate(counts):
    for b in range(n):
      prefix, block = f'layer{stage + 1}.{b}', resnet.blocks[k]
      for i in (1, 2, 3):
        if hasattr(block, f'conv{i}'):
          out[('blocks', k, f'conv{i}', 'kernel')] = f'{prefix}.conv{i}.weight'
          bn(('blocks', k, f'bn{i}'), f'{prefix}.bn{i}')
      if block.shortcut is not None:
        out[('blocks', k, 'shortcut', 'conv', 'kernel')] = f'{prefix}.downsample.0.weight'
        bn(('blocks', k, 'shortcut', 'bn'), f'{prefix}.downsample.1')
      k += 1
  return out


def _dotted(path) -> str:
  return '.'.join(map(str, path))


def _torch_shape(shape, path) -> tuple:
  shape = tuple(shape)
  return (shape[3], shape[2], shape[0], shape[1]) if path[-1] == 'kernel' else shape


# --- Reading files ----------------------------------------------------------------------------

def read_state_dict(path: str) -> dict:
  """{key: numpy array} of a `.safetensors` file (numpy only) or a torch
  checkpoint (`.pth`/`.pt`/`.bin`, read with torch.load(weights_only=True));
  {'state_dict': ...} / {'model': ...} wrappers and a 'module.' prefix
  (DataParallel) are removed."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no such weights file: {path}')
  if path.endswith('.safetensors'):
    sd = read_safetensors(path)
  else:
    sd = _read_torch(path)
  if sd and all(k.startswith('module.') for k in sd):
    sd = {k[len('module.'):]: v for k, v in sd.items()}
  return sd


_ST_DTYPES = {'F64': '<f8', 'F32': '<f4', 'F16': '<f2', 'I64': '<i8', 'I32': '<i4',
              'I16': '<i2', 'I8': 'i1', 'U8': 'u1', 'BOOL': '?'}


def read_safetensors(path: str) -> dict:
  """The safetensors format without the package: an 8-byte little-endian
  header length, a JSON header {name: {dtype, shape, data_offsets}} and
  the raw little-endian data. BF16 is widened to float32."""
  with open(path, 'rb') as f:
    raw = f.read()
  if len(raw) < 8:
    raise ValueError(f'{path}: not a safetensors file (only {len(raw)} bytes)')
  n = int.from_bytes(raw[:8], 'little')
  if n > len(raw) - 8:
    raise ValueError(f'{path}: not a safetensors file (header length {n} > file size)')
  try:
    header = json.loads(raw[8:8 + n])
  except ValueError as e:
    raise ValueError(f'{path}: not a safetensors file (bad JSON header: {e})') from None
  data, out = memoryview(raw)[8 + n:], {}
  for key, info in header.items():
    if key == '__metadata__':
      continue
    try:
      dtype, shape, (start, end) = info['dtype'], tuple(info['shape']), info['data_offsets']
    except (KeyError, TypeError, ValueError):
      raise ValueError(f'{path}: malformed header entry for key {key}: {info}') from None
    if dtype != 'BF16' and dtype not in _ST_DTYPES:
      raise ValueError(f'{path}: key {key} has unsupported dtype {dtype}')
    itemsize = 2 if dtype == 'BF16' else np.dtype(_ST_DTYPES[dtype]).itemsize
    if not 0 <= start <= end <= len(data) or end - start != itemsize * int(np.prod(shape)):
      raise ValueError(f'{path}: key {key}: data_offsets {[start, end]} do not fit shape '
                       f'{list(shape)} of {dtype} (data section {len(data)} bytes)')
    buf = data[start:end]
    if dtype == 'BF16':
      bits = np.frombuffer(buf, '<u2').astype(np.uint32) << 16
      arr = bits.view(np.float32)
    else:
      code = np.dtype(_ST_DTYPES[dtype])
      arr = np.frombuffer(buf, code).astype(code.newbyteorder('='))  # a native copy
    out[key] = arr.reshape(shape)
  return out


def _read_torch(path: str) -> dict:
  try:
    import torch  # deferred: torch is an optional extra, the core never imports it
  except ImportError:
    raise ImportError(f'{path}: reading a torch checkpoint needs torch (pip install torch); '
                      f'a .safetensors file needs nothing extra') from None
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # noqa: BLE001 - any failure: name the file
    raise ValueError(f'{path}: torch.load(weights_only=True) failed: {type(e).__name__}: '
                     f'{str(e).splitlines()[0][:300] if str(e) else ""}') from None
  for wrapper in ('state_dict', 'model'):
    if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
      obj = obj[wrapper]
      break
  if not isinstance(obj, dict):
    raise TypeError(f'{path}: expected a state dict, got {type(obj).__name__}')
  out = {}
  for k, v in obj.items():
    if not isinstance(v, torch.Tensor):
      raise TypeError(f'{path}: key {k} holds a {type(v).__name__}, not a tensor')
    v = v.detach().cpu()
    out[k] = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
  return out
