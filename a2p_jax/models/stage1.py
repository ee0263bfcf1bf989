"""A2P stage 1: image (+ teacher priors) -> two MANO hands and their
relative root translation.

    images --ResNet (encoder)--> F_i ----------------\
    priors --Proj--------------> F_p --[use_fae]--> tokens --Transformer--> queries --head
    images --ResNet + 1x1 (FAE)-> F_fae -------------/

Tokens: F_i and F_p (or F_fae) are each projected to `dim` and get their
own learned positional embedding (which also tells the two streams
apart); three learned query tokens are prepended: right hand, left hand,
relative root. The hand queries go through one shared MLP to 16 rot6d
rotations + 10 betas + a raw (u, v, t) root code (camera.root_from_crop);
the third query gives rel_root. Pre-LN transformer encoder, GELU MLPs.

Output conventions: hand index 0 right, 1 left; `pose_6d` is the pose of
mano_jax.forward(pose_repr='rot6d') with flat_hand_mean=False (MANO's
default and InterHand2.6M's): global orientation then the 15 finger
rotations *before* hands_mean is added, so the identity is the mean pose
and the axis-angle `mano_pose` of the data is in the same convention. The
last layers of the head start at zero: the first prediction is the mean
pose, betas 0, each root at the crop centre at depth z_ref, rel_root 0.

Training with the teacher: `model(images, priors, ...)` computes F_p and
F_fae (for L_prior) and fuses F_p, or F_fae where `use_fae` (a Python or
traced bool: the scheduled-mix ablation). Inference: `model(images, None,
...)` fuses F_fae; the projection is unused.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from a2p_jax.models import camera, initializers
from a2p_jax.models.camera import root_from_crop  # noqa: F401  (public here too)
from a2p_jax.models.resnet import ResNet, num_params

# The ImageNet statistics both ResNets expect, on 0-255 pixel values.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
# What the model reads of a pipeline batch (besides 'priors' when trained with them).
MODEL_INPUTS = ('image', 'affine', 'focal', 'princpt')

NUM_JOINTS = 16
HAND_OUT = NUM_JOINTS * 6 + 10 + 3   # rot6d, betas, raw (u, v, t)
REL_ROOT_SCALE_M = 0.1               # rel_root = REL_ROOT_SCALE_M * raw
_IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_ZERO = nnx.initializers.zeros
_EMBED_INIT = initializers.normal(0.02)
_DENSE_INIT = initializers.normal(0.02)            # ViT-style
_CONV_INIT = initializers.variance_scaling(1.0, 'fan_in')


def normalize_images(images_u8):
  """uint8 (..., H, W, 3) crops -> float32 with ImageNet statistics (on
  device: the host sends 4x fewer bytes)."""
  images_u8 = jnp.asarray(images_u8)
  shape = (1,) * (images_u8.ndim - 1) + (3,)
  mean, std = jnp.asarray(IMAGENET_MEAN).reshape(shape), jnp.asarray(IMAGENET_STD).reshape(shape)
  return (images_u8.astype(jnp.float32) - mean) / std


class FAE(nnx.Module):
  """Fusion Alignment Encoder: image -> F_p's shape (a ResNet + 1x1 conv)."""

  def __init__(self, depth, width, prior_dim, *, rngs):
    self.backbone = ResNet(depth, width, rngs=rngs)
    self.out = nnx.Conv(self.backbone.out_channels, prior_dim, (1, 1), kernel_init=_CONV_INIT,
                        rngs=rngs)

  def __call__(self, images):
    return self.out(self.backbone(images))


class Projection(nnx.Module):
  """Proj(F_k, F_s, F_d): the channel-concatenated teacher maps -> F_p.
  3x3 conv, GELU, 1x1 conv; no normalisation, so the FAE's target does not
  depend on train/eval mode."""

  def __init__(self, in_channels, prior_dim, *, rngs):
    self.conv1 = nnx.Conv(in_channels, prior_dim, (3, 3), kernel_init=_CONV_INIT, rngs=rngs)
    self.conv2 = nnx.Conv(prior_dim, prior_dim, (1, 1), kernel_init=_CONV_INIT, rngs=rngs)

  def __call__(self, priors):
    return self.conv2(jax.nn.gelu(self.conv1(priors)))


class Block(nnx.Module):
  """Pre-LN transformer encoder block."""

  def __init__(self, dim, num_heads, mlp_dim, dropout, *, rngs):
    self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(num_heads, dim, decode=False, kernel_init=_DENSE_INIT,
                                       rngs=rngs)
    self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
    self.fc1 = nnx.Linear(dim, mlp_dim, kernel_init=_DENSE_INIT, rngs=rngs)
    self.fc2 = nnx.Linear(mlp_dim, dim, kernel_init=_DENSE_INIT, rngs=rngs)
    self.drop = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x):
    x = x + self.drop(self.attn(self.ln1(x)))
    return x + self.drop(self.fc2(jax.nn.gelu(self.fc1(self.ln2(x)))))


class FusionTransformer(nnx.Module):
  """<F_i, F_prior> tokens + 3 queries -> the 3 query outputs (B, 3, dim)."""

  def __init__(self, image_channels, prior_dim, num_tokens, cfg, *, rngs):
    dim = cfg.dim
    self.image_embed = nnx.Linear(image_channels, dim, kernel_init=_DENSE_INIT, rngs=rngs)
    self.prior_embed = nnx.Linear(prior_dim, dim, kernel_init=_DENSE_INIT, rngs=rngs)
    self.image_pos = nnx.Param(_EMBED_INIT(rngs.params(), (num_tokens, dim)))
    self.prior_pos = nnx.Param(_EMBED_INIT(rngs.params(), (num_tokens, dim)))
    self.queries = nnx.Param(_EMBED_INIT(rngs.params(), (3, dim)))
    self.blocks = nnx.List([Block(dim, cfg.num_heads, cfg.mlp_dim, cfg.dropout, rngs=rngs)
                            for _ in range(cfg.num_layers)])
    self.norm = nnx.LayerNorm(dim, rngs=rngs)

  def __call__(self, f_i, f_prior):
    b = f_i.shape[0]
    img = self.image_embed(f_i.reshape(b, -1, f_i.shape[-1])) + self.image_pos[None]
    pri = self.prior_embed(f_prior.reshape(b, -1, f_prior.shape[-1])) + self.prior_pos[None]
    q = jnp.broadcast_to(self.queries[None], (b,) + self.queries.shape)
    x = jnp.concatenate([q.astype(img.dtype), img, pri], axis=1)
    for block in self.blocks:
      x = block(x)
    return self.norm(x[:, :3])


class Regressor(nnx.Module):
  """Query outputs -> raw hand codes (B, 2, HAND_OUT) and rel_root (B, 3)."""

  def __init__(self, dim, *, rngs):
    self.hand_fc = nnx.Linear(dim, dim, kernel_init=_DENSE_INIT, rngs=rngs)
    self.hand_out = nnx.Linear(dim, HAND_OUT, kernel_init=_ZERO, rngs=rngs)
    self.rel_fc = nnx.Linear(dim, dim, kernel_init=_DENSE_INIT, rngs=rngs)
    self.rel_out = nnx.Linear(dim, 3, kernel_init=_ZERO, rngs=rngs)

  def __call__(self, q):
    hands = self.hand_out(jax.nn.gelu(self.hand_fc(q[:, :2])))
    rel = self.rel_out(jax.nn.gelu(self.rel_fc(q[:, 2])))
    return hands, rel


class Stage1(nnx.Module):
  """See the module docstring. `cfg`: config.model (encoder_depth,
  encoder_width, fae_depth, fae_width, prior_dim, dim, num_layers,
  num_heads, mlp_dim, dropout, input_hw); `prior_channels`: channels of
  the concatenated teacher maps."""

  def __init__(self, cfg, *, prior_channels: int, rngs: nnx.Rngs):
    h, w = (int(s) for s in cfg.input_hw)
    if h % 32 or w % 32:
      raise ValueError(f'Stage1: input_hw must be multiples of 32, got {cfg.input_hw}')
    if cfg.dim % cfg.num_heads:
      raise ValueError(f'Stage1: dim {cfg.dim} is not divisible by num_heads {cfg.num_heads}')
    self.input_hw = (h, w)
    self.grid_hw = (h // 32, w // 32)
    self.prior_channels = int(prior_channels)
    self.prior_dim = int(cfg.prior_dim)
    self.encoder = ResNet(cfg.encoder_depth, cfg.encoder_width, rngs=rngs)
    self.fae = FAE(cfg.fae_depth, cfg.fae_width, cfg.prior_dim, rngs=rngs)
    self.projection = Projection(prior_channels, cfg.prior_dim, rngs=rngs)
    self.transformer = FusionTransformer(self.encoder.out_channels, cfg.prior_dim,
                                         self.grid_hw[0] * self.grid_hw[1], cfg, rngs=rngs)
    self.head = Regressor(cfg.dim, rngs=rngs)

  def __call__(self, images, priors=None, *, affine, focal, princpt, use_fae=False):
    """images (B, H, W, 3) normalised; priors (B, h, w, C) on the feature
    grid (h, w = H/32, W/32) or None; the crop's camera (camera.py):
    affine (B, 2, 3), focal (B, 2), princpt (B, 2).

    Returns {'pose_6d' (B, 2, 16, 6), 'betas' (B, 2, 10), 'root_cam'
    (B, 2, 3) m wrists in camera space, 'root_uv' (B, 2, 2) their crop
    pixels, 'rel_root' (B, 3) m left minus right wrist (its own query),
    'f_fae' (B, h, w, prior_dim), 'f_p' (same) or None}.
    """
    b = images.shape[0]
    if images.ndim != 4 or tuple(images.shape[1:3]) != self.input_hw:
      raise ValueError(f'Stage1: images must be (B, {self.input_hw[0]}, {self.input_hw[1]}, 3), '
                       f'got {images.shape}')
    for name, x, shape in (('affine', affine, (b, 2, 3)), ('focal', focal, (b, 2)),
                           ('princpt', princpt, (b, 2))):
      if tuple(x.shape) != shape:
        raise ValueError(f'Stage1: {name} must have shape {shape}, got {x.shape}')
    want = (b,) + self.grid_hw + (self.prior_channels,)
    if priors is not None and tuple(priors.shape) != want:
      raise ValueError(f'Stage1: priors must be {want} (the feature grid, prior_channels), '
                       f'got {priors.shape}')
    f_i = self.encoder(images)
    f_fae = self.fae(images)
    if priors is None:
      f_p, f_prior = None, f_fae
    else:
      f_p = self.projection(priors)
      f_prior = jnp.where(jnp.asarray(use_fae, bool), f_fae, f_p)
    q = self.transformer(f_i, f_prior)
    hands, rel = self.head(q)
    pose = hands[..., :NUM_JOINTS * 6].reshape(b, 2, NUM_JOINTS, 6)
    pose = pose + jnp.asarray(_IDENTITY_6D, pose.dtype).reshape(1, 1, 1, 6)
    betas = hands[..., NUM_JOINTS * 6:NUM_JOINTS * 6 + 10]
    uvz = hands[..., NUM_JOINTS * 6 + 10:]
    root_uv, _ = camera.decode_uvz(uvz, affine, focal, self.input_hw)
    root_cam = root_from_crop(uvz, affine, focal, princpt, self.input_hw)
    return {'pose_6d': pose, 'betas': betas, 'root_cam': root_cam, 'root_uv': root_uv,
            'rel_root': REL_ROOT_SCALE_M * rel, 'f_fae': f_fae, 'f_p': f_p}

  def inference_param_count(self) -> int:
    return param_counts(self)['inference']


def param_counts(model: Stage1) -> dict:
  """Trainable parameters per part (works on `nnx.eval_shape` models too).
  'inference' leaves out the projection (used only with the teacher)."""
  parts = {k: num_params(getattr(model, k))
           for k in ('encoder', 'fae', 'projection', 'transformer', 'head')}
  parts['total'] = sum(parts.values())
  parts['inference'] = parts['total'] - parts['projection']
  return parts
