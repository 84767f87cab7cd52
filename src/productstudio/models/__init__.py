"""Models: the GAN, the CVAE baseline, the product classifier; their on-disk form (``io``) and ``loader``."""
