"""Train the product classifier used by evaluation (domain features, accuracy on generated images)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm import tqdm

from productstudio.artifacts import staged_directory, write_manifest
from productstudio.data import store
from productstudio.imaging import to_float
from productstudio.models.classifier import ClassifierConfig, ProductClassifier, save_classifier
from productstudio.data.store import data_version


@torch.no_grad()
def accuracy(model: ProductClassifier, images, labels, batch_size: int = 512) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size])
        correct += (model(x).argmax(1) == torch.as_tensor(labels[start : start + batch_size])).sum().item()
    return correct / max(len(images), 1)


def train_classifier(processed_dir: str | Path, out_dir: str | Path, epochs: int = 2, batch_size: int = 128, seed: int = 0, max_images: int | None = None) -> dict:
    """A few epochs of Adam on the train split; reports accuracy on the test split."""
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(seed)
    images, labels = store.load_split(processed_dir, "train")
    if max_images:
        images, labels = images[:max_images], labels[:max_images]
    test_images, test_labels = store.load_split(processed_dir, "test")
    categories = store.categories(processed_dir)
    model = ProductClassifier(ClassifierConfig(num_classes=len(categories), channels=images.shape[1]))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    rng = torch.Generator().manual_seed(seed)
    steps = epochs * ((len(x_all) + batch_size - 1) // batch_size)
    model.train()
    for _ in tqdm(range(steps), desc="train classifier", unit="step", disable=None):
        index = torch.randint(0, len(x_all), (batch_size,), generator=rng)
        loss = F.cross_entropy(model(to_float(x_all[index])), y_all[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    test_accuracy = accuracy(model, test_images, test_labels)
    with staged_directory(out_dir) as staging:  # swapped in whole: a full disk leaves the previous classifier intact
        save_classifier(model, staging, categories=categories, test_accuracy=test_accuracy)
        return write_manifest(
            staging, "product-classifier",
            inputs={"processed_data_version": data_version(processed_dir)},
            params={"epochs": epochs, "batch_size": batch_size, "seed": seed, "max_images": max_images},
            test_accuracy=test_accuracy, categories=categories,
        )
