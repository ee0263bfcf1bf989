"""A2P stage 1 with the paper's settings on InterHand2.6M.

    python train.py --config a2p_jax/configs/a2p_interhand26m.py --workdir /ckpt/a2p \
        --config.data.root=/data/InterHand2.6M --config.data.mano_dir=/data/mano \
        --config.data.priors=/data/priors/sapiens_train

256x256 crops, ResNet-50 image encoder and ResNet-50 FAE, AdamW lr 1e-4
divided by 10 at epoch 4, global batch 48. `get_config('cpu')`: the same
model at batch 2 for trying it on a laptop.
"""

from a2p_jax.configs import common


def get_config(arg=None):
  c = common.base()
  if arg == 'cpu':
    c.batch_size = 2
    c.data.num_workers = 0
    c.log_every = 1
  elif arg:
    raise ValueError(f'unknown config arg {arg!r} (expected none or "cpu")')
  return c.lock()  # setting a field that does not exist (a typo) raises
