"""Sapiens v1 in JAX: the ViT backbone and its pose / seg / depth heads, run
from the official checkpoints (users bring them; CC BY-NC 4.0).

    model = sapiens_jax.load('sapiens_0.3b_goliath_best_goliath_AP_573.pth')
    out = model(images_NxHxWx3)   # {'features': (N, H/16, W/16, C), 'heatmaps': ...}

What it computes (facebookresearch/sapiens: pretrain/mmpretrain/models/
backbones/vision_transformer.py, the mmcv PatchEmbed/FFN it builds on,
pose/mmpose/models/heads/heatmap_heads/heatmap_head.py,
seg/mmseg/models/decode_heads/vit_head.py and vit_depth_head.py, and the
configs under pose/configs/sapiens_pose and seg/configs/sapiens_{seg,depth}):

- Backbone (mmpretrain VisionTransformer, out_type 'featmap', no class
  token): a 16x16 stride-16 patch conv with bias and a padding that the
  weights do not record (pose configs `patch_cfg=dict(padding=2)`; Goliath
  seg (all four sizes: the 1b config has it commented out), depth and the
  MAE pretraining backbone none; normal, CIHP and LIP seg 2), plus a learned
  absolute position embedding of (1, 3072, C) for the 64 x 48 token grid of
  a 1024 x 768 (H x W) input, resized for other grids as the official
  `resize_pos_embed` does (torch bicubic, align_corners=False, A = -0.75,
  edge pixels repeated, no antialiasing). Then `depth` pre-norm blocks:
  x += proj(attn(LN(x))) with one fused qkv projection (bias),
  x += fc2(GELU(fc1(LN(x)))) with the exact (erf) GELU and MLP ratio 4;
  every LayerNorm (both of a block's and the final one) has eps 1e-6. The
  output is the last block's tokens after the final LayerNorm.
- Heads: k4 s2 p1 transposed convs without bias, then convs with bias (1x1
  in every config), each followed by InstanceNorm (no affine, eps 1e-5, no
  running statistics) and SiLU, then a 1x1 conv with bias. Pose (mmpose
  HeatmapHead): deconvs (768, 768), convs (768, 768), 308 Goliath keypoints
  at H/4 x W/4. Seg (mmseg VitHead): 3 deconvs and 3 convs of 768, 28
  Goliath classes at H/2 x W/2 (mmseg's predict then resizes the logits
  bilinearly to the input size; `upsample_like_input` does the same). Depth
  (VitDepthHead): 4 deconvs and 2 convs of 384, 1 channel at H x W. A head
  of the same form with 3 channels is a surface-normal head ('normal').
  The heads' dropout before the last conv is off at inference.
- Checkpoints: the `.pth` files are mmengine checkpoints, `{'meta',
  'state_dict', ...}` (the metadata may pickle numpy arrays and mmengine
  objects, which torch's weights_only loading refuses; they are read inert),
  the state dict keys being the mmpose/mmseg model's: `backbone.*`, and `head.*`
  (mmpose: `head.deconv_layers.{0,3}.weight`, `head.conv_layers.{0,3}.*`,
  `head.final_layer.*`) or `decode_head.*` (mmseg: `deconv_layers`,
  `conv_layers`, `conv_seg`). The `*_torchscript.pt2` files are
  `torch.jit.trace` of that same model (tools/deployment/pytorch2torchscript.py
  in pose/ and seg/): same keys, no wrapper, plus the data preprocessor's
  mean/std buffers (`data_preprocessor.mean`/`.std`: non-persistent, yet
  in a traced module's state dict, as torch 2.13 shows), which are ignored.
  The `*_bfloat16.pt2` files are `torch.export` archives of the same model
  (tools/deployment/torch_optimization.py); their state dict has the same
  keys and loads too. None of this was checked on the released files (they
  are licensed; the tests build files of the same layout).

The input is RGB normalised with Sapiens' mean/std on the 0-255 scale
(configs: mean (123.675, 116.28, 103.53), std (58.395, 57.12, 57.375); the
lite demos round them), NHWC float32, H and W multiples of 16. Parameters
are a plain pytree and `apply(arch, params, images)` is pure, so it can be
jitted with explicit shardings (params replicated, the batch split).
`dtype=jnp.bfloat16` computes in bfloat16 (LayerNorm, softmax and
InstanceNorm statistics in float32); float32 on TPU multiplies at the
default (bfloat16-pass) precision unless `jax.default_matmul_precision` says
otherwise. Attention is materialised (N x heads x L x L, L = 3072 at
1024 x 768).
"""

import dataclasses
import functools
import math
import os
import re
import warnings
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

LN_EPS = 1e-6    # VisionTransformer's norm_cfg default, used by all its LayerNorms
IN_EPS = 1e-5    # torch.nn.InstanceNorm2d default
OUTPUT_KEYS = {'pose': 'heatmaps', 'seg': 'seg_logits', 'depth': 'depth', 'normal': 'normal'}
GOLIATH_SEG_CLASSES = 28


@dataclasses.dataclass(frozen=True)
class HeadArch:
  """A deconv/conv head: `kind` in OUTPUT_KEYS."""
  kind: str
  deconv_channels: tuple[int, ...]
  deconv_kernels: tuple[int, ...]
  conv_channels: tuple[int, ...]
  conv_kernels: tuple[int, ...]
  out_channels: int

  @property
  def scale(self) -> int:
    """Output pixels per feature-map cell (each deconv doubles the size)."""
    return 2 ** len(self.deconv_channels)


HEADS = {
    'pose': HeadArch('pose', (768, 768), (4, 4), (768, 768), (1, 1), 308),
    'seg': HeadArch('seg', (768,) * 3, (4,) * 3, (768,) * 3, (1,) * 3, GOLIATH_SEG_CLASSES),
    'depth': HeadArch('depth', (384,) * 4, (4,) * 4, (384, 384), (1, 1), 1),
}


@dataclasses.dataclass(frozen=True)
class Arch:
  """The network's shape. `pos_hw`: the token grid the position embedding
  was learnt for (H, W); `cls_token`: MAE pretraining backbones have one
  (it joins attention, the feature map leaves it out)."""
  embed_dim: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  patch_size: int = 16
  patch_padding: int = 0
  pos_hw: tuple[int, int] = (64, 48)
  cls_token: bool = False
  head: HeadArch | None = None
  name: str = 'custom'

  @property
  def head_kind(self) -> str | None:
    return None if self.head is None else self.head.kind

  @property
  def mlp_dim(self) -> int:
    return round(self.embed_dim * self.mlp_ratio)

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads


ARCHS = {
    '0.3b': Arch(1024, 24, 16, name='sapiens_0.3b'),
    '0.6b': Arch(1280, 32, 16, name='sapiens_0.6b'),
    '1b': Arch(1536, 40, 24, name='sapiens_1b'),
    '2b': Arch(1920, 48, 32, name='sapiens_2b'),
}


def default_patch_padding(head: HeadArch | None) -> int:
  """The patch conv padding of the official config that trained such a head
  (the weights do not record it): pose 2; Goliath seg (28 classes), depth
  and the pretraining backbone 0; normal and the other seg sets 2."""
  if head is None or head.kind == 'depth':
    return 0
  if head.kind == 'seg':
    return 0 if head.out_channels == GOLIATH_SEG_CLASSES else 2
  return 2


# ----------------------------------------------------------------------------- forward


def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) float32: torch's bicubic resize along one axis
  (align_corners=False, A = -0.75, indices clamped at the edges)."""
  a = -0.75

  def w(x):
    x = abs(x)
    if x <= 1:
      return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
      return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0

  m = np.zeros((n_out, n_in), np.float64)
  scale = n_in / n_out
  for i in range(n_out):
    src = (i + 0.5) * scale - 0.5        # not clamped at 0 for cubic (torch)
    f = math.floor(src)
    t = src - f
    for off, wt in zip((-1, 0, 1, 2), (w(t + 1), w(t), w(1 - t), w(2 - t))):
      m[i, min(max(f + off, 0), n_in - 1)] += wt
  return m.astype(np.float32)


def resize_pos_embed(pos_hxwxc, out_hw):
  """The learnt (h0, w0, C) grid at (h, w) tokens, as the official code does."""
  h0, w0 = pos_hxwxc.shape[:2]
  if (h0, w0) == tuple(out_hw):
    return pos_hxwxc
  mh = jnp.asarray(_bicubic_matrix(h0, out_hw[0]))
  mw = jnp.asarray(_bicubic_matrix(w0, out_hw[1]))
  pos = pos_hxwxc.astype(jnp.float32)  # the official resize runs in float32 too
  return jnp.einsum('ih,jw,hwc->ijc', mh, mw, pos, precision=jax.lax.Precision.HIGHEST)


def _channels(v, like):
  """(C,) -> (1, ..., 1, C) for `like`'s rank (no implicit rank promotion)."""
  return v.reshape((1,) * (like.ndim - 1) + v.shape)


def _layer_norm(x, scale, bias, eps=LN_EPS):
  x32 = x.astype(jnp.float32)
  mu = x32.mean(-1, keepdims=True)
  var = jnp.square(x32 - mu).mean(-1, keepdims=True)
  y = (x32 - mu) * jax.lax.rsqrt(var + eps)
  y = y * _channels(scale.astype(jnp.float32), y) + _channels(bias.astype(jnp.float32), y)
  return y.astype(x.dtype)


def _dense(x, kernel, bias=None):
  y = jnp.einsum('...i,io->...o', x, kernel.astype(x.dtype))
  return y if bias is None else y + _channels(bias.astype(x.dtype), y)


def _block(arch: Arch, x_NxLxC, p):
  n, length, c = x_NxLxC.shape
  dtype = x_NxLxC.dtype
  h = _layer_norm(x_NxLxC, p['ln1_scale'], p['ln1_bias'])
  qkv = _dense(h, p['qkv_kernel'], p['qkv_bias']).reshape(n, length, 3, arch.num_heads,
                                                          arch.head_dim)
  q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
  q = q * jnp.asarray(arch.head_dim ** -0.5, dtype)
  logits = jnp.einsum('nqhd,nkhd->nhqk', q, k, preferred_element_type=jnp.float32)
  attn = jax.nn.softmax(logits, axis=-1).astype(dtype)
  o = jnp.einsum('nhqk,nkhd->nqhd', attn, v).reshape(n, length, c)
  x_NxLxC = x_NxLxC + _dense(o, p['proj_kernel'], p['proj_bias'])
  h = _layer_norm(x_NxLxC, p['ln2_scale'], p['ln2_bias'])
  h = jax.nn.gelu(_dense(h, p['fc1_kernel'], p['fc1_bias']), approximate=False)
  return x_NxLxC + _dense(h, p['fc2_kernel'], p['fc2_bias'])


def backbone(arch: Arch, params, images_NxHxWx3, dtype=jnp.float32, scan_unroll=1):
  """(N, H/16, W/16, C) in `dtype`: the last block's tokens after the final
  LayerNorm. The blocks run as a lax.scan (one compiled block for any depth;
  XLA's cost analysis counts its body once: `scan_unroll=True` unrolls it)."""
  n, height, width, _ = images_NxHxWx3.shape
  ps, pad = arch.patch_size, arch.patch_padding
  x = images_NxHxWx3.astype(dtype)
  if pad:
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  gh, gw = (height + 2 * pad - ps) // ps + 1, (width + 2 * pad - ps) // ps + 1
  # Stride = kernel: the conv is a matmul over non-overlapping patches.
  x = x[:, :gh * ps, :gw * ps].reshape(n, gh, ps, gw, ps, 3).transpose(0, 1, 3, 2, 4, 5)
  x = _dense(x.reshape(n, gh * gw, ps * ps * 3), params['patch']['kernel'],
             params['patch']['bias'])
  pos = resize_pos_embed(params['pos_embed'], (gh, gw)).reshape(1, gh * gw, -1)
  x = x + pos.astype(dtype)
  extra = 0
  if arch.cls_token:
    cls = (params['cls_token'] + params['cls_pos']).astype(dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, cls.shape[-1])), x], axis=1)
    extra = 1

  def body(x, p):
    return _block(arch, x, p), None

  x, _ = jax.lax.scan(body, x, params['blocks'], unroll=scan_unroll)
  x = _layer_norm(x, params['norm']['scale'], params['norm']['bias'])
  return x[:, extra:].reshape(n, gh, gw, -1)


def _instance_norm_silu(x_NxHxWxC):
  x32 = x_NxHxWxC.astype(jnp.float32)
  mu = x32.mean((1, 2), keepdims=True)
  var = jnp.square(x32 - mu).mean((1, 2), keepdims=True)
  return jax.nn.silu((x32 - mu) * jax.lax.rsqrt(var + IN_EPS)).astype(x_NxHxWxC.dtype)


_DN = ('NHWC', 'HWIO', 'NHWC')


def _deconv(x, kernel_KxKxIxO):
  """torch ConvTranspose2d(k, stride 2, bias=False) with mmpose's padding
  (k 4: p 1; k 3: p 1, output_padding 1; k 2: p 0): output 2H x 2W.

  As a conv of the stride-dilated input with the flipped kernel (XLA's cost
  analysis counts the exact FLOPs, not the dilation's zeros). On this CPU,
  for the 0.3b pose head's first deconv, it compiled in 0.2 s and ran in
  5.0 s; four per-parity 2x2 convs took 1.3 s and 5.9 s, an im2col matmul
  per parity 2.1 s and 2.7 s."""
  k = kernel_KxKxIxO.shape[0]
  pad, out_pad = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[k]
  lo, hi = k - 1 - pad, k - 1 - pad + out_pad
  w = kernel_KxKxIxO.astype(x.dtype)[::-1, ::-1]
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((lo, hi), (lo, hi)), lhs_dilation=(2, 2),
                                      dimension_numbers=_DN)


def _conv(x, kernel_KxKxIxO, bias):
  k = kernel_KxKxIxO.shape[0]
  if k == 1:
    return _dense(x, kernel_KxKxIxO[0, 0], bias)
  p = (k - 1) // 2
  y = jax.lax.conv_general_dilated(x, kernel_KxKxIxO.astype(x.dtype), (1, 1),
                                   ((p, p), (p, p)), dimension_numbers=_DN)
  return y + _channels(bias.astype(x.dtype), y)


def head(arch: Arch, params, features_NxhxwxC):
  """The task head on the backbone's feature map (NHWC in, NHWC out)."""
  x = features_NxhxwxC
  for kernel in params['deconv']:
    x = _instance_norm_silu(_deconv(x, kernel))
  for p in params['conv']:
    x = _instance_norm_silu(_conv(x, p['kernel'], p['bias']))
  return _dense(x, params['out']['kernel'], params['out']['bias'])


def check_images(arch: Arch, images):
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'Sapiens takes images (N, H, W, 3) (NHWC, normalised RGB); got shape '
                     f'{tuple(images.shape)}')
  h, w = images.shape[1:3]
  if h % arch.patch_size or w % arch.patch_size:
    raise ValueError(f'Sapiens image height and width must be multiples of '
                     f'{arch.patch_size}; got {h} x {w}')


def apply(arch: Arch, params, images_NxHxWx3, *, dtype=jnp.float32,
          features_only: bool = False, scan_unroll=1) -> dict[str, jax.Array]:
  """{'features': (N, H/16, W/16, C)} plus the head's output under
  OUTPUT_KEYS[kind] at the head's resolution (pose H/4, seg H/2, depth H),
  all float32 NHWC. Pure: jit it with `arch` (hashable) fixed."""
  check_images(arch, images_NxHxWx3)
  feats = backbone(arch, params, images_NxHxWx3, dtype, scan_unroll)
  out = {'features': feats.astype(jnp.float32)}
  if arch.head is not None and not features_only:
    out[OUTPUT_KEYS[arch.head.kind]] = head(arch, params['head'], feats).astype(jnp.float32)
  return out


def upsample_like_input(x_NxhxwxC, hw):
  """Bilinear resize to the input size (align_corners=False, no antialias), as
  mmseg's predict does to the seg logits."""
  n, _, _, c = x_NxhxwxC.shape
  return jax.image.resize(x_NxhxwxC, (n, hw[0], hw[1], c), 'bilinear', antialias=False)


@functools.lru_cache(maxsize=32)
def _jitted_apply(arch: Arch, dtype, features_only: bool):
  """One jitted apply per (arch, dtype, features_only): models of one shape
  share their compilations."""
  return jax.jit(functools.partial(apply, arch, dtype=dtype, features_only=features_only))


class Sapiens:
  """A Sapiens network with its parameters: `model(images)` -> dict (see
  `apply`); `model.features(images)` runs the backbone only; `model.apply`
  is the pure function of (params, images) for callers that jit with
  their own shardings, e.g.
  `jax.jit(model.apply, in_shardings=(replicated, batch_sharded))`.

  Inside a caller's own jit, use `model.apply(params, images,
  features_only=True)` with `params` an argument of that jit: calling
  `model(...)` or `model.features(...)` there closes over `model.params`,
  which XLA then embeds in the program as constants (measured: a 1.8 M
  parameter model gave 14 MB of HLO text; a 0.3b model would carry 1.2 GB)."""

  def __init__(self, arch: Arch, params, *, dtype=jnp.float32, source: str | None = None):
    self.arch = arch
    self.params = params
    self.dtype = jnp.dtype(dtype)
    self.source = source

  def apply(self, params, images_NxHxWx3, *, dtype=None, features_only: bool = False,
            scan_unroll=1):
    return apply(self.arch, params, images_NxHxWx3, dtype=self.dtype if dtype is None else dtype,
                 features_only=features_only, scan_unroll=scan_unroll)

  def __call__(self, images_NxHxWx3) -> dict[str, jax.Array]:
    return _jitted_apply(self.arch, self.dtype, False)(self.params, images_NxHxWx3)

  def features(self, images_NxHxWx3) -> jax.Array:
    # Without a head the full apply is the backbone: one compilation for both.
    fn = _jitted_apply(self.arch, self.dtype, self.arch.head is not None)
    return fn(self.params, images_NxHxWx3)['features']

  def __repr__(self):
    return f'Sapiens({self.arch}, dtype={self.dtype.name}, source={self.source!r})'


# ----------------------------------------------------------------------------- random


def param_spec(arch: Arch):
  """The parameter tree with a leaf (shape, init) each: init 'one' / 'zero'
  (LayerNorm scale / biases, jittered by init_params), ('fan_in', n) or
  ('std', s) for normal weights."""
  c, d, m = arch.embed_dim, arch.depth, arch.mlp_dim
  p = arch.patch_size * arch.patch_size * 3

  def w(shape, fan_in):
    return (tuple(shape), ('fan_in', fan_in))

  def v(shape, init):
    return (tuple(shape), init)

  spec = {
      'patch': {'kernel': w((p, c), p), 'bias': v((c,), 'zero')},
      'pos_embed': v(tuple(arch.pos_hw) + (c,), ('std', 0.5)),
      'blocks': {
          'ln1_scale': v((d, c), 'one'), 'ln1_bias': v((d, c), 'zero'),
          'qkv_kernel': w((d, c, 3 * c), c), 'qkv_bias': v((d, 3 * c), 'zero'),
          'proj_kernel': w((d, c, c), c), 'proj_bias': v((d, c), 'zero'),
          'ln2_scale': v((d, c), 'one'), 'ln2_bias': v((d, c), 'zero'),
          'fc1_kernel': w((d, c, m), c), 'fc1_bias': v((d, m), 'zero'),
          'fc2_kernel': w((d, m, c), m), 'fc2_bias': v((d, c), 'zero'),
      },
      'norm': {'scale': v((c,), 'one'), 'bias': v((c,), 'zero')},
  }
  if arch.cls_token:
    spec['cls_token'] = v((c,), ('std', 0.5))
    spec['cls_pos'] = v((c,), ('std', 0.5))
  if arch.head is not None:
    hd, cin = arch.head, c
    deconv, conv = [], []
    for cout, k in zip(hd.deconv_channels, hd.deconv_kernels):
      deconv.append(w((k, k, cin, cout), cin * k * k // 4))  # stride 2: k^2/4 taps per output
      cin = cout
    for cout, k in zip(hd.conv_channels, hd.conv_kernels):
      conv.append({'kernel': w((k, k, cin, cout), cin * k * k), 'bias': v((cout,), 'zero')})
      cin = cout
    spec['head'] = {'deconv': deconv, 'conv': conv,
                    'out': {'kernel': w((cin, hd.out_channels), cin),
                            'bias': v((hd.out_channels,), 'zero')}}
  return spec


def _is_spec_leaf(x):
  return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], tuple)


def init_params(arch: Arch, seed: int = 0, dtype=jnp.float32):
  """Random parameters (LeCun-normal weights, LayerNorm scales 1 +- 0.1,
  biases +- 0.1): every activation stays O(1), so float errors show in tests.
  numpy draws them (jax.random's compile took 15 s for the tiny test model)."""
  rng = np.random.default_rng(seed)

  def make(leaf):
    shape, init = leaf
    x = rng.standard_normal(shape, dtype=np.float32)
    if init == 'one':
      x = 1.0 + 0.1 * x
    elif init == 'zero':
      x = 0.1 * x
    else:
      x *= init[1] ** -0.5 if init[0] == 'fan_in' else init[1]
    return jnp.asarray(x.astype(jnp.dtype(dtype)))

  return jax.tree.map(make, param_spec(arch), is_leaf=_is_spec_leaf)


def abstract_params(arch: Arch, dtype=jnp.float32):
  """The parameter tree as ShapeDtypeStructs (nothing allocated)."""
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf[0], jnp.dtype(dtype)),
                      param_spec(arch), is_leaf=_is_spec_leaf)


def resolve_arch(arch_or_size, head=None, *, patch_padding=None, **overrides) -> Arch:
  """An Arch from a size name ('0.3b', 'sapiens_1b') or an Arch, with `head`
  a kind in HEADS, a HeadArch or None, and the patch padding of the
  official config for that head unless given."""
  if isinstance(arch_or_size, Arch):
    arch = arch_or_size
  else:
    name = str(arch_or_size).lower().removeprefix('sapiens_')
    if name not in ARCHS:
      raise ValueError(f'unknown Sapiens size {arch_or_size!r}; known: {sorted(ARCHS)}')
    arch = ARCHS[name]
  if head is not None:
    if isinstance(head, str):
      if head not in HEADS:
        raise ValueError(f'unknown Sapiens head {head!r}; known: {sorted(HEADS)}')
      head = HEADS[head]
    overrides['head'] = head
    if patch_padding is None:
      patch_padding = default_patch_padding(head)
  if patch_padding is not None:
    overrides['patch_padding'] = int(patch_padding)
  return dataclasses.replace(arch, **overrides)


def random_model(arch_or_size, head=None, *, seed: int = 0, dtype=jnp.float32,
                 patch_padding=None, **overrides) -> Sapiens:
  """A randomly initialised Sapiens: `random_model('0.3b', 'pose')` or a small
  custom one, `random_model(Arch(32, 2, 2, pos_hw=(8, 6)), HeadArch('pose',
  (16, 16), (4, 4), (16,), (1,), 308))`; `overrides` replace Arch fields."""
  arch = resolve_arch(arch_or_size, head, patch_padding=patch_padding, **overrides)
  params = init_params(arch, seed, dtype)
  return Sapiens(arch, params, dtype=dtype, source=f'random(seed={seed})')


# ----------------------------------------------------------------------------- loading


class CheckpointError(ValueError):
  """A Sapiens checkpoint that does not hold what its keys promise."""


# Keys of modules without weights for this network, present in official files:
# the data preprocessor's mean/std (traced modules keep non-persistent
# buffers), loss modules, and the MAE pretraining decoder ('neck').
IGNORED_PREFIXES = ('data_preprocessor.', 'neck.', 'head.loss_module.',
                    'decode_head.loss_decode.')


def _file_format(path: str) -> str:
  """'torchscript' | 'export' | 'torch': how the file was written (a
  TorchScript zip has code/, a torch.export archive archive_format, a
  torch.save file neither, or is a legacy non-zip pickle)."""
  if not zipfile.is_zipfile(path):
    return 'torch'
  with zipfile.ZipFile(path) as z:
    names = z.namelist()
  if any('/code/' in n for n in names):
    return 'torchscript'
  if any(n.endswith('/archive_format') or n == 'archive_format' for n in names):
    return 'export'
  return 'torch'


def _first_line(e: Exception) -> str:
  msg = str(e).strip().splitlines()
  return (msg[0][:300] if msg else type(e).__name__)


class _Inert:
  """Stands for every object of a checkpoint's metadata (configs, numpy
  arrays, logging buffers): built without running any of the file's code."""

  def __new__(cls, *args, **kwargs):
    return object.__new__(cls)

  def __init__(self, *args, **kwargs):
    pass

  def __call__(self, *args, **kwargs):
    return _Inert()

  def __setstate__(self, state):
    pass

  def __setitem__(self, key, value):
    pass

  def append(self, value):
    pass

  def extend(self, values):
    pass


def _inert_pickle_module(torch):
  """A pickle module for torch.load whose unpickler calls only torch's
  tensor rebuilders (storages come through torch's own persistent_load) and
  OrderedDict; any other global becomes _Inert, so nothing the file names is
  imported or run. For mmengine checkpoints whose metadata (numpy arrays,
  mmengine classes) weights_only=True refuses."""
  import collections
  import pickle
  import types

  allowed = {('collections', 'OrderedDict'): collections.OrderedDict,
             ('torch', 'Size'): torch.Size}
  for name in ('_rebuild_tensor', '_rebuild_tensor_v2', '_rebuild_tensor_v3',
               '_rebuild_parameter'):
    if hasattr(torch._utils, name):
      allowed[('torch._utils', name)] = getattr(torch._utils, name)

  class Unpickler(pickle.Unpickler):

    def find_class(self, module, name):
      if (module, name) in allowed:
        return allowed[(module, name)]
      if module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
      return _Inert

  return types.SimpleNamespace(Unpickler=Unpickler, __name__='sapiens_jax_inert_pickle',
                               load=lambda f, **kw: Unpickler(f, **kw).load())


def _read_state_dict(path: str):
  """{key: float32 numpy array} of an official .pth (wrapped or not), a
  TorchScript file or a torch.export archive."""
  import pickle

  import torch  # deferred: torch is the optional [sapiens] extra, never a core import
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Sapiens checkpoint {path!r} does not exist')
  fmt = _file_format(path)
  reader = {'torchscript': 'torch.jit.load', 'export': 'torch.export.load'}.get(
      fmt, 'torch.load')
  try:
    if fmt == 'torchscript':
      with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript
        warnings.simplefilter('ignore', DeprecationWarning)
        sd = torch.jit.load(path, map_location='cpu').state_dict()
    elif fmt == 'export':
      sd = dict(torch.export.load(path).state_dict)
    else:
      try:
        sd = torch.load(path, map_location='cpu', weights_only=True)
      except pickle.UnpicklingError:   # metadata beyond tensors: load it inert
        sd = torch.load(path, map_location='cpu', weights_only=False,
                        pickle_module=_inert_pickle_module(torch))
  except Exception as e:  # noqa: BLE001 - torch raises many kinds
    raise CheckpointError(f'cannot read Sapiens checkpoint {path} with {reader}: '
                          f'{_first_line(e)}') from None
  if isinstance(sd, dict) and isinstance(sd.get('state_dict'), dict):
    sd = sd['state_dict']    # mmengine's {'meta', 'state_dict', ...}
  if not isinstance(sd, dict):
    raise CheckpointError(f'Sapiens checkpoint {path}: {reader} gave a {type(sd).__name__}, '
                          'not a state dict (or {"state_dict": ...})')
  out = {}
  for k, v in sd.items():
    if not isinstance(v, torch.Tensor):
      raise CheckpointError(f'Sapiens checkpoint {path}: key {k!r} is a {type(v).__name__}, '
                            'not a tensor')
    out[k] = v.detach().to('cpu', torch.float32).numpy()
  return out


def _layer_indices(sd, prefix):
  """Sorted ints i of keys `prefix{i}.`."""
  pat = re.compile(re.escape(prefix) + r'(\d+)\.')
  return sorted({int(m.group(1)) for k in sd for m in [pat.match(k)] if m})


def _infer_head(path, sd) -> tuple[str, HeadArch] | None:
  """(key prefix, HeadArch) from the head keys, or None."""
  if 'head.final_layer.weight' in sd:
    prefix, out_key = 'head.', 'head.final_layer.weight'
  elif 'decode_head.conv_seg.weight' in sd:
    prefix, out_key = 'decode_head.', 'decode_head.conv_seg.weight'
  else:
    return None

  def layers(name):
    idx = _layer_indices(sd, prefix + name + '.')
    want = list(range(0, 3 * len(idx), 3))  # each layer: conv, InstanceNorm, SiLU
    if idx != want:
      missing = sorted(set(want) - set(idx))
      key = f'{prefix}{name}.{missing[0] if missing else want[-1]}.weight'
      raise CheckpointError(f'Sapiens checkpoint {path}: missing key {key!r} (the {name} '
                            f'are numbered {idx}, expected {want})')
    out = []
    for i in idx:
      key = f'{prefix}{name}.{i}.weight'
      if key not in sd:
        raise CheckpointError(f'Sapiens checkpoint {path}: missing key {key!r}')
      w = sd[key]
      if w.ndim != 4 or w.shape[2] != w.shape[3] or (
          name == 'deconv_layers' and w.shape[2] not in (2, 3, 4)):
        raise CheckpointError(f'Sapiens checkpoint {path}: key {key!r} has shape '
                              f'{tuple(w.shape)}, expected a square 4-d kernel'
                              + (' of size 2, 3 or 4' if name == 'deconv_layers' else ''))
      out.append(w)
    return out

  deconv = layers('deconv_layers')
  conv = layers('conv_layers')
  out_channels = int(sd[out_key].shape[0])
  if prefix == 'head.':
    kind = 'pose'
  else:
    kind = {1: 'depth', 3: 'normal'}.get(out_channels, 'seg')
  head = HeadArch(kind, tuple(int(w.shape[1]) for w in deconv),
                  tuple(int(w.shape[2]) for w in deconv),
                  tuple(int(w.shape[0]) for w in conv), tuple(int(w.shape[2]) for w in conv),
                  out_channels)
  return prefix, head


def _infer_pos_hw(path, tokens: int, pos_hw):
  if pos_hw is not None:
    pos_hw = tuple(int(v) for v in pos_hw)
    if pos_hw[0] * pos_hw[1] != tokens:
      raise CheckpointError(f'Sapiens checkpoint {path}: pos_hw={pos_hw} has '
                            f'{pos_hw[0] * pos_hw[1]} tokens, the position embedding {tokens}')
    return pos_hw
  # Sapiens trains at 1024 x 768 (H x W): a 4:3 grid, 64 x 48 for 3072 tokens.
  h = round(math.sqrt(tokens * 4 / 3))
  if h % 4 == 0 and h * (h * 3 // 4) == tokens:
    return h, h * 3 // 4
  s = round(math.sqrt(tokens))
  if s * s == tokens:
    return s, s
  raise CheckpointError(f'Sapiens checkpoint {path}: cannot tell the token grid of the '
                        f'{tokens}-token position embedding (neither 4:3 nor square); pass '
                        'pos_hw=(H, W)')


def _expected_shapes(arch: Arch, bb: str, head_prefix: str):
  c, m, ps = arch.embed_dim, arch.mlp_dim, arch.patch_size
  tokens = arch.pos_hw[0] * arch.pos_hw[1] + int(arch.cls_token)
  shapes = {f'{bb}patch_embed.projection.weight': (c, 3, ps, ps),
            f'{bb}patch_embed.projection.bias': (c,),
            f'{bb}pos_embed': (1, tokens, c),
            f'{bb}ln1.weight': (c,), f'{bb}ln1.bias': (c,)}
  if arch.cls_token:
    shapes[f'{bb}cls_token'] = (1, 1, c)
  for i in range(arch.depth):
    p = f'{bb}layers.{i}.'
    for name, shape in (('ln1.weight', (c,)), ('ln1.bias', (c,)),
                        ('attn.qkv.weight', (3 * c, c)), ('attn.qkv.bias', (3 * c,)),
                        ('attn.proj.weight', (c, c)), ('attn.proj.bias', (c,)),
                        ('ln2.weight', (c,)), ('ln2.bias', (c,)),
                        ('ffn.layers.0.0.weight', (m, c)), ('ffn.layers.0.0.bias', (m,)),
                        ('ffn.layers.1.weight', (c, m)), ('ffn.layers.1.bias', (c,))):
      shapes[p + name] = shape
  if arch.head is not None:
    hd, cin = arch.head, c
    for j, (cout, k) in enumerate(zip(hd.deconv_channels, hd.deconv_kernels)):
      shapes[f'{head_prefix}deconv_layers.{3 * j}.weight'] = (cin, cout, k, k)
      cin = cout
    for j, (cout, k) in enumerate(zip(hd.conv_channels, hd.conv_kernels)):
      shapes[f'{head_prefix}conv_layers.{3 * j}.weight'] = (cout, cin, k, k)
      shapes[f'{head_prefix}conv_layers.{3 * j}.bias'] = (cout,)
      cin = cout
    final = 'final_layer' if hd.kind == 'pose' else 'conv_seg'
    shapes[f'{head_prefix}{final}.weight'] = (hd.out_channels, cin, 1, 1)
    shapes[f'{head_prefix}{final}.bias'] = (hd.out_channels,)
  return shapes


def infer_arch(sd, path: str = '<state dict>', *, patch_padding=None, num_heads=None,
               pos_hw=None) -> tuple[Arch, str, str]:
  """(Arch, backbone key prefix, head key prefix) of an official state dict."""
  if 'backbone.patch_embed.projection.weight' in sd:
    bb = 'backbone.'
  elif 'patch_embed.projection.weight' in sd:
    bb = ''    # a bare backbone state dict
  else:
    raise CheckpointError(f'Sapiens checkpoint {path}: missing key '
                          "'backbone.patch_embed.projection.weight' (not a Sapiens "
                          'mmpretrain/mmpose/mmseg state dict?)')
  w = sd[f'{bb}patch_embed.projection.weight']
  if w.ndim != 4 or w.shape[1] != 3 or w.shape[2] != w.shape[3]:
    raise CheckpointError(f'Sapiens checkpoint {path}: key {bb}patch_embed.projection.weight '
                          f'has shape {w.shape}, expected (C, 3, p, p)')
  c, ps = int(w.shape[0]), int(w.shape[2])
  depth = len(_layer_indices(sd, f'{bb}layers.'))
  fc1 = sd.get(f'{bb}layers.0.ffn.layers.0.0.weight')
  if depth == 0 or fc1 is None:
    raise CheckpointError(f'Sapiens checkpoint {path}: missing key '
                          f"'{bb}layers.0.ffn.layers.0.0.weight'")
  mlp_ratio = float(fc1.shape[0]) / c
  if num_heads is None:
    std = [a for a in ARCHS.values() if (a.embed_dim, a.depth) == (c, depth)]
    if not std:
      raise CheckpointError(
          f'Sapiens checkpoint {path}: embed {c} x depth {depth} is none of the standard '
          f'sizes {[(k, a.embed_dim, a.depth) for k, a in ARCHS.items()]} and the head count '
          'is not in the weights; pass num_heads')
    num_heads, name = std[0].num_heads, std[0].name
  else:
    std = [a for a in ARCHS.values() if (a.embed_dim, a.depth, a.num_heads) ==
           (c, depth, num_heads)]
    name = std[0].name if std else 'custom'
  if c % num_heads:
    raise CheckpointError(f'Sapiens checkpoint {path}: embed {c} is not divisible by '
                          f'num_heads={num_heads}')
  cls_token = f'{bb}cls_token' in sd
  pos = sd.get(f'{bb}pos_embed')
  if pos is None:
    raise CheckpointError(f"Sapiens checkpoint {path}: missing key '{bb}pos_embed'")
  if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != c:
    raise CheckpointError(f'Sapiens checkpoint {path}: key {bb}pos_embed has shape '
                          f'{pos.shape}, expected (1, tokens, {c})')
  grid = _infer_pos_hw(path, int(pos.shape[1]) - int(cls_token), pos_hw)
  found = _infer_head(path, sd) if bb else None
  head_prefix, head_arch = found if found else ('', None)
  if patch_padding is None:
    patch_padding = default_patch_padding(head_arch)
  arch = Arch(c, depth, int(num_heads), mlp_ratio, ps, int(patch_padding), grid, cls_token,
              head_arch, name)
  return arch, bb, head_prefix


def _check_keys(path, sd, expected):
  for k, shape in expected.items():
    if k not in sd:
      raise CheckpointError(f'Sapiens checkpoint {path}: missing key {k!r}')
    if tuple(sd[k].shape) != tuple(shape):
      raise CheckpointError(f'Sapiens checkpoint {path}: key {k!r} has shape '
                            f'{tuple(sd[k].shape)}, expected {tuple(shape)}')
  extra = [k for k in sd if k not in expected and not k.startswith(IGNORED_PREFIXES)]
  if extra:
    raise CheckpointError(f'Sapiens checkpoint {path}: unexpected key {extra[0]!r}'
                          + (f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''))


def convert_state_dict(sd, arch: Arch, bb: str = 'backbone.', head_prefix: str = '',
                       dtype=jnp.float32):
  """The JAX parameter tree of a checked official state dict (numpy values)."""
  c = arch.embed_dim

  def cast(x):
    # Cast in numpy (ml_dtypes' bfloat16): jnp casts would compile one op per shape.
    return jnp.asarray(np.ascontiguousarray(x).astype(jnp.dtype(dtype)))

  def layer_stack(name, fn=lambda x: x):
    return cast(np.stack([fn(sd[f'{bb}layers.{i}.{name}']) for i in range(arch.depth)]))

  w = sd[f'{bb}patch_embed.projection.weight']              # (C, 3, p, p)
  pos = sd[f'{bb}pos_embed'][0]
  params = {
      'patch': {'kernel': cast(w.transpose(2, 3, 1, 0).reshape(-1, c)),
                'bias': cast(sd[f'{bb}patch_embed.projection.bias'])},
      'pos_embed': cast(pos[int(arch.cls_token):].reshape(arch.pos_hw + (c,))),
      'blocks': {
          'ln1_scale': layer_stack('ln1.weight'), 'ln1_bias': layer_stack('ln1.bias'),
          'qkv_kernel': layer_stack('attn.qkv.weight', np.transpose),
          'qkv_bias': layer_stack('attn.qkv.bias'),
          'proj_kernel': layer_stack('attn.proj.weight', np.transpose),
          'proj_bias': layer_stack('attn.proj.bias'),
          'ln2_scale': layer_stack('ln2.weight'), 'ln2_bias': layer_stack('ln2.bias'),
          'fc1_kernel': layer_stack('ffn.layers.0.0.weight', np.transpose),
          'fc1_bias': layer_stack('ffn.layers.0.0.bias'),
          'fc2_kernel': layer_stack('ffn.layers.1.weight', np.transpose),
          'fc2_bias': layer_stack('ffn.layers.1.bias'),
      },
      'norm': {'scale': cast(sd[f'{bb}ln1.weight']), 'bias': cast(sd[f'{bb}ln1.bias'])},
  }
  if arch.cls_token:
    params['cls_token'] = cast(sd[f'{bb}cls_token'].reshape(c))
    params['cls_pos'] = cast(pos[0])
  if arch.head is not None:
    hd, hp = arch.head, head_prefix
    final = 'final_layer' if hd.kind == 'pose' else 'conv_seg'
    params['head'] = {
        'deconv': [cast(sd[f'{hp}deconv_layers.{3 * j}.weight'].transpose(2, 3, 0, 1))
                   for j in range(len(hd.deconv_channels))],
        'conv': [{'kernel': cast(sd[f'{hp}conv_layers.{3 * j}.weight'].transpose(2, 3, 1, 0)),
                  'bias': cast(sd[f'{hp}conv_layers.{3 * j}.bias'])}
                 for j in range(len(hd.conv_channels))],
        'out': {'kernel': cast(sd[f'{hp}{final}.weight'][:, :, 0, 0].T),
                'bias': cast(sd[f'{hp}{final}.bias'])},
    }
  return params


def load(path: str, *, patch_padding: int | None = None, dtype=jnp.float32,
         num_heads: int | None = None, pos_hw=None) -> Sapiens:
  """A Sapiens model from an official checkpoint: a `.pth` (`{'state_dict': ...}`
  or bare; torch.load with weights_only=True, or, when the metadata holds
  more than tensors, with an unpickler that runs none of the file's code),
  a `*_torchscript.pt2` (torch.jit.load) or a `*_bfloat16.pt2` (torch.export).

  The size comes from the weight shapes (the standard table gives the head
  count; pass `num_heads` for other shapes), the head kind from the keys
  ('head.final_layer' pose; 'decode_head.conv_seg' seg, 1 channel depth,
  3 normal; none: backbone only). `patch_padding` None takes the official
  config's for that head (`default_patch_padding`: pose 2, Goliath seg and
  depth 0). `dtype`: parameters and compute (LayerNorm, softmax and
  InstanceNorm statistics stay float32); outputs are float32.
  """
  path = os.fspath(path)
  sd = _read_state_dict(path)
  arch, bb, head_prefix = infer_arch(sd, path, patch_padding=patch_padding,
                                     num_heads=num_heads, pos_hw=pos_hw)
  _check_keys(path, sd, _expected_shapes(arch, bb, head_prefix))
  params = convert_state_dict(sd, arch, bb, head_prefix, jnp.dtype(dtype))
  return Sapiens(arch, params, dtype=dtype, source=path)
