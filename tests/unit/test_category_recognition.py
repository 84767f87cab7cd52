"""Per-category recognition and within-category variety, as evaluate reports them."""

import numpy as np

from productstudio.metrics.evaluate import per_category_recognition, pixel_diversity


def test_pixel_diversity_is_zero_for_copies_and_grows_with_variety():
    rng = np.random.default_rng(0)
    copies = np.repeat(rng.integers(0, 256, (1, 1, 8, 8), dtype=np.uint8), 20, axis=0)
    varied = rng.integers(0, 256, (20, 1, 8, 8), dtype=np.uint8)
    assert pixel_diversity(copies) < 1e-12
    assert 0.25 < pixel_diversity(varied) < 0.32  # uniform 0..1: std 0.289


def test_per_category_rows_compare_generated_with_real():
    rng = np.random.default_rng(1)
    names = ["Coat", "Bag"]
    real = rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8)
    real_labels = np.repeat([0, 1], 20)
    # Generated: every Coat the same picture (collapsed), Bags as varied as real ones.
    generated = np.concatenate([np.repeat(real[:1], 10, axis=0), rng.integers(0, 256, (10, 1, 8, 8), dtype=np.uint8)])
    labels = np.repeat([0, 1], 10)
    predicted = np.array([0] * 10 + [1] * 5 + [0] * 5)  # half the generated Bags called Coats
    real_predicted = real_labels.copy()
    rows = per_category_recognition(generated, labels, predicted, real, real_labels, real_predicted, names)
    assert rows["Coat"]["accuracy_generated"] == 1.0 and rows["Bag"]["accuracy_generated"] == 0.5
    assert rows["Bag"]["accuracy_real_test"] == 1.0
    assert rows["Coat"]["diversity_ratio"] < 1e-12 and 0.8 < rows["Bag"]["diversity_ratio"] < 1.2
    assert (rows["Coat"]["num_generated"], rows["Coat"]["num_real"]) == (10, 20)
