"""Stage-2 denoiser D(X_t, t, X_c) -> X_0 (MDM-style transformer, predicts x0).

    X_t, X_c (B, DIM) normalized state vectors (the layout, a2p_jax.diffusion.state,
    comes in as the constructor's `tokens`)
      -> 35 tokens each (16 joints per hand in 6D, betas per hand, the
         relative translation; features zero-padded to TOKEN_WIDTH)
      -> in_proj(X_t tokens) + cond_proj(X_c tokens) + learned positions
    [time token: sinusoidal(t) -> MLP] [condition token: Linear(X_c)] + tokens
      -> pre-LN transformer encoder (GELU) -> out_proj on the 35 tokens -> X_0

X_c enters twice: added per token (the denoiser sees each joint's
penetrating value where it denoises that joint) and as a prepended global
token. With `residual` the output is X_c + out_proj(...), and out_proj
starts at zero, so the untrained model returns the condition: a repair
starts as the identity and learns the correction.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from a2p_jax.models import initializers
from a2p_jax.models.stage1 import Block

_DENSE_INIT = initializers.normal(0.02)
_ZERO = nnx.initializers.zeros


def token_index(tokens):
  """(gather index (T, W) int32, mask (T, W) float32, scatter index (DIM,)
  into T*W) of a token layout: `tokens` ((start, size), ...) must tile the
  state vector [0, DIM) exactly; W is the largest size."""
  t, w = len(tokens), max(size for _, size in tokens)
  dim = sum(size for _, size in tokens)
  covered = sorted(i for start, size in tokens for i in range(start, start + size))
  if covered != list(range(dim)):
    raise ValueError(f'Denoiser: tokens {tokens} do not tile a state vector [0, {dim})')
  idx = np.zeros((t, w), np.int32)
  mask = np.zeros((t, w), np.float32)
  scatter = np.zeros(dim, np.int32)
  for k, (start, size) in enumerate(tokens):
    idx[k, :size] = np.arange(start, start + size)
    mask[k, :size] = 1.0
    scatter[start:start + size] = k * w + np.arange(size)
  return idx, mask, scatter


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  """Sinusoidal embedding (B, dim) of integer timesteps t (B,)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], -1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], -1)
  return emb


class Denoiser(nnx.Module):
  """`cfg`: config.model (latent_dim, num_layers, num_heads, ff_dim, dropout,
  residual); `tokens`: the state vector's layout, ((start, size), ...) per
  token (a2p_jax.diffusion.state.TOKENS), zero-padded to the largest size."""

  def __init__(self, cfg, tokens, *, rngs: nnx.Rngs):
    d = int(cfg.latent_dim)
    if d % cfg.num_heads:
      raise ValueError(f'Denoiser: latent_dim {d} is not divisible by num_heads {cfg.num_heads}')
    self.tokens = tuple((int(a), int(b)) for a, b in tokens)
    idx, _, scatter = token_index(self.tokens)
    w, n_tok, self.dim = idx.shape[1], len(self.tokens), len(scatter)
    self.latent_dim = d
    self.residual = bool(cfg.residual)
    self.in_proj = nnx.Linear(w, d, kernel_init=_DENSE_INIT, rngs=rngs)
    self.cond_proj = nnx.Linear(w, d, kernel_init=_DENSE_INIT, rngs=rngs)
    self.cond_token = nnx.Linear(self.dim, d, kernel_init=_DENSE_INIT, rngs=rngs)
    self.time_fc1 = nnx.Linear(d, d, kernel_init=_DENSE_INIT, rngs=rngs)
    self.time_fc2 = nnx.Linear(d, d, kernel_init=_DENSE_INIT, rngs=rngs)
    self.pos = nnx.Param(_DENSE_INIT(rngs.params(), (n_tok + 2, d)))
    self.blocks = nnx.List([Block(d, cfg.num_heads, cfg.ff_dim, cfg.dropout, rngs=rngs)
                            for _ in range(cfg.num_layers)])
    self.norm = nnx.LayerNorm(d, rngs=rngs)
    self.out_proj = nnx.Linear(d, w, kernel_init=_ZERO, rngs=rngs)

  def __call__(self, x_t, t, x_c):
    """x_t, x_c (B, DIM) normalized; t (B,) int -> predicted X_0 (B, DIM)."""
    b = x_t.shape[0]
    if x_t.shape != (b, self.dim) or x_c.shape != x_t.shape or t.shape != (b,):
      raise ValueError(f'Denoiser: expected x_t, x_c (B, {self.dim}) and t (B,), got '
                       f'{x_t.shape}, {x_c.shape}, {t.shape}')
    idx, mask, scatter = token_index(self.tokens)
    tok = lambda x: x[:, idx] * mask[None]
    h = self.in_proj(tok(x_t)) + self.cond_proj(tok(x_c))
    temb = self.time_fc2(jax.nn.silu(self.time_fc1(timestep_embedding(t, self.latent_dim))))
    h = jnp.concatenate([temb[:, None], self.cond_token(x_c)[:, None], h], 1) + self.pos[None]
    for block in self.blocks:
      h = block(h)
    out = self.out_proj(self.norm(h[:, 2:]))  # (B, T, W)
    out = out.reshape(b, -1)[:, scatter]
    return x_c + out if self.residual else out
