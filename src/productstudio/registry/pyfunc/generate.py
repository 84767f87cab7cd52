"""The ``generate`` task as an MLflow pyfunc, logged as "models from code" (this file, no pickle).

MLflow copies this file into the model; ``load_context`` loads the safetensors generator directory
(artifact ``generator``) with the library's own loader, and ``predict`` turns rows of
``category`` (int) and ``seed`` (int) into uint8 images (N, C, H, W): row i uses the latent
``torch.randn(latent_dim)`` drawn from ``torch.Generator().manual_seed(seed_i)``, so a (category, seed)
pair always gives the same image. ``params={"variant": "int8"}`` uses the int8 artifact when the
version has one.
"""

import warnings

import mlflow
from mlflow.pyfunc import PythonModel

from productstudio.errors import BadRequest

# The signature (category, seed -> images) is given explicitly when logging; type hints are not needed.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")


class GenerateModel(PythonModel):
    def load_context(self, context):
        from productstudio.models.loader import load

        self.generator, self.info = load(context.artifacts["generator"])
        self.int8_dir = context.artifacts.get("int8")
        self.int8 = None

    def predict(self, context, model_input, params=None):
        import numpy as np
        import torch

        from productstudio.imaging import to_uint8_array
        from productstudio.models.loader import load
        from productstudio.models.sampling import latents_from_seeds

        variant = (params or {}).get("variant", "fp32")
        model = self.generator
        if variant == "int8":
            if not self.int8_dir:
                raise BadRequest("this model version has no int8 variant")
            if self.int8 is None:
                self.int8 = load(self.int8_dir)[0]
            model = self.int8
        elif variant != "fp32":
            raise BadRequest(f"unknown variant {variant!r}: fp32 or int8")
        categories = np.array(model_input["category"], dtype=np.int64)  # a writable copy for torch
        seeds = np.asarray(model_input["seed"], dtype=np.int64)
        config = self.generator.config
        if ((categories < 0) | (categories >= config.num_classes)).any():
            raise BadRequest(f"category must be in 0..{config.num_classes - 1}")
        z = latents_from_seeds(seeds, config.latent_dim)
        with torch.inference_mode():
            images = model(z, torch.from_numpy(categories))
        return to_uint8_array(images)


mlflow.models.set_model(GenerateModel())
