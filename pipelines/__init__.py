"""Kubeflow pipelines over the components in ``components/``; see ``pipelines/product_studio.py``."""
