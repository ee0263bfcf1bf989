"""Cosine noise schedule (Nichol & Dhariwal 2021), forward corruption and
the strided DDIM timesteps."""

import jax
import jax.numpy as jnp
import numpy as np

MAX_BETA = 0.999


def cosine_alpha_bar(num_steps: int = 1000, s: float = 0.008) -> np.ndarray:
  """alpha_bar_t for t = 0..T-1 (float32, decreasing from ~1 to ~0):
  prod_{i<=t} (1 - beta_i) with beta_i = 1 - f(i+1)/f(i), clipped at
  MAX_BETA, f(u) = cos^2((u/T + s)/(1 + s) pi/2)."""
  if num_steps < 2:
    raise ValueError(f'num_steps must be >= 2, got {num_steps}')
  u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
  f = np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
  betas = np.minimum(1.0 - f[1:] / f[:-1], MAX_BETA)
  return np.cumprod(1.0 - betas).astype(np.float32)


def q_sample(x0, t, noise, alpha_bar):
  """X_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise; t (...,) int32."""
  ab = jnp.asarray(alpha_bar)[t][..., None]
  return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def ddim_timesteps(num_steps: int, num_sample_steps: int, start: int = None) -> np.ndarray:
  """Strided timesteps, descending from `start` (default T-1) to 0 (int32,
  num_sample_steps)."""
  start = num_steps - 1 if start is None else int(start)
  if not 0 <= start < num_steps:
    raise ValueError(f'start must be in [0, {num_steps - 1}], got {start}')
  if not 1 <= num_sample_steps <= start + 1:
    raise ValueError(f'num_sample_steps must be in [1, {start + 1}], got {num_sample_steps}')
  return np.round(np.linspace(start, 0, num_sample_steps)).astype(np.int32)


def sample_t(key, shape, num_steps: int):
  return jax.random.randint(key, shape, 0, num_steps, dtype=jnp.int32)
