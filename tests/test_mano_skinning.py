"""mano_jax.skinning.blend_and_skin (chunked, hand-written VJP) against a
plain einsum formulation differentiated by JAX, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import mano_jax
from mano_jax import skinning


def _plain(coeffs, a_rows, transl, dirs_t, template, weights):
  """The same function written independently, differentiated by autodiff."""
  n, nv = coeffs.shape[0], weights.shape[0]
  posed = jnp.einsum('nk,kr->nr', coeffs, dirs_t).reshape(n, 3, nv)
  posed = posed + jnp.broadcast_to(template, posed.shape)
  a = a_rows.reshape(n, 3, 4, -1)
  blended = jnp.einsum('ncaj,vj->ncav', a, weights)
  out = jnp.einsum('ncav,nav->nvc', blended[:, :, :3], posed)
  return out + jnp.einsum('ncv->nvc', blended[:, :, 3]) + transl[:, None, :]


def _inputs(n, rng, nv=40, nj=5, k=7):
  weights = rng.random((nv, nj))
  return (rng.normal(size=(n, k)), rng.normal(size=(n, 12, nj)), rng.normal(size=(n, 3)),
          rng.normal(size=(k, 3 * nv)), rng.normal(size=(3, nv)),
          weights / weights.sum(1, keepdims=True))


# 1: one chunk; 64 / 130: chunks of 32 in float64, with 130 padded to 5 x 26.
@pytest.mark.parametrize('n', [1, 64, 130])
def test_values_and_all_gradients_match_autodiff(n):
  rng = np.random.default_rng(n)
  with jax.enable_x64(True):
    args = tuple(jnp.asarray(x) for x in _inputs(n, rng))
    cot = jnp.asarray(rng.normal(size=(n, 40, 3)))
    want, want_vjp = jax.vjp(_plain, *args)
    got, got_vjp = jax.vjp(skinning.blend_and_skin, *args)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    # Cotangents of every input, the model arrays' included (summed over chunks).
    for name, g, w in zip(('coeffs', 'a_rows', 'transl', 'dirs_t', 'template', 'weights'),
                          got_vjp(cot), want_vjp(cot)):
      scale = max(1.0, float(jnp.max(jnp.abs(w))))
      np.testing.assert_allclose(g, w, rtol=0, atol=1e-9 * scale, err_msg=name)


def test_check_grads_and_vmap():
  rng = np.random.default_rng(0)
  with jax.enable_x64(True):
    args = tuple(jnp.asarray(x) for x in _inputs(70, rng, nv=12, nj=3, k=4))
    check_grads(skinning.blend_and_skin, args, order=1, modes=('rev',), atol=1e-7, rtol=1e-7)
    # vmap over an extra leading axis = the function on each slice.
    stacked = tuple(jnp.stack([x, 2.0 * x]) for x in args[:3]) + args[3:]
    got = jax.vmap(skinning.blend_and_skin, in_axes=(0, 0, 0, None, None, None))(*stacked)
    np.testing.assert_allclose(got[1], _plain(*(tuple(2.0 * x for x in args[:3]) + args[3:])),
                               atol=1e-9)


def test_forward_gradients_match_plain_autodiff_across_chunks():
  """mano_jax.forward's pose/betas/transl gradients at a batch that spans
  several (padded) chunks equal those of the unchunked staged path
  (shape_stage -> kinematics -> skin), which JAX differentiates itself."""
  model = mano_jax.load_procedural('right')
  rng = np.random.default_rng(3)
  n = 75
  pose, betas, transl = rng.normal(0, 0.5, (n, 48)), rng.normal(0, 1, (n, 10)), \
      rng.normal(0, 0.1, (n, 3))
  w = rng.normal(size=(n, model.num_vertices, 3))

  def via_forward(pose, betas, transl):
    return jnp.sum(mano_jax.forward(model, pose, betas, transl).vertices * w)

  def via_stages(pose, betas, transl):
    v_rest, j_rest = mano_jax.shape_stage(model, betas)
    rot = mano_jax.pose_rotations(model, pose)
    g_rot, g_pos = mano_jax.kinematics(model.parents, rot, j_rest)
    verts = mano_jax.skin(model, v_rest, rot, g_rot, g_pos, j_rest) + transl[:, None, :]
    return jnp.sum(verts * w)

  with jax.enable_x64(True):
    got = jax.jit(jax.value_and_grad(via_forward, (0, 1, 2)))(pose, betas, transl)
    want = jax.jit(jax.value_and_grad(via_stages, (0, 1, 2)))(pose, betas, transl)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
  for name, g, e in zip(('pose', 'betas', 'transl'), got[1], want[1]):
    np.testing.assert_allclose(g, e, rtol=0, atol=1e-9 * max(1.0, np.abs(e).max()),
                               err_msg=name)


def test_chain_kinematics_equals_the_general_tree_version():
  """MANO's tree (five 3-joint chains off the wrist) takes a gather-free
  path; it equals the any-tree version, values and gradients (float64)."""
  from mano_jax import lbs
  model = mano_jax.load_procedural('right')
  parents = tuple(model.parents)
  assert lbs._chains(parents) == (5, 3)
  assert lbs._chains((-1, 0, 1, 0, 0)) is None
  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    rot = mano_jax.axis_angle_to_matrix(jnp.asarray(rng.normal(0, 0.7, (2, 4, 16, 3))))
    j_rest = jnp.asarray(rng.normal(0, 0.05, (2, 4, 16, 3)))
    w = jnp.asarray(rng.normal(size=(2, 4, 16, 3)))

    def loss(fn, rot, j_rest):
      g_rot, g_pos = fn(rot, j_rest)
      return jnp.sum(g_pos * w) + jnp.sum(g_rot[..., 0, :] * w)

    fast = lambda r, j: lbs.kinematics(parents, r, j)
    tree = lambda r, j: lbs._kinematics_levels(parents, r, j)
    for a, b in zip(fast(rot, j_rest), tree(rot, j_rest)):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    ga = jax.grad(lambda r, j: loss(fast, r, j), (0, 1))(rot, j_rest)
    gb = jax.grad(lambda r, j: loss(tree, r, j), (0, 1))(rot, j_rest)
    for a, b in zip(ga, gb):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_rodrigues_equals_rotations_module_with_gradients():
  """lbs' elementwise Rodrigues = rotations.axis_angle_to_matrix, values and
  gradients, including exactly zero and the small-angle series (float64)."""
  from mano_jax import lbs, rotations
  rng = np.random.default_rng(9)
  with jax.enable_x64(True):
    aa = jnp.asarray(rng.normal(0, 1.0, (40, 3)))
    aa = aa.at[0].set(0.0).at[1].set(jnp.array([1e-4, 0.0, 0.0])).at[2].set(1e-3)
    w = jnp.asarray(rng.normal(size=(40, 3, 3)))
    np.testing.assert_allclose(lbs._axis_angle_to_matrix(aa),
                               rotations.axis_angle_to_matrix(aa), rtol=0, atol=1e-14)
    ga = jax.grad(lambda x: jnp.sum(lbs._axis_angle_to_matrix(x) * w))(aa)
    gb = jax.grad(lambda x: jnp.sum(rotations.axis_angle_to_matrix(x) * w))(aa)
    assert np.all(np.isfinite(ga))
    np.testing.assert_allclose(ga, gb, rtol=0, atol=1e-13)


def test_forward_mode_through_the_staged_functions():
  """forward() has a hand-written VJP, so jax.jvp through it raises; the
  staged functions (the documented route for forward mode) give the same
  vertices and a jvp that matches reverse mode."""
  model = mano_jax.load_procedural('right').astype(jnp.float32)
  pose = jnp.asarray(np.random.default_rng(2).normal(0, 0.4, (2, 48)), jnp.float32)

  def staged(pose):
    v_rest, j_rest = mano_jax.shape_stage(model, jnp.zeros((2, 10)))
    rot = mano_jax.pose_rotations(model, pose)
    g_rot, g_pos = mano_jax.kinematics(model.parents, rot, j_rest)
    return mano_jax.skin(model, v_rest, rot, g_rot, g_pos, j_rest)

  np.testing.assert_allclose(staged(pose), mano_jax.forward(model, pose).vertices, atol=1e-5)
  with pytest.raises(TypeError, match='forward-mode'):
    jax.jvp(lambda p: mano_jax.forward(model, p).vertices, (pose,), (pose,))
  tangent = jax.jvp(staged, (pose,), (pose,))[1]
  _, vjp = jax.vjp(lambda p: mano_jax.forward(model, p).vertices, pose)
  w = jnp.ones_like(tangent)
  np.testing.assert_allclose(jnp.sum(tangent * w), jnp.sum(vjp(w)[0] * pose), rtol=1e-4)


def _dot_shapes(fn, *args):
  """Output shapes of the dots in fn's compiled program (loop bodies included)."""
  import re
  txt = jax.jit(fn).lower(*args).compile().as_text()
  return {tuple(int(d) for d in s.split(',')) for s in
          re.findall(r'= f32\[([0-9,]+)\]\{[^}]*\} dot\(', txt)}


def test_pose_gradients_compile_without_model_cotangents():
  """The custom VJP returns cotangents for the model arrays too (dirs, template,
  weights; summed over chunks in the scan carry). Differentiating w.r.t. pose
  and betas only, XLA drops them, scan carry included, so their matmuls (as
  costly as the forward's) are not run and no symbolic-zero path is needed.
  Guarded here: the dots of shape (K, 3 V) and (V, J) appear only when the
  model arrays are differentiated as well."""
  import dataclasses
  model = mano_jax.load_procedural('right').astype(jnp.float32)
  n, nv, nj = 130, model.num_vertices, model.num_joints
  rng = np.random.default_rng(4)
  pose = jnp.asarray(rng.normal(0, 0.5, (n, 48)), jnp.float32)
  betas = jnp.asarray(rng.normal(0, 1, (n, 10)), jnp.float32)
  target = jnp.asarray(rng.normal(0, 0.1, (n, nv, 3)), jnp.float32)

  def loss(posedirs_cf, weights, pose, betas, target):
    m = dataclasses.replace(model, posedirs_cf=posedirs_cf, weights=weights)
    return jnp.sum((mano_jax.forward(m, pose, betas).vertices - target) ** 2)

  args = (model.posedirs_cf, model.weights, pose, betas, target)
  k = 10 + 9 * (nj - 1)
  model_cot = {(k, 3 * nv), (3 * nv, k), (nv, nj), (nj, nv)}
  assert not model_cot & _dot_shapes(jax.grad(loss, (2, 3)), *args)
  assert model_cot & _dot_shapes(jax.grad(loss, (0, 1, 2, 3)), *args)
