"""Training: the GAN/CVAE loop with checkpoints and resume, augmentation, the product classifier, the KID curve."""
