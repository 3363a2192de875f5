"""Datasets as NumPy arrays (``float32 [N, H, W, C]`` in ``[0, 1]``, ``int32 [N]`` labels).

``load_dataset("mnist_embedded", split)`` works offline (real MNIST digits shipped in the
package); tensorflow-datasets names need prepared data or ``download=True``.
"""

from robustjax.data._datasets import DATASET_NAMES
from robustjax.data._datasets import Dataset
from robustjax.data._datasets import load_dataset
from robustjax.data._pipeline import batches
from robustjax.data._pipeline import num_batches
from robustjax.data._pipeline import split
from robustjax.data._pipeline import subset
from robustjax.data._pipeline import synthetic
from robustjax.data._pipeline import train_test_split

__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "batches",
    "load_dataset",
    "num_batches",
    "split",
    "subset",
    "synthetic",
    "train_test_split",
]
