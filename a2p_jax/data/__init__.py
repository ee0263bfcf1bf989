"""Data: InterHand2.6M and HIC readers behind `open_source`, the synthetic
two-hand data set, TFDS builders and the grain input pipeline. Files in mm
where the data sets are; metres inside the code unless a name says otherwise."""

from a2p_jax.data.sources import open_source
