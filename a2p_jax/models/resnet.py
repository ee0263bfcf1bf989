"""ResNet-18/34/50 feature extractors (NHWC, no pooling, no classifier).

torchvision's architecture exactly (7x7 stride-2 stem + 3x3 max pool,
basic blocks for 18/34, bottlenecks with the stride on the 3x3 for 50,
1x1 projection shortcuts where the shape changes) with torch's explicit
paddings, so parameter counts match torchvision (ResNet-50 without fc:
23,508,032) and its weights could be ported one to one. BatchNorm uses
torch's momentum (0.1, i.e. flax 0.9) and epsilon; `model.train()` /
`model.eval()` switch batch statistics / running averages. The last
BatchNorm of each residual branch starts at scale 0 (Goyal et al. 2017):
each block starts as the identity, which helps training from scratch.
"""

import jax
from flax import nnx

from a2p_jax.models import initializers

_KAIMING = initializers.variance_scaling(2.0, 'fan_out')  # torchvision's init
_LAYOUTS = {18: ('basic', (2, 2, 2, 2)), 34: ('basic', (3, 4, 6, 3)),
            50: ('bottleneck', (3, 4, 6, 3))}


def _conv(cin, cout, k, stride, *, rngs):
  pad = (k - 1) // 2
  return nnx.Conv(cin, cout, (k, k), (stride, stride), padding=((pad, pad), (pad, pad)),
                  use_bias=False, kernel_init=_KAIMING, rngs=rngs)


def _bn(c, *, rngs, zero=False):
  return nnx.BatchNorm(c, momentum=0.9, epsilon=1e-5, rngs=rngs,
                       scale_init=nnx.initializers.zeros if zero else nnx.initializers.ones)


class _Shortcut(nnx.Module):

  def __init__(self, cin, cout, stride, *, rngs):
    self.conv = _conv(cin, cout, 1, stride, rngs=rngs)
    self.bn = _bn(cout, rngs=rngs)

  def __call__(self, x):
    return self.bn(self.conv(x))


class BasicBlock(nnx.Module):
  expansion = 1

  def __init__(self, cin, planes, stride, *, rngs):
    self.conv1, self.bn1 = _conv(cin, planes, 3, stride, rngs=rngs), _bn(planes, rngs=rngs)
    self.conv2, self.bn2 = _conv(planes, planes, 3, 1, rngs=rngs), _bn(planes, rngs=rngs,
                                                                        zero=True)
    self.shortcut = (_Shortcut(cin, planes, stride, rngs=rngs)
                     if stride != 1 or cin != planes else None)

  def __call__(self, x):
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return jax.nn.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class Bottleneck(nnx.Module):
  expansion = 4

  def __init__(self, cin, planes, stride, *, rngs):
    cout = planes * 4
    self.conv1, self.bn1 = _conv(cin, planes, 1, 1, rngs=rngs), _bn(planes, rngs=rngs)
    self.conv2, self.bn2 = _conv(planes, planes, 3, stride, rngs=rngs), _bn(planes, rngs=rngs)
    self.conv3, self.bn3 = _conv(planes, cout, 1, 1, rngs=rngs), _bn(cout, rngs=rngs, zero=True)
    self.shortcut = (_Shortcut(cin, cout, stride, rngs=rngs)
                     if stride != 1 or cin != cout else None)

  def __call__(self, x):
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return jax.nn.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nnx.Module):
  """`ResNet(depth, width)(x_BxHxWx3) -> (B, H/32, W/32, C)`, C = 8 * width
  (18/34) or 32 * width (50). H and W should be multiples of 32."""

  def __init__(self, depth: int, width: int = 64, *, rngs: nnx.Rngs):
    if depth not in _LAYOUTS:
      raise ValueError(f'ResNet: depth must be one of {sorted(_LAYOUTS)}, got {depth}')
    if width < 1:
      raise ValueError(f'ResNet: width must be positive, got {width}')
    kind, blocks = _LAYOUTS[depth]
    block_cls = BasicBlock if kind == 'basic' else Bottleneck
    self.depth, self.width = depth, width
    self.stem_conv = _conv(3, width, 7, 2, rngs=rngs)
    self.stem_bn = _bn(width, rngs=rngs)
    layers = []
    cin = width
    for stage, n in enumerate(blocks):
      planes = width * 2 ** stage
      for b in range(n):
        stride = 2 if (stage > 0 and b == 0) else 1
        layers.append(block_cls(cin, planes, stride, rngs=rngs))
        cin = planes * block_cls.expansion
    self.blocks = nnx.List(layers)
    self.out_channels = cin

  def __call__(self, x_BxHxWx3):
    if x_BxHxWx3.ndim != 4 or x_BxHxWx3.shape[-1] != 3:
      raise ValueError(f'ResNet: expected images (B, H, W, 3), got {x_BxHxWx3.shape}')
    x = jax.nn.relu(self.stem_bn(self.stem_conv(x_BxHxWx3)))
    x = nnx.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for block in self.blocks:
      x = block(x)
    return x


def num_params(module) -> int:
  """Trainable parameters (nnx.Param) of a module or of an abstract one
  (`nnx.eval_shape`); BatchNorm statistics are not counted, as in torch."""
  return int(sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param))))


def out_channels(depth: int, width: int) -> int:
  return width * (32 if _LAYOUTS[depth][0] == 'bottleneck' else 8)

