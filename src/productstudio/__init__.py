"""Product Studio: an MLOps pipeline for e-commerce product images."""

__version__ = "0.1.0"
