"""Sapiens-JAX vs a small PyTorch reference of the official architecture
(a2p_jax/teacher/sapiens_jax.py).

The reference is written here from the official code's structure (mmpretrain
VisionTransformer with out_type 'featmap' and no class token, mmpose
HeatmapHead, mmseg VitHead / VitDepthHead), with the same module names, so
its state dict has the official keys; 2 blocks, width 32, random weights.
It is saved as `{'state_dict': ...}` .pth and as traced TorchScript (as the
official pytorch2torchscript.py does) and loaded with `sapiens_jax.load`.
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

torch = pytest.importorskip('torch')
nn = torch.nn
F = torch.nn.functional

from a2p_jax.teacher import sapiens_jax

pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.*deprecated:DeprecationWarning')

EMBED, DEPTH, HEADS = 32, 2, 2
POS_HW = (8, 6)                 # learnt grid: native input 128 x 96 (4:3 like 1024 x 768)
NATIVE_HW = (128, 96)
HEAD_ARCHS = {   # the official heads' structure, narrower
    'pose': sapiens_jax.HeadArch('pose', (16, 16), (4, 4), (16, 16), (1, 1), 308),
    'seg': sapiens_jax.HeadArch('seg', (16,) * 3, (4,) * 3, (16,) * 3, (1,) * 3, 28),
    'depth': sapiens_jax.HeadArch('depth', (8,) * 4, (4,) * 4, (8, 8), (1, 1), 1),
}
OUT_KEY = sapiens_jax.OUTPUT_KEYS


# ----------------------------------------------------------------------------- reference


class Attention(nn.Module):

  def __init__(self, c, heads):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(c, 3 * c, bias=True)
    self.proj = nn.Linear(c, c)

  def forward(self, x):
    b, n, c = x.shape
    q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(q, k, v)
    return self.proj(o.transpose(1, 2).reshape(b, n, c))


class FFN(nn.Module):

  def __init__(self, c, hidden):
    super().__init__()
    self.layers = nn.Sequential(nn.Sequential(nn.Linear(c, hidden), nn.GELU(), nn.Dropout(0.0)),
                                nn.Linear(hidden, c), nn.Dropout(0.0))

  def forward(self, x, identity):
    return identity + self.layers(x)


class Layer(nn.Module):

  def __init__(self, c, heads):
    super().__init__()
    self.ln1 = nn.LayerNorm(c, eps=1e-6)
    self.attn = Attention(c, heads)
    self.ln2 = nn.LayerNorm(c, eps=1e-6)
    self.ffn = FFN(c, 4 * c)

  def forward(self, x):
    x = x + self.attn(self.ln1(x))
    return self.ffn(self.ln2(x), identity=x)


class PatchEmbed(nn.Module):

  def __init__(self, c, padding):
    super().__init__()
    self.projection = nn.Conv2d(3, c, 16, 16, padding=padding)

  def forward(self, x):
    x = self.projection(x)
    return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class ViT(nn.Module):

  def __init__(self, padding, cls_token=False):
    super().__init__()
    self.patch_embed = PatchEmbed(EMBED, padding)
    extra = int(cls_token)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, EMBED)) if cls_token else None
    self.pos_embed = nn.Parameter(torch.zeros(1, POS_HW[0] * POS_HW[1] + extra, EMBED))
    self.layers = nn.ModuleList([Layer(EMBED, HEADS) for _ in range(DEPTH)])
    self.ln1 = nn.LayerNorm(EMBED, eps=1e-6)

  def forward(self, x):
    b = x.shape[0]
    x, hw = self.patch_embed(x)
    extra = 0 if self.cls_token is None else 1
    if extra:
      x = torch.cat([self.cls_token.expand(b, -1, -1), x], 1)
    pos = self.pos_embed
    if tuple(hw) != POS_HW:   # mmpretrain resize_pos_embed
      grid = pos[:, extra:].reshape(1, *POS_HW, EMBED).permute(0, 3, 1, 2)
      grid = F.interpolate(grid, size=hw, mode='bicubic', align_corners=False)
      pos = torch.cat([pos[:, :extra], grid.flatten(2).transpose(1, 2)], 1)
    x = x + pos
    for layer in self.layers:
      x = layer(x)
    x = self.ln1(x)
    return x[:, extra:].reshape(b, *hw, EMBED).permute(0, 3, 1, 2)


def _deconv_conv_layers(cin, h):
  deconv, conv = [], []
  for cout, _ in zip(h.deconv_channels, h.deconv_kernels):
    deconv += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, output_padding=0, bias=False),
               nn.InstanceNorm2d(cout), nn.SiLU(inplace=True)]
    cin = cout
  for cout, k in zip(h.conv_channels, h.conv_kernels):
    conv += [nn.Conv2d(cin, cout, k, 1, (k - 1) // 2), nn.InstanceNorm2d(cout),
             nn.SiLU(inplace=True)]
    cin = cout
  return nn.Sequential(*deconv), nn.Sequential(*conv), cin


class HeatmapHead(nn.Module):   # mmpose: deconv_layers, conv_layers, final_layer

  def __init__(self, h):
    super().__init__()
    self.deconv_layers, self.conv_layers, cin = _deconv_conv_layers(EMBED, h)
    self.final_layer = nn.Conv2d(cin, h.out_channels, 1)

  def forward(self, x):
    return self.final_layer(self.conv_layers(self.deconv_layers(x)))


class VitHead(nn.Module):       # mmseg: deconv_layers, conv_layers, dropout, conv_seg

  def __init__(self, h):
    super().__init__()
    self.deconv_layers, self.conv_layers, cin = _deconv_conv_layers(EMBED, h)
    self.dropout = nn.Dropout2d(0.1)
    self.conv_seg = nn.Conv2d(cin, h.out_channels, 1)

  def forward(self, x):
    return self.conv_seg(self.dropout(self.conv_layers(self.deconv_layers(x))))


class Preprocessor(nn.Module):  # mean/std: non-persistent buffers, as mmengine's

  def __init__(self):
    super().__init__()
    self.register_buffer('mean', torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1), False)
    self.register_buffer('std', torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1), False)


class Model(nn.Module):
  """TopdownPoseEstimator / EncoderDecoder / DepthEstimator in 'tensor' mode."""

  def __init__(self, kind, padding, cls_token=False):
    super().__init__()
    self.data_preprocessor = Preprocessor()
    self.backbone = ViT(padding, cls_token)
    self.kind = kind
    if kind == 'pose':
      self.head = HeatmapHead(HEAD_ARCHS[kind])
    elif kind is not None:
      self.decode_head = VitHead(HEAD_ARCHS[kind])

  def forward(self, x):
    feats = self.backbone(x)
    if self.kind is None:
      return (feats,)
    return feats, (self.head if self.kind == 'pose' else self.decode_head)(feats)


def reference(kind, padding, cls_token=False, seed=0):
  """The model with random weights: default init, plus non-trivial
  LayerNorms, position embedding and class token."""
  torch.manual_seed(seed)
  m = Model(kind, padding, cls_token)
  with torch.no_grad():
    for name, p in m.named_parameters():
      if name.endswith(('ln1.weight', 'ln2.weight')):
        p.copy_(1 + 0.2 * torch.randn_like(p))
      elif name.endswith(('ln1.bias', 'ln2.bias', 'cls_token')):
        p.copy_(0.2 * torch.randn_like(p))
      elif name.endswith('pos_embed'):
        p.copy_(0.5 * torch.randn_like(p))
  return m.eval()


def run_reference(m, images_nhwc):
  with torch.no_grad():
    out = m(torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))))
  out = [o.numpy().transpose(0, 2, 3, 1) for o in out]
  return {'features': out[0], **({OUT_KEY[m.kind]: out[1]} if m.kind else {})}


def images(n=2, hw=NATIVE_HW, seed=1):
  return np.random.default_rng(seed).standard_normal((n,) + tuple(hw) + (3,)).astype(np.float32)


def save_pth(m, path):
  torch.save({'meta': {'epoch': 1}, 'state_dict': m.state_dict()}, str(path))
  return str(path)


def save_torchscript(m, path, hw=NATIVE_HW):
  with torch.no_grad():
    traced = torch.jit.trace(m, torch.zeros((1, 3) + tuple(hw)), check_trace=False)
  traced.save(str(path))
  return str(path)


def rel_err(got, want):
  return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want)))


def assert_close(out, ref, tol=1e-5):
  # float32 errors are ~1e-6 here; the tanh GELU instead of erf gives ~8e-5.
  assert set(out) == set(ref), (sorted(out), sorted(ref))
  for k in ref:
    assert out[k].shape == ref[k].shape, (k, out[k].shape, ref[k].shape)
    assert out[k].dtype == jnp.float32
    err = rel_err(out[k], ref[k])
    assert err < tol, f'{k}: max abs err / max |ref| = {err:.2e}'


# ----------------------------------------------------------------------------- tests


def test_bicubic_resize_matches_torch():
  """The position-embedding resize == F.interpolate(bicubic, align_corners=False),
  up and down (its per-axis matrices, applied with numpy); the seg logits'
  upsampling == F.interpolate(bilinear)."""
  rng = np.random.default_rng(0)
  pos = rng.standard_normal((8, 6, 5)).astype(np.float32)
  for hw in ((10, 8), (5, 3), (8, 9), (64, 48)):
    want = F.interpolate(torch.from_numpy(pos).permute(2, 0, 1)[None], size=hw, mode='bicubic',
                         align_corners=False)[0].permute(1, 2, 0).numpy()
    mh, mw = sapiens_jax._bicubic_matrix(8, hw[0]), sapiens_jax._bicubic_matrix(6, hw[1])
    np.testing.assert_allclose(np.einsum('ih,jw,hwc->ijc', mh, mw, pos), want, atol=2e-6, rtol=0)
  # mmseg's final resize of the seg logits to the input size (bilinear).
  want = F.interpolate(torch.from_numpy(pos).permute(2, 0, 1)[None], size=(32, 24),
                       mode='bilinear', align_corners=False)[0].permute(1, 2, 0).numpy()
  got = sapiens_jax.upsample_like_input(jnp.asarray(pos[None]), (32, 24))[0]
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)


@pytest.mark.parametrize('kind, padding, want_pad', [
    ('pose', None, 2), ('seg', None, 0), ('depth', None, 0), (None, None, 0), (None, 2, 2)])
def test_pth_vs_reference(tmp_path, kind, padding, want_pad):
  """Official-layout .pth -> the same features and head output as the
  reference; the patch padding defaults to the official config's (pose 2,
  Goliath seg and depth 0) and can be given."""
  m = reference(kind, want_pad)
  x = images()
  ref = run_reference(m, x)
  model = sapiens_jax.load(save_pth(m, tmp_path / 'ref.pth'), patch_padding=padding,
                           num_heads=HEADS)
  assert model.arch.head == HEAD_ARCHS.get(kind)
  assert model.arch.head_kind == kind
  assert (model.arch.embed_dim, model.arch.depth, model.arch.num_heads) == (EMBED, DEPTH, HEADS)
  assert model.arch.pos_hw == POS_HW and model.arch.patch_padding == want_pad
  assert model.arch.mlp_ratio == 4.0 and not model.arch.cls_token
  out = model(x)
  assert_close(out, ref)
  if kind == 'pose':
    assert out['heatmaps'].shape == (2, NATIVE_HW[0] // 4, NATIVE_HW[1] // 4, 308)
  if kind is None:
    np.testing.assert_allclose(model.features(x), out['features'], rtol=0, atol=1e-6)


@pytest.mark.parametrize('kind', ['pose', 'seg'])
def test_torchscript_vs_reference(tmp_path, kind):
  """A traced TorchScript file (as pytorch2torchscript.py makes them): same
  keys as the .pth plus the preprocessor's buffers, same outputs."""
  m = reference(kind, sapiens_jax.default_patch_padding(HEAD_ARCHS[kind]), seed=3)
  path = save_torchscript(m, tmp_path / f'sapiens_{kind}_torchscript.pt2')
  keys = set(torch.jit.load(path).state_dict())
  assert keys == set(m.state_dict()) | {'data_preprocessor.mean', 'data_preprocessor.std'}
  x = images(seed=4)
  model = sapiens_jax.load(path, num_heads=HEADS)
  assert model.arch.head_kind == kind
  assert_close(model(x), run_reference(m, x))


def test_pos_embed_resized_for_other_sizes_and_class_token(tmp_path):
  """An input whose token grid differs from the learnt one (bicubic resize of
  the position embedding), and a backbone with a class token (MAE
  pretraining): the token joins attention, the feature map leaves it out."""
  m = reference(None, 0, cls_token=True, seed=5)
  model = sapiens_jax.load(save_pth(m, tmp_path / 'mae.pth'), num_heads=HEADS)
  assert model.arch.cls_token and model.arch.pos_hw == POS_HW
  x = images(1, (160, 128), seed=6)
  assert_close(model(x), run_reference(m, x))


@pytest.mark.parametrize('kind', [None, pytest.param('pose', marks=pytest.mark.slow)])
def test_bfloat16_close_to_float32(tmp_path, kind):
  m = reference(kind, sapiens_jax.default_patch_padding(HEAD_ARCHS.get(kind)), seed=7)
  path = save_pth(m, tmp_path / 'model.pth')
  x = images(seed=8)
  ref = run_reference(m, x)
  model = sapiens_jax.load(path, num_heads=HEADS, dtype=jnp.bfloat16)
  assert model.params['blocks']['qkv_kernel'].dtype == jnp.bfloat16
  out = model(x)
  for k in ref:
    assert out[k].dtype == jnp.float32
    err = rel_err(out[k], ref[k])
    assert err < 5e-2, f'{k}: bfloat16 max abs err / max |ref| = {err:.2e}'


def test_jit_with_batch_sharded_over_a_mesh():
  """model.apply jitted with params replicated and the batch split over all
  devices (one device here unless XLA_FLAGS gives more) == the plain call."""
  model = sapiens_jax.random_model(sapiens_jax.Arch(EMBED, DEPTH, HEADS, pos_hw=POS_HW), seed=2)
  devices = np.array(jax.devices())
  mesh = Mesh(devices, ('data',))
  replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  x = images(2 * len(devices), seed=9)
  f = jax.jit(model.apply, in_shardings=(replicated, batch))
  out = f(model.params, jax.device_put(x, batch))['features']
  assert out.sharding.is_equivalent_to(batch, out.ndim)
  want = model.features(x)
  np.testing.assert_allclose(out, want, rtol=0, atol=1e-5 * float(jnp.abs(want).max()))


def test_random_model_shapes_and_abstract_params():
  for kind, hd in HEAD_ARCHS.items():
    model = sapiens_jax.random_model(sapiens_jax.Arch(EMBED, 1, HEADS, pos_hw=(2, 2)), hd)
    assert model.arch.patch_padding == {'pose': 2, 'seg': 0, 'depth': 0}[kind]
    shapes = jax.eval_shape(model.apply, model.params, jax.ShapeDtypeStruct((3, 64, 32, 3),
                                                                            jnp.float32))
    s = hd.scale
    assert shapes['features'].shape == (3, 4, 2, EMBED)
    assert shapes[OUT_KEY[kind]].shape == (3, 4 * s, 2 * s, hd.out_channels)
  assert sapiens_jax.ARCHS['1b'].num_heads == 24
  arch = sapiens_jax.resolve_arch('0.3b', 'pose')
  assert (arch.patch_padding, arch.head.out_channels) == (2, 308)
  abstract = sapiens_jax.abstract_params(sapiens_jax.resolve_arch('2b', 'seg'))
  n = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract))
  assert 2.0e9 < n < 2.3e9, n
  assert abstract['blocks']['qkv_kernel'].shape == (48, 1920, 3 * 1920)


def _corrupt(tmp_path, change):
  m = reference('pose', 2, seed=11)
  sd = dict(m.state_dict())
  change(sd)
  path = tmp_path / 'bad.pth'
  torch.save({'state_dict': sd}, str(path))
  return str(path)


@pytest.mark.parametrize('change, key, what', [
    (lambda sd: sd.pop('backbone.layers.1.ffn.layers.1.bias'),
     'backbone.layers.1.ffn.layers.1.bias', 'missing key'),
    (lambda sd: sd.update({'backbone.layers.0.attn.proj.weight': torch.zeros(EMBED, EMBED + 1)}),
     'backbone.layers.0.attn.proj.weight', 'has shape'),
    (lambda sd: sd.update({'head.conv_layers.3.bias': torch.zeros(5)}),
     'head.conv_layers.3.bias', 'has shape'),
    (lambda sd: sd.update({'backbone.extra.weight': torch.zeros(3)}),
     'backbone.extra.weight', 'unexpected key'),
    (lambda sd: sd.pop('head.deconv_layers.0.weight'), 'head.deconv_layers.0.weight',
     'missing key'),
    (lambda sd: sd.pop('head.conv_layers.3.weight'), 'head.conv_layers.3.weight',
     'missing key'),
    (lambda sd: sd.update({'head.deconv_layers.3.weight': torch.zeros(16, 16, 5, 5)}),
     'head.deconv_layers.3.weight', 'has shape'),
])
def test_bad_checkpoint_names_file_and_key(tmp_path, change, key, what):
  path = _corrupt(tmp_path, change)
  with pytest.raises(sapiens_jax.CheckpointError) as e:
    sapiens_jax.load(path, num_heads=HEADS)
  assert path in str(e.value) and repr(key) in str(e.value) and what in str(e.value), e.value


def test_bad_files_and_inputs(tmp_path):
  m = reference(None, 0, seed=12)
  path = save_pth(m, tmp_path / 'small.pth')
  with pytest.raises(sapiens_jax.CheckpointError, match='num_heads'):
    sapiens_jax.load(path)         # not a standard size: the head count is needed
  with pytest.raises(FileNotFoundError, match='nope.pth'):
    sapiens_jax.load(str(tmp_path / 'nope.pth'))
  junk = tmp_path / 'junk.pt2'
  junk.write_bytes(b'not a checkpoint')
  with pytest.raises(sapiens_jax.CheckpointError, match='junk.pt2'):
    sapiens_jax.load(str(junk))
  other = tmp_path / 'other.pth'
  torch.save({'state_dict': {'encoder.weight': torch.zeros(2)}}, str(other))
  with pytest.raises(sapiens_jax.CheckpointError, match="other.pth.*patch_embed"):
    sapiens_jax.load(str(other))
  model = sapiens_jax.load(path, num_heads=HEADS)
  with pytest.raises(ValueError, match='multiples of 16'):
    model(images(1, (100, 96)))
  with pytest.raises(ValueError, match=r'\(N, H, W, 3\)'):
    model(images(1)[..., :2])


class _Config(dict):   # stands for mmengine's ConfigDict / HistoryBuffer in 'meta'
  pass


class _Hostile:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


def test_pth_with_pickled_metadata_loads_without_running_it(tmp_path):
  """mmengine checkpoints pickle more than tensors next to the state dict:
  weights_only=True refuses them, the inert unpickler reads the tensors and
  calls nothing the file names."""
  m = reference(None, 0, seed=15)
  marker = tmp_path / 'ran'
  path = str(tmp_path / 'meta.pth')
  torch.save({'meta': {'cfg': _Config(a=1), 'palette': np.arange(3), 'x': _Hostile(marker)},
              'message_hub': [_Config(b=2)], 'state_dict': m.state_dict()}, path)
  with pytest.raises(Exception, match='Weights only load failed'):
    torch.load(path, weights_only=True)
  model = sapiens_jax.load(path, num_heads=HEADS)
  assert not marker.exists()
  np.testing.assert_array_equal(model.params['norm']['scale'],
                                m.state_dict()['backbone.ln1.weight'].numpy())


@pytest.mark.slow
def test_torch_export_bfloat16_file(tmp_path):
  """A torch.export archive in bfloat16 (as the lite *_bfloat16.pt2 files)."""
  m = reference('depth', 0, seed=13)
  x = images(1, seed=14)
  ref = run_reference(m, x)
  mb = m.to(torch.bfloat16)
  ep = torch.export.export(mb, (torch.zeros((1, 3) + NATIVE_HW, dtype=torch.bfloat16),))
  path = str(tmp_path / 'sapiens_depth_bfloat16.pt2')
  torch.export.save(ep, path)
  model = sapiens_jax.load(path, num_heads=HEADS)
  assert model.arch.head_kind == 'depth'
  out = model(x)
  for k in ref:
    assert rel_err(out[k], ref[k]) < 5e-2, k
