"""Optional magnitude pruning before quantization (``torch.nn.utils.prune``, then made permanent).

- ``l1_unstructured``: the ``amount`` share of each layer's weights with the smallest magnitude set to 0.
- ``ln_structured``: the ``amount`` share of each layer's output channels (rows of a linear layer) with
  the smallest L2 norm set to 0.

Applied to every Conv2d and Linear weight of a copy of the generator, except the last layer that makes
the image (a few channels only). The zeros stay dense in the ONNX graph: ORT's int8 kernels are not
faster for them, so pruning is about size after compression and a quality trade to measure, not speed;
the report says how many weights are zero.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils import prune


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return layers[:-1] if len(layers) > 1 else layers  # keep the output layer whole


def prune_generator(model: nn.Module, method: str, amount: float) -> tuple[nn.Module, dict]:
    """A pruned copy of ``model`` (the original is untouched) and a summary of what was zeroed."""
    pruned = copy.deepcopy(model).eval()
    if method == "none" or amount <= 0:
        return pruned, sparsity(pruned, method="none", amount=0.0)
    for _, layer in prunable_layers(pruned):
        if method == "l1_unstructured":
            prune.l1_unstructured(layer, "weight", amount=amount)
        elif method == "ln_structured":
            prune.ln_structured(layer, "weight", amount=amount, n=2, dim=0)
        else:
            raise ValueError(f"unknown pruning method {method!r}: none, l1_unstructured or ln_structured")
        prune.remove(layer, "weight")  # permanent: a plain weight tensor with zeros, no mask or hook
    return pruned, sparsity(pruned, method=method, amount=amount)


def sparsity(model: nn.Module, method: str, amount: float) -> dict:
    layers = {}
    total = zeros = 0
    for name, layer in prunable_layers(model):
        weight = layer.weight.detach()
        n, z = weight.numel(), int((weight == 0).sum())
        layers[name] = round(z / n, 4)
        total, zeros = total + n, zeros + z
    return {"method": method, "amount": amount, "zero_fraction": zeros / total if total else 0.0, "per_layer": layers}


__all__ = ["prune_generator", "prunable_layers", "sparsity"]
