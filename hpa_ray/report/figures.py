"""The report's figures: numpy/pandas in, one PNG out each (matplotlib, headless Agg).

Every function takes plain arrays or tables and the path to write, and returns that path. The
class names come from hpa_ray.core.schema.CLASS_NAMES; a cell's four channels become one colour
image in `compose` (red microtubules, green protein, blue nucleus, yellow ER).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import patheffects, ticker  # noqa: E402

from hpa_ray.core.schema import CLASS_NAMES, NUM_CLASSES  # noqa: E402

DPI = 100  # figure inches × DPI = PNG pixels


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _class_axis(ax, horizontal: bool = True) -> None:
    ticks = np.arange(NUM_CLASSES)
    if horizontal:
        ax.set_yticks(ticks, [f"{i} {n}" for i, n in enumerate(CLASS_NAMES)], fontsize=8)
        ax.invert_yaxis()
    else:
        ax.set_xticks(ticks, [str(i) for i in ticks], fontsize=8)


def images_per_class(y: np.ndarray, path: Path) -> Path:
    """y: (images, NUM_CLASSES) multi-hot → horizontal bars of images per class."""
    counts = y.sum(axis=0)
    fig, ax = plt.subplots(figsize=(9, 6), layout="constrained")
    ax.barh(np.arange(NUM_CLASSES), counts, color="tab:green")
    _class_axis(ax)
    for i, c in enumerate(counts):
        ax.text(c, i, f" {int(c):,}", va="center", fontsize=7)
    ax.set_xlabel("images")
    ax.set_title(f"Images per class ({len(y):,} images)")
    return _save(fig, path)


def cooccurrence(y: np.ndarray, path: Path) -> Path:
    """Heatmap of P(column class | row class): the share of row-class images that also have it."""
    y = y.astype(np.float64)
    both = y.T @ y
    share = both / np.maximum(np.diag(both)[:, None], 1)
    fig, ax = plt.subplots(figsize=(9, 8), layout="constrained")
    image = ax.imshow(share, cmap="viridis", vmin=0, vmax=1)
    _class_axis(ax)
    _class_axis(ax, horizontal=False)
    ax.set_xlabel("also labelled (class)")
    ax.set_title("Label co-occurrence (row-normalised)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _save(fig, path)


def labels_per_image(y: np.ndarray, path: Path) -> Path:
    counts = y.sum(axis=1).astype(int)
    values = np.arange(1, max(counts.max(), 1) + 1)
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.bar(values, [(counts == v).sum() for v in values], color="tab:blue")
    ax.set_xticks(values)
    ax.set_xlabel("labels per image")
    ax.set_ylabel("images")
    ax.set_title("Number of labels per image")
    return _save(fig, path)


def compose(channels: np.ndarray) -> np.ndarray:
    """(4, H, W) uint8 in CHANNELS order → (H, W, 3) float RGB: red microtubules, green
    protein, blue nucleus, yellow (red + green) ER at half strength."""
    r, g, b, y = (channels.astype(np.float32) / 255)[:4]
    return np.clip(np.stack([r + 0.5 * y, g + 0.5 * y, b], axis=-1), 0, 1)


def example_cells(crops: dict[int, np.ndarray], path: Path) -> Path:
    """crops: class → (k, 4, S, S) uint8 cells from images with that label; one row per class."""
    classes = list(crops)
    per_row = max((len(v) for v in crops.values()), default=1)
    fig, axes = plt.subplots(len(classes), per_row, figsize=(1.6 * per_row + 2, 1.6 * len(classes) + 0.6),
                             squeeze=False, layout="constrained")  # fmt: skip
    for row, c in enumerate(classes):
        for col in range(per_row):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(crops[c]):
                ax.imshow(compose(crops[c][col]))
            if col == 0:
                ax.set_ylabel(f"{c} {CLASS_NAMES[c]}", fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("Rare classes: example cells (red microtubules, green protein, blue nucleus, yellow ER)")
    return _save(fig, path)


def outlines(image: np.ndarray | None, labels: np.ndarray, title: str, path: Path) -> Path:
    """image (4, H, W) uint8 or None, labels (H, W) cell ids → composite with white outlines
    (or the cells coloured, without the image)."""
    from skimage.segmentation import find_boundaries

    edges = find_boundaries(labels, mode="inner")
    if image is not None:
        picture = compose(image)
    else:
        rng = np.random.default_rng(0)
        palette = np.vstack([[0, 0, 0], rng.uniform(0.2, 1, (int(labels.max()) + 1, 3))])
        picture = palette[labels]
    picture[edges] = 1.0
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    ax.imshow(picture)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def cells_per_image(n_cells: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.hist(n_cells, bins=np.arange(0, max(int(n_cells.max()), 1) + 2) - 0.5, color="tab:purple")
    ax.set_xlabel("cells per image")
    ax.set_ylabel("images")
    ax.set_title(f"Cells per image ({len(n_cells)} images, {int(n_cells.sum()):,} cells)")
    return _save(fig, path)


def positives_per_fold(balance: pd.DataFrame, path: Path) -> Path:
    """balance: index class 0..18, one column per fold (positives) → grouped bars."""
    folds = list(balance.columns)
    width = 0.8 / max(len(folds), 1)
    fig, ax = plt.subplots(figsize=(10, 5), layout="constrained")
    for k, fold in enumerate(folds):
        ax.bar(np.arange(NUM_CLASSES) + k * width, balance[fold].to_numpy(), width, label=f"fold {fold}")
    ax.set_xticks(np.arange(NUM_CLASSES) + 0.4 - width / 2, [str(i) for i in range(NUM_CLASSES)])
    ax.set_xlabel("class")
    ax.set_ylabel("positive images")
    ax.set_yscale("symlog", linthresh=1)  # counts span 1 to 10,000 in HPA; zeros allowed
    ax.legend(fontsize=8, ncols=min(len(folds), 5))
    ax.set_title("Positives per class and fold")
    return _save(fig, path)


def training_curves(metrics: dict[int, pd.DataFrame], path: Path) -> Path:
    """fold → metrics.csv table → train/val loss and val_map per epoch."""
    fig, (loss_ax, ap_ax) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for fold, table in sorted(metrics.items()):
        line = loss_ax.plot(table.epoch, table.train_loss, label=f"fold {fold} train")[0]
        loss_ax.plot(table.epoch, table.val_loss, "--", color=line.get_color(), label=f"fold {fold} val")
        ap_ax.plot(table.epoch, table.val_map, color=line.get_color(), label=f"fold {fold}")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("BCE loss")
    loss_ax.legend(fontsize=7)
    ap_ax.set_xlabel("epoch")
    ap_ax.set_ylabel("validation macro AP")
    ap_ax.legend(fontsize=7)
    fig.suptitle("Training per fold")
    return _save(fig, path)


def per_class_ap(ap: pd.DataFrame, title: str, path: Path) -> Path:
    """ap: index class 0..18, one column per series (fold, or model / prior) → grouped bars."""
    series = list(ap.columns)
    height = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(9, 7), layout="constrained")
    for k, name in enumerate(series):
        ax.barh(np.arange(NUM_CLASSES) + k * height, ap[name].fillna(0).to_numpy(), height, label=str(name))
    ax.set_yticks(np.arange(NUM_CLASSES) + 0.4 - height / 2, [f"{i} {n}" for i, n in enumerate(CLASS_NAMES)],
                  fontsize=8)  # fmt: skip
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def search_curves(curves: dict[str, pd.DataFrame], trials: pd.DataFrame, max_epochs: int, metric: str,
                  path: Path) -> Path:  # fmt: skip
    """trial ID → per-epoch metrics; trials (trial_id, best_<metric>) → one line per trial, × at
    the last epoch of a trial stopped before max_epochs, the best trial bold."""
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    best = trials.loc[trials[f"best_{metric}"].idxmax(), "trial_id"] if len(trials) else None
    for trial_id, table in curves.items():
        epochs = table.epoch + 1
        line = ax.plot(epochs, table[metric], lw=2.5 if trial_id == best else 1, label=trial_id)[0]
        if len(table) and epochs.iloc[-1] < max_epochs:
            ax.plot(epochs.iloc[-1], table[metric].iloc[-1], "x", ms=9, color=line.get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.set_xlim(0.8, max_epochs + 0.2)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Search: trials per epoch (× stopped by ASHA)")
    return _save(fig, path)


def search_parameters(trials: pd.DataFrame, space: dict[str, str], metric: str, path: Path) -> Path:
    """trials: one row per trial with each searched parameter and `metric`, `epochs_run`; space:
    parameter → its search type (log axes for loguniform) → one scatter panel per parameter."""
    fig, axes = plt.subplots(1, max(1, len(space)), figsize=(max(6, 4 * len(space)), 3.5), layout="constrained",
                             squeeze=False)  # fmt: skip
    full = trials.epochs_run >= trials.epochs_run.max()
    for ax, (name, kind) in zip(axes[0], space.items(), strict=False):
        values = pd.to_numeric(trials[name], errors="coerce")
        ax.scatter(values[full], trials[metric][full], label="ran every epoch")
        ax.scatter(values[~full], trials[metric][~full], facecolors="none", edgecolors="C1", label="stopped early")
        if kind == "loguniform":
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:.0e}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Search: each trial's best metric by parameter")
    return _save(fig, path)


def class_colour(c: int) -> tuple[float, float, float]:
    """Class c's colour in every predictions figure (matplotlib's tab20: 20 colours, 19 classes)."""
    return plt.get_cmap("tab20")(int(c) % 20)[:3]


def _class_outlines(ax, image: np.ndarray, cells: np.ndarray, classes: np.ndarray, texts: list[str],
                    title: str) -> None:  # fmt: skip
    """image (4, H, W) uint8, cells (H, W) label image (cell k is k + 1), classes (n,) the colour
    of each cell's class, texts (n,) written at each cell's centre → the composite, outlined."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    step = max(1, int(np.ceil(max(cells.shape) / 600)))  # about one image pixel per screen pixel
    small = cells[::step, ::step]
    picture = compose(image[:, ::step, ::step])
    edges = ndimage.binary_dilation(find_boundaries(small, mode="inner")) & (small > 0)
    palette = np.array([(1.0, 1.0, 1.0)] + [class_colour(c) for c in classes])
    picture[edges] = palette[small[edges]]
    ax.imshow(picture)
    centres = ndimage.center_of_mass(small > 0, small, np.arange(1, len(classes) + 1))
    stroke = [patheffects.withStroke(linewidth=2, foreground="black")]
    for (y, x), c, text in zip(centres, classes, texts, strict=True):
        if np.isfinite(x):
            ax.text(x, y, text, color=class_colour(c), fontsize=7, ha="center", va="center", path_effects=stroke)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)


def predicted_image(image: np.ndarray, cells: np.ndarray, scores: np.ndarray, title: str, path: Path,
                    truth: tuple[np.ndarray, np.ndarray] | None = None) -> Path:  # fmt: skip
    """image (4, H, W) uint8; cells (H, W) int label image, cell k is k + 1; scores (n, NUM_CLASSES)
    the confidence per class → every cell outlined in its top class's colour, the confidence
    beside it; truth (true cells (H, W), labels (m, NUM_CLASSES) multi-hot) drawn on the left."""
    from matplotlib.patches import Patch

    panels = 2 if truth is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 6.6), layout="constrained", squeeze=False)
    top = scores.argmax(1)
    texts = [f"{scores[k, c]:.2f}" for k, c in enumerate(top)]
    shown = set(top.tolist())
    if truth is not None:
        true_cells, labels = truth
        first = labels.argmax(1)  # the first true class (multi-hot: argmax takes the lowest index)
        names = ["+".join(str(c) for c in np.flatnonzero(row)) for row in labels]
        _class_outlines(axes[0, 0], image, true_cells, first, names, "truth: true classes")
        shown |= set(first.tolist())
    _class_outlines(axes[0, -1], image, cells, top, texts, "predicted: top class and its confidence")
    handles = [Patch(color=class_colour(c), label=f"{c} {CLASS_NAMES[c]}") for c in sorted(shown)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def class_gallery(rows: dict[int, list[tuple[np.ndarray, str, bool | None]]], path: Path) -> Path:
    """rows: class → [(crop (4, S, S) uint8, caption, right? or None), …] → one row per class;
    a caption is green when right is True, red when False, black when None (no truth)."""
    per_row = max((len(v) for v in rows.values()), default=1)
    fig, axes = plt.subplots(max(1, len(rows)), per_row, figsize=(1.3 * per_row + 2.2, 1.45 * max(1, len(rows)) + 0.5),
                             squeeze=False, layout="constrained")  # fmt: skip
    colours = {True: "green", False: "red", None: "black"}
    for row, (c, crops) in enumerate(rows.items()):
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(crops):
                ax.axis("off")  # fewer cells were given this class
                continue
            crop, caption, right = crops[col]
            ax.imshow(compose(crop))
            ax.set_title(caption, fontsize=7, color=colours[right], pad=2)
            plt.setp(ax.spines.values(), color=class_colour(c), linewidth=2)
        name = "\n".join(textwrap.wrap(f"{c} {CLASS_NAMES[c]}", 22))
        axes[row, 0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("The most confident cells per class (red microtubules, green protein, blue nucleus, yellow ER)")
    return _save(fig, path)
