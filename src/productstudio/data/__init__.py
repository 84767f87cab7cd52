"""Data sources, the raw dataset, preprocessing and the tensor store."""
