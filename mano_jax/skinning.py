"""Blend shapes + linear blend skinning of a batch of hands, in chunks, with a
hand-written VJP.

    verts[n, v] = sum_j W[v, j] A[n, j] [p[n, v]; 1] + transl[n]
    p[n] = template + (coeffs[n] @ dirs^T)   (coeffs = [betas, pose features])

Why chunks and a custom VJP. Per sample, the blended per-vertex 3x4
transforms sum_j W[v, j] A[n, j] are 12 V floats, four times the vertices
(41 MB at batch 1024 for MANO). Built for the whole batch (and kept by
autodiff for the backward) they made the pass memory-bound: on CPU each
fresh buffer that size is page-faulted in, and nothing of it is in cache
when read back. Here the batch runs in chunks of ~64 samples (`lax.scan`), so
a chunk's transforms live in cache from the matmul that makes them to the
multiply-add that uses them; the backward recomputes them per chunk from
the (N, 12, J) joint transforms and keeps only the posed vertices p from the
forward. Timings: benchmarks/results.md, "Issue 20".

Layout: channels first inside a chunk ((B, 3, V), vertex index innermost) so
the big arrays come from 2D matmuls and combine by vectorized elementwise
ops; dirs rows are ordered (xyz, vertex) to match.

Reverse mode (grad, vjp, jacrev) and vmap work; forward mode (jvp, jacfwd)
does not (a jax.custom_vjp function cannot be jvp'd).
"""

import functools

import jax
import jax.numpy as jnp

# Samples per chunk at float32 (half that at float64): a chunk's blended
# transforms (12 x 833 x 64 x 4 B = 2.5 MB) stay in cache; larger chunks'
# do not, smaller ones lose matmul efficiency (measured: 32 / 64 / 128).
CHUNK_F32 = 64


def _chunking(n, dtype):
  """(number of chunks, samples per chunk) covering n samples with least padding."""
  target = max(1, CHUNK_F32 * 4 // jnp.dtype(dtype).itemsize)
  k = -(-n // target)
  return k, -(-n // k)


def _posed(coeffs, dirs_t, template):
  """(B, K) blend coefficients -> posed rest vertices (B, 3, V)."""
  b = coeffs.shape[0]
  offsets = (coeffs @ dirs_t).reshape(b, 3, -1)
  return offsets + jnp.broadcast_to(template, offsets.shape)


def _skin_chunk(a_rows, transl, weights, posed):
  """(B, 12, J) joint transforms, (B, 3) transl, posed (B, 3, V) -> (B, V, 3)."""
  b, nv = posed.shape[0], posed.shape[-1]
  # One 2D matmul, rows (sample, 3x4 entry): its transpose is a 2D matmul too.
  blended = (a_rows.reshape(b * 12, -1) @ weights.T).reshape(b, 3, 4, nv)
  out = (blended[:, :, 0] * posed[:, None, 0] + blended[:, :, 1] * posed[:, None, 1]
         + blended[:, :, 2] * posed[:, None, 2] + blended[:, :, 3])
  out = out + jnp.broadcast_to(transl[:, :, None], out.shape)
  return jnp.swapaxes(out, 1, 2)


def _forward_chunk(coeffs, a_rows, transl, dirs_t, template, weights):
  posed = _posed(coeffs, dirs_t, template)
  return _skin_chunk(a_rows, transl, weights, posed), posed


def _backward_chunk(coeffs, a_rows, posed, dverts, dirs_t, weights):
  """Cotangents of one chunk: per-sample ones (coeffs' transposed, (K, B))
  and the chunk's share of the model arrays' (summed over the chunk)."""
  b, nv, nj = posed.shape[0], posed.shape[-1], a_rows.shape[-1]
  dv = jnp.swapaxes(dverts, 1, 2)                                    # (B, 3, V)
  # d posed[a] = sum_c Rbar[c, a] dv[c], Rbar the blended rotation (9 of the
  # 12 rows: the translation column does not touch p).
  rot_rows = a_rows.reshape(b, 3, 4, nj)[:, :, :3].reshape(b * 9, nj)
  rbar = (rot_rows @ weights.T).reshape(b, 3, 3, nv)
  dposed = (rbar[:, 0] * dv[:, 0, None] + rbar[:, 1] * dv[:, 1, None]
            + rbar[:, 2] * dv[:, 2, None])
  dposed_flat = dposed.reshape(b, 3 * nv)
  # (K, 3V) @ (3V, B), kept (K, B): on XLA:CPU 1.3x faster than (B, 3V) @
  # (3V, K), and than transposing back here (XLA folds that into the dot).
  dcoeffs_t = dirs_t @ dposed_flat.T
  ones = jnp.ones((b, 1, nv), posed.dtype)
  posed_h = jnp.concatenate([posed, ones], 1)                        # (B, 4, V)
  outer = (dv[:, :, None, :] * posed_h[:, None, :, :]).reshape(b * 12, nv)
  da = (outer @ weights).reshape(b, 12, nj)
  dtransl = jnp.sum(dv, -1)
  ddirs_t = coeffs.T @ dposed_flat                                   # (K, 3V)
  dtemplate = jnp.sum(dposed, 0)                                     # (3, V)
  dweights = outer.T @ a_rows.reshape(b * 12, nj)                    # (V, J)
  return (dcoeffs_t, da, dtransl), (ddirs_t, dtemplate, dweights)


def _pad(x, n):
  if x.shape[0] == n:
    return x
  return jnp.pad(x, [(0, n - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def _split(x, k, size):
  return _pad(x, k * size).reshape((k, size) + x.shape[1:])


def _merge(y, n):
  y = y.reshape((-1,) + y.shape[2:])
  return y if y.shape[0] == n else y[:n]


def _run_forward(coeffs, a_rows, transl, dirs_t, template, weights):
  """Chunked forward: vertices (N, V, 3) and posed (k, B, 3, V)."""
  n = coeffs.shape[0]
  k, size = _chunking(n, coeffs.dtype)
  chunk = functools.partial(_forward_chunk, dirs_t=dirs_t, template=template, weights=weights)
  if k == 1:
    verts, posed = chunk(coeffs, a_rows, transl)
    return verts, posed[None]
  xs = tuple(_split(x, k, size) for x in (coeffs, a_rows, transl))
  verts, posed = jax.lax.map(lambda x: chunk(*x), xs)
  return _merge(verts, n), posed


@jax.custom_vjp
def blend_and_skin(coeffs, a_rows, transl, dirs_t, template, weights):
  """MANO's shape + pose blend shapes and linear blend skinning.

  coeffs (N, K): blend coefficients ([betas, pose features]); a_rows
  (N, 12, J): joint k's skinning transform, row-major 3x4 entries;
  transl (N, 3); dirs_t (K, 3 V) blend shapes, columns ordered (xyz,
  vertex); template (3, V); weights (V, J). Returns vertices (N, V, 3).
  """
  return _run_forward(coeffs, a_rows, transl, dirs_t, template, weights)[0]


def _fwd(coeffs, a_rows, transl, dirs_t, template, weights):
  verts, posed = _run_forward(coeffs, a_rows, transl, dirs_t, template, weights)
  return verts, (coeffs, a_rows, posed, dirs_t, template, weights)


def _bwd(res, dverts):
  coeffs, a_rows, posed, dirs_t, template, weights = res
  n = coeffs.shape[0]
  k, size = posed.shape[:2]
  chunk = functools.partial(_backward_chunk, dirs_t=dirs_t, weights=weights)
  if k == 1:
    (dcoeffs_t, da, dtransl), model = chunk(coeffs, a_rows, posed[0], dverts)
    dcoeffs = dcoeffs_t.T
  else:
    def step(acc, x):
      per_sample, model = chunk(*x)
      return jax.tree_util.tree_map(jnp.add, acc, model), per_sample
    zeros = (jnp.zeros_like(dirs_t), jnp.zeros_like(template), jnp.zeros_like(weights))
    xs = (_split(coeffs, k, size), _split(a_rows, k, size), posed, _split(dverts, k, size))
    model, (dcoeffs_t, da, dtransl) = jax.lax.scan(step, zeros, xs)
    dcoeffs = _merge(jnp.swapaxes(dcoeffs_t, 1, 2), n)
    da, dtransl = _merge(da, n), _merge(dtransl, n)
  return (dcoeffs, da, dtransl) + tuple(model)


blend_and_skin.defvjp(_fwd, _bwd)
