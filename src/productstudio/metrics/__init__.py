"""Evaluation metrics: Inception features, FID, KID, PSNR/SSIM, and one engine of named metrics (``engine``)."""
