"""Stage 2 as one jitted function on stage-1 outputs:

    repair = make_repair(graphdef, model_state, stats, (right, left), config)
    params2, info = repair(params, boxes, key)

params: {'pose_6d' (B, 2, 16, 6), 'betas' (B, 2, 10), 'root_cam' (B, 2, 3)}
(stage 1's convention; other keys are ignored); boxes (B, 2, 4) the hands'
2D boxes (x_min, y_min, x_max, y_max) px, right then left. A pair is
repaired only when its boxes overlap (IoU > 0) and its meshes penetrate;
the others come back unchanged, inside the compiled function: the gated
pairs are gathered into chunks of config.gate.chunk and a while loop
samples ceil(num_gated / chunk) chunks (none for a clean batch), so the
cost follows the number of penetrating pairs. The gate's detector is cheap
and fires on some touching hands; with config.gate.verify (default on) a
gated pair keeps its repair only when the exact test (a vertex more than
gate.min_depth_mm inside the other sealed mesh) agrees, so a false positive
costs time, never accuracy: it comes back exactly as it went in. Verify
also keeps a repair only when it lowers the interpenetration volume
(gate.verify_by 'volume', PenVol's number; 'depth': the deepest vertex,
cheaper): a weak model's "repair" can make things worse, and such a pair
comes back unchanged too. info:
{'gated', 'iou', 'penetrating', 'repaired'} (B,) bool.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from a2p_jax import geometry
from a2p_jax.geometry.camera import project
from a2p_jax.diffusion import guidance as guidance_lib
from a2p_jax.diffusion import sampler as sampler_lib
from a2p_jax.diffusion import schedule as schedule_lib
from a2p_jax.diffusion import state as state_lib

KEYS = ('pose_6d', 'betas', 'root_cam')
DIRECTIONS = ('sample', 'mean', 'least')


def sampling_arrays(config):
  """(alpha_bar (T,), timesteps (S,), lambdas (S,)) from config.diffusion/sampling."""
  s = config.sampling
  alpha_bar = schedule_lib.cosine_alpha_bar(config.diffusion.num_steps)
  start = int(round(s.get('start_frac', 1.0) * (config.diffusion.num_steps - 1)))
  ts = schedule_lib.ddim_timesteps(config.diffusion.num_steps, s.num_steps, start)
  lam = sampler_lib.lambda_schedule(ts, config.diffusion.num_steps, scale=s.guidance_scale,
                                    power=s.guidance_power, start_frac=s.guidance_start)
  return alpha_bar, ts, lam


def make_sample_fn(graphdef, config, models):
  """Un-jitted (model_state, stats, params, key) -> repaired params for
  every pair (the diffusion + guidance, no gating). config.sampling.direction
  'sample' (default): the guided DDIM sample; 'mean': the denoiser's
  posterior mean (`posterior_mean`, num_samples noise draws; no guidance),
  meant with the pull-back (pullback_max > 1: moved on along that line
  until the hands stop penetrating); 'least': no denoiser, the least
  translation of the left hand that ends the penetration (`least_exit`)."""
  alpha_bar, ts, lam = sampling_arrays(config)
  s = config.sampling
  keep = state_lib.part_mask(s.get('keep', ''))
  keep = keep if keep.any() else None
  pullback_steps = int(s.get('pullback_steps', 0))
  pullback_max = float(s.get('pullback_max', 1.0))
  direction = s.get('direction', 'sample')
  if direction not in DIRECTIONS:
    raise ValueError(f'config.sampling.direction must be one of {DIRECTIONS}, got {direction!r}')
  num_samples = int(s.get('num_samples', 1))
  if num_samples < 1:
    raise ValueError(f'config.sampling.num_samples must be >= 1, got {num_samples}')
  if pullback_max < 1.0:
    raise ValueError(f'config.sampling.pullback_max must be >= 1, got {pullback_max}')
  min_depth = float(config.gate.get('min_depth_mm', 0.0)) / 1000.0
  exit_cfg = {name: s.get(name, default) for name, default in
              (('exit_directions', 64), ('exit_scan', 12), ('exit_steps', 8),
               ('exit_max_mm', 150.0))}
  for name, v in exit_cfg.items():
    if v <= 0:
      raise ValueError(f'config.sampling.{name} must be > 0, got {v}')
  exit_args = dict(num_dirs=int(exit_cfg['exit_directions']), scan=int(exit_cfg['exit_scan']),
                   steps=int(exit_cfg['exit_steps']),
                   max_dist=float(exit_cfg['exit_max_mm']) / 1000.0)

  def guided(model, x_c, stats, root_right, key):
    grad_fn = guidance_lib.make_guide_grad(stats, models, root_right, config.collision)
    use_guidance = s.guidance_scale > 0 or (s.final_steps and s.final_scale > 0)
    x_init = None
    if ts[0] < config.diffusion.num_steps - 1:  # start from the noised condition
      key, k0 = jax.random.split(key)
      x_init = schedule_lib.q_sample(x_c, jnp.full(x_c.shape[:1], ts[0], jnp.int32),
                                     jax.random.normal(k0, x_c.shape, x_c.dtype), alpha_bar)
    return sampler_lib.ddim_sample(lambda x, t, c: model(x, t, c), x_c, key,
                                   alpha_bar=alpha_bar, timesteps=ts, eta=s.eta,
                                   guide_grad=grad_fn if use_guidance else None, lambdas=lam,
                                   max_step=s.guidance_max_step,
                                   refine_steps=int(s.final_steps) if use_guidance else 0,
                                   refine_lambda=s.final_scale, x_init=x_init, keep=keep)

  def sample(model_state, stats, params, key):
    if direction == 'least':
      return least_exit(params, models, config.collision, min_depth, **exit_args)
    model = nnx.merge(graphdef, model_state)
    model.eval()
    root_right = params['root_cam'][:, 0]
    x_c = state_lib.normalize(state_lib.to_state(params), stats)
    if direction == 'mean':
      z = posterior_mean(lambda x, t, c: model(x, t, c), x_c, key,
                         num_steps=config.diffusion.num_steps, num_samples=num_samples,
                         keep=keep)
    else:
      z = guided(model, x_c, stats, root_right, key)
    out = state_lib.from_state(state_lib.denormalize(z, stats), root_right)
    if pullback_steps:
      out = pull_back(params, out, models, config.collision, min_depth, pullback_steps,
                      pullback_max)
    return out

  return sample


def posterior_mean(denoise_fn, x_c, key, *, num_steps: int, num_samples: int = 1, keep=None):
  """E[X_0 | X_c] (B, D) normalized, the denoiser's x0 estimate from pure
  noise at the last timestep (x_t then says nothing about X_0: an
  x0-prediction trained with squared error answers with the mean of the
  ground truths it saw for this condition), averaged over `num_samples`
  noise draws; `keep` (D,) bool dimensions taken from x_c."""
  b = x_c.shape[0]
  t = jnp.full((b,), num_steps - 1, jnp.int32)
  z = sum(denoise_fn(jax.random.normal(k, x_c.shape, x_c.dtype), t, x_c)
          for k in jax.random.split(key, num_samples)) / num_samples
  return z if keep is None else jnp.where(keep, x_c, z)


def pull_back(before, after, models, collision_cfg, min_depth: float, steps: int,
              max_frac: float = 1.0):
  """The least displacement along the repair: the state moved from
  `before` toward `after` only as far as needed to stop penetrating,
  X = X_c + a (X_r - X_c) with a in [0, max_frac] the smallest (bisection,
  `steps` exact depth tests) whose hands penetrate no deeper than
  min_depth (m). Hands that touched keep touching instead of ending a
  centimetre apart; a repair that still penetrates at a = max_frac is
  kept there. max_frac > 1 goes on past `after` along the same line (for
  a direction that stops short, sampling.direction 'mean')."""
  root_right = before['root_cam'][:, 0]
  x_c, x_r = state_lib.to_state(before), state_lib.to_state(after)
  b = x_c.shape[0]

  def at(a):
    return state_lib.from_state(x_c + a[:, None] * (x_r - x_c), root_right)

  hi = _bisect(lambda a: guidance_lib.penetrating(at(a), models, collision_cfg, 'depth',
                                                  min_depth),
               jnp.zeros((b,)), jnp.full((b,), max_frac), steps)
  return at(hi)


def _bisect(penetrates, lo, hi, steps: int):
  """(B,) the end `hi` of [lo, hi] after `steps` halvings that keep
  penetrates(lo) true and penetrates(hi) false (per pair): the least clear
  value along a path, assuming one crossing inside [lo, hi]."""
  def body(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    bad = penetrates(mid)
    return jnp.where(bad, mid, lo), jnp.where(bad, hi, mid)

  return jax.lax.fori_loop(0, steps, body, (lo, hi))[1]


def sphere_directions(n: int):
  """(n, 3) unit vectors spread evenly over the sphere (the golden-angle
  spiral: equal-area latitude bands, one point each)."""
  i = jnp.arange(n, dtype=jnp.float32) + 0.5
  z = 1.0 - 2.0 * i / n
  phi = i * jnp.pi * (3.0 - jnp.sqrt(5.0))
  r = jnp.sqrt(1.0 - z * z)
  return jnp.stack([r * jnp.cos(phi), r * jnp.sin(phi), z], -1)


def least_exit(params, models, collision_cfg, min_depth: float, *, num_dirs: int, scan: int,
               steps: int, max_dist: float):
  """The least translation of the left hand (camera space; articulation,
  shape and the right hand untouched) after which the hands penetrate no
  deeper than min_depth (m). Along each of `num_dirs` directions
  (`sphere_directions`): the first of `scan` evenly spaced distances in
  (0, max_dist] m where the hands are clear, refined by bisection (`steps`
  exact depth tests) between it and the scan point before; then the
  nearest of the directions. (A scan, not bisection over the whole range:
  the clear set along a line is not an interval when fingers interlace.)
  Under an error of the stage-1 placement that is alike in every
  direction, the nearest non-penetrating placement is the most likely one.
  A pair with no clear placement within max_dist comes back unchanged."""
  u = sphere_directions(num_dirs)
  b = params['root_cam'].shape[0]
  step = max_dist / scan

  def bad(dist, k):
    moved = dict(params, root_cam=params['root_cam'].at[:, 1].add(dist[:, None] * u[k][None]))
    return guidance_lib.penetrating(moved, models, collision_cfg, 'depth', min_depth)

  def one(k):
    def look(i, first):   # first clear scan index (scan: none yet)
      clear = ~bad(jnp.full((b,), (i + 1) * step), k)
      return jnp.where((first == scan) & clear, i, first)
    first = jax.lax.fori_loop(0, scan, look, jnp.full((b,), scan, jnp.int32))
    hi = _bisect(lambda dist: bad(dist, k), first * step, (first + 1) * step, steps)
    return jnp.where(first < scan, hi, jnp.inf)

  dist = jax.lax.map(one, jnp.arange(num_dirs))   # (num_dirs, B)
  k = jnp.argmin(dist, 0)
  best = jnp.take_along_axis(dist, k[None], 0)[0]
  shift = jnp.where(jnp.isfinite(best), best, 0.0)[:, None] * u[k]
  return dict(params, root_cam=params['root_cam'].at[:, 1].add(shift))


def make_repair(graphdef, model_state, stats, models, config):
  """The jitted gated repair `fn(params, boxes, key) -> (params, info)` (see
  the module docstring). model_state: the denoiser's nnx.State; stats:
  {'mean', 'std'} (DIM,); models: (right, left) ManoModel; config: the
  stage-2 config (diffusion, sampling, collision, gate)."""
  sample = make_sample_fn(graphdef, config, models)
  stats = {k: jnp.asarray(v, jnp.float32) for k, v in stats.items()}
  detector = config.gate.detector
  use_boxes = config.gate.box_overlap
  chunk = int(config.gate.get('chunk', 0))
  min_depth = float(config.gate.get('min_depth_mm', 0.0)) / 1000.0
  verify = bool(config.gate.get('verify', True)) and detector != 'depth'
  verify_by = config.gate.get('verify_by', 'volume')
  if verify_by not in ('volume', 'depth'):
    raise ValueError(f"config.gate.verify_by must be 'volume' or 'depth', got {verify_by!r}")

  def accept(before, after):
    if not verify:
      return jnp.ones(before['root_cam'].shape[:1], bool)
    fr, fl = state_lib.faces(models)
    (br, bl), (ar, al) = state_lib.meshes(before, models), state_lib.meshes(after, models)
    d_in = geometry.penetration_depth(br, fr, bl, fl)
    if verify_by == 'volume':
      better = geometry.penetration_volume(ar, fr, al, fl) < geometry.penetration_volume(
          br, fr, bl, fl)
    else:
      better = geometry.penetration_depth(ar, fr, al, fl) < d_in
    return (d_in > min_depth) & better

  @jax.jit
  def repair(model_state, stats, params, boxes, key):
    params = {k: jnp.asarray(params[k], jnp.float32) for k in KEYS}
    b = params['pose_6d'].shape[0]
    iou = geometry.box_iou(boxes[:, 0], boxes[:, 1])
    pen = guidance_lib.penetrating(params, models, config.collision, detector, min_depth)
    gate = pen & (iou > 0) if use_boxes else pen
    cap = b if not chunk or chunk >= b else int(chunk)
    out, done = _gated_chunks(lambda p, k: sample(model_state, stats, p, k), params, gate, key,
                              cap, accept)
    return out, {'gated': gate, 'iou': iou, 'penetrating': pen, 'repaired': done}

  def fn(params, boxes, key):
    return repair(model_state, stats, params, jnp.asarray(boxes, jnp.float32), key)

  fn.jitted = repair
  return fn


def _gated_chunks(sample, params, gate, key, cap: int, accept=None):
  """Runs `sample` only on the gated pairs, `cap` at a time: the gated
  indices are gathered into fixed-size chunks and a while loop runs
  ceil(num_gated / cap) of them (0 when nothing is gated), so the cost
  follows the number of penetrating pairs, not the batch size; ungated pairs
  keep their input values exactly. accept(chunk params, their repair) ->
  (cap,) bool: a gated pair it rejects keeps its input values exactly too.
  Returns (params, repaired (B,) bool)."""
  b = gate.shape[0]
  n_chunks = -(-b // cap)
  order = jnp.argsort(~gate, stable=True).astype(jnp.int32)  # gated first
  order = jnp.concatenate([order, jnp.full((n_chunks * cap - b,), b, jnp.int32)])
  n_gated = jnp.sum(gate.astype(jnp.int32))

  def body(i, carry):
    out, done = carry
    pos = i * cap + jnp.arange(cap, dtype=jnp.int32)
    idx = jax.lax.dynamic_slice(order, (i * cap,), (cap,))
    valid = pos < n_gated
    take = jnp.where(valid, idx, 0)
    sub = jax.tree.map(lambda v: v[take], params)
    rep = sample(sub, jax.random.fold_in(key, i))
    ok = valid
    if accept is not None:
      # Under a cond (true whenever the loop runs): else XLA hoists the exact
      # test's constant set-up out of the loop, paid on clean batches too.
      ok = valid & jax.lax.cond(jnp.any(valid), accept, lambda p, r: jnp.zeros((cap,), bool),
                                sub, rep)
    put = jnp.where(ok, idx, b)  # padding and rejected pairs: dropped, they keep their input
    out = jax.tree.map(lambda o, r: o.at[put].set(r, mode='drop'), out, rep)
    return out, done.at[put].set(True, mode='drop')

  return jax.lax.fori_loop(0, (n_gated + cap - 1) // cap, body,
                           (params, jnp.zeros((b,), bool)))


def boxes_from_params(params, models, focal, princpt):
  """Each hand's 2D box (B, 2, 4) px from its projected mesh (for callers
  without detector boxes)."""
  vr, vl = state_lib.meshes({k: jnp.asarray(params[k]) for k in KEYS}, models)
  focal, princpt = jnp.asarray(focal)[:, None], jnp.asarray(princpt)[:, None]
  return jnp.stack([geometry.box_from_points(project(v, focal, princpt)) for v in (vr, vl)], 1)
