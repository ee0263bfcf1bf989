"""A small stage-2 diffusion model on the synthetic set (procedural hand,
NOT MANO): the demo uses it. On a shared 2-core CPU: data ~5 min on first
use (400 frames, 2000 perturbed pairs), training 3000 steps ~8 min; held-out
PenVol 26x lower (benchmarks/diffusion_repair.py). Longer training overfits
the 2000 pairs (10000 steps: held-out joint error worse than the input).

    python train.py --config a2p_jax/configs/diffusion_tiny.py --workdir /tmp/a2p_diffusion

The synthetic set and the perturbed-ground-truth pairs are generated into
WORKDIR/data on first use. `get_config('test')`: a few steps, for tests.
"""

from a2p_jax.configs import a2p_diffusion


def get_config(arg=None):
  c = a2p_diffusion.base()
  c.batch_size = 64
  c.num_train_steps = 3000
  c.log_every = 100
  c.checkpoint_every = 1000
  c.data.dataset = 'synthetic'
  c.data.synthetic_frames = 400
  c.data.num_pairs = 2000
  c.data.stage1_fraction = 0.0     # perturbed pairs only: needs no stage-1 run (the demo and
                                   #   experiments/stage2_on_predictions.py add pairs (ii))
  c.model.latent_dim = 128
  c.model.num_layers = 3
  c.model.num_heads = 4
  c.model.ff_dim = 256
  c.model.dropout = 0.0
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.sampling.num_steps = 8
  c.sampling.start_frac = 0.5      # start from X_c noised to t = T/2
  # The small denoiser's articulation is worse than its input's (wrist-aligned
  # MPJPE 4.09 -> 5.79 mm on held-out pairs); keeping hand shapes and
  # rotations from X_c (the diffusion places the left hand, guidance moves
  # everything) keeps it (4.09 mm) at 14x lower PenVol (benchmarks/results.md).
  c.sampling.keep = 'betas,fingers,roots'
  if arg == 'test':
    c.batch_size = 8
    c.num_train_steps = 6
    c.log_every = 2
    c.checkpoint_every = 3
    c.progress = False
    c.async_checkpoints = False
    c.data.synthetic_frames = 12
    c.data.synthetic_image_size = (32, 32)
    c.data.num_pairs = 32
    c.model.latent_dim = 32
    c.model.num_layers = 1
    c.model.ff_dim = 64
    c.sampling.num_steps = 4
    c.sampling.pullback_steps = 0
  elif arg:
    raise ValueError(f'unknown config arg {arg!r} (expected none or "test")')
  return c.lock()  # setting a field that does not exist (a typo) raises
