"""MLflow tracking helpers (and, later, the model registry and promotion policy)."""
