"""PNG plots of accuracy curves and adversarial examples (matplotlib, Agg canvas).

The figures are drawn on a :class:`matplotlib.figure.Figure` with an Agg canvas, without
``pyplot``, so plotting never changes the global backend nor opens a window.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["plot_accuracy_vs_eps", "plot_accuracy_vs_distortion", "plot_examples"]


def _figure(figsize):
    # pylint: disable=g-import-not-at-top
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike, dpi: int) -> str:
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
    return path


def _curve_arrays(name: str, curve: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        x, y = curve
    except (TypeError, ValueError):
        raise ValueError(
            f"`curves[{name!r}]` must be a pair (x, accuracy), got {curve!r}.") from None
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(
            f"`curves[{name!r}]` must hold two non-empty arrays of equal length, got {x.shape} "
            f"and {y.shape}.")
    return x, y


def _check_curves(curves: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("`curves` must be a non-empty mapping name -> (x, accuracy).")
    return {str(k): _curve_arrays(k, v) for k, v in curves.items()}


def plot_accuracy_vs_eps(
    curves: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    xlabel: str = "ε",
    percent: bool = True,
    dpi: int = 100,
) -> str:
    """Plot robust accuracy against ε, one line per model/attack, and write a PNG.

    Args:
      curves: ``{name: (eps [M], accuracy [M])}`` (e.g. :class:`Curve` from
        :func:`accuracy_vs_eps`); accuracies are fractions.
      path: output ``.png`` path (parent folders are created).
      title: figure title.
      xlabel: x-axis label.
      percent: label the y axis in percent.
      dpi: resolution.

    Returns:
      ``path`` as a string.
    """
    data = _check_curves(curves)
    fig = _figure((5.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    scale = 100.0 if percent else 1.0
    for name, (x, y) in data.items():
        ax.plot(x, scale * y, marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)" if percent else "accuracy")
    ax.set_ylim(-0.02 * scale, 1.02 * scale)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path, dpi)


def plot_accuracy_vs_distortion(
    curves: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    norm: str = "l2",
    percent: bool = True,
    dpi: int = 100,
) -> str:
    """Plot accuracy against the distortion budget (step curves) and write a PNG.

    Infinite thresholds (the ``t = ∞`` end of :func:`accuracy_at_distortion`) are drawn at
    1.05 × the largest finite threshold over all curves.

    Args:
      curves: ``{name: (thresholds [M], accuracy [M])}``.
      path: output ``.png`` path.
      title: figure title.
      norm: ``"l2"`` or ``"linf"`` (x-axis label).
      percent, dpi: as in :func:`plot_accuracy_vs_eps`.

    Returns:
      ``path`` as a string.
    """
    if norm not in ("l2", "linf"):
        raise ValueError(f"`norm` must be one of ('l2', 'linf'), got {norm!r}.")
    data = _check_curves(curves)
    finite = [x[np.isfinite(x)] for x, _ in data.values()]
    finite = np.concatenate(finite) if finite else np.zeros(0)
    xmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    fig = _figure((5.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    scale = 100.0 if percent else 1.0
    for name, (x, y) in data.items():
        x = np.where(np.isfinite(x), x, 1.05 * xmax)
        order = np.argsort(x, kind="stable")
        ax.step(x[order], scale * y[order], where="post", label=name)
    ax.set_xlabel("ℓ2 distortion budget" if norm == "l2" else "ℓ∞ distortion budget")
    ax.set_ylabel("accuracy (%)" if percent else "accuracy")
    ax.set_ylim(-0.02 * scale, 1.02 * scale)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path, dpi)


def _to_display(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    img = np.clip(np.asarray(img, np.float32), 0.0, 1.0)
    if img.shape[-1] == 1:
        return img[..., 0], "gray"
    return img, None


def plot_examples(
    clean: Any,
    adv: Any,
    y: Any,
    preds_clean: Any,
    preds_adv: Any,
    path: str | os.PathLike,
    *,
    max_examples: int = 8,
    class_names: Sequence[str] | None = None,
    show_perturbation: bool = True,
    title: str | None = None,
    dpi: int = 100,
) -> str:
    """Grid of clean / adversarial images with predictions, written as a PNG.

    One column per example; rows: clean image (title ``y=label, pred``), adversarial image
    (title ``pred``, red when wrong), and with ``show_perturbation`` the perturbation
    ``adv − clean`` rescaled to ``[0, 1]`` by its largest absolute value (grey = 0).

    Args:
      clean: ``[N, H, W, C]`` images in ``[0, 1]`` (``C`` = 1 or 3).
      adv: ``[N, H, W, C]`` adversarial images.
      y, preds_clean, preds_adv: ``int [N]``.
      path: output ``.png`` path.
      max_examples: at most this many (the first) examples are shown.
      class_names: optional names indexed by class.
      show_perturbation: add the perturbation row.
      title: figure title.
      dpi: resolution.

    Returns:
      ``path`` as a string.
    """
    clean = np.asarray(clean, np.float32)
    adv = np.asarray(adv, np.float32)
    if clean.ndim != 4 or clean.shape[-1] not in (1, 3):
        raise ValueError(f"`clean` must be [N, H, W, C] with C in (1, 3), got {clean.shape}.")
    if adv.shape != clean.shape:
        raise ValueError(
            f"`adv` must have the shape of `clean`, got {adv.shape} and {clean.shape}.")
    n = clean.shape[0]
    arrays = {}
    for name, v in (("labels", y), ("preds_clean", preds_clean), ("preds_adv", preds_adv)):
        v = np.asarray(v).reshape(-1)
        if v.shape[0] != n:
            raise ValueError(f"`{name}` must have {n} entries, got {v.shape[0]}.")
        arrays[name] = v.astype(np.int64)
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"`max_examples` must be an integer >= 1, got {max_examples!r}.")
    if n == 0:
        raise ValueError("`clean` must hold at least one example.")
    k = min(n, max_examples)
    name_of = (lambda c: str(class_names[c])) if class_names is not None else str
    rows = 3 if show_perturbation else 2
    fig = _figure((1.4 * k + 0.4, 1.6 * rows))
    for j in range(k):
        y, pc, pa = (int(arrays[a][j]) for a in ("labels", "preds_clean", "preds_adv"))
        panels = [(clean[j], f"y={name_of(y)} p={name_of(pc)}", pc == y),
                  (adv[j], f"adv p={name_of(pa)}", pa == y)]
        if show_perturbation:
            d = adv[j] - clean[j]
            m = float(np.max(np.abs(d)))
            panels.append((0.5 + 0.5 * d / m if m > 0 else np.full_like(d, 0.5),
                           f"|δ|∞={m:.3f}", True))
        for i, (img, text, ok) in enumerate(panels):
            ax = fig.add_subplot(rows, k, i * k + j + 1)
            im, cmap = _to_display(img)
            ax.imshow(im, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(text, fontsize=7, color="black" if ok else "red")
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path, dpi)
