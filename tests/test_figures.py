"""The figures as a reader sees them (issue 39): gaps between image rows, legible heatmap numbers,
integer epochs, robust scatter limits, one palette per meaning. In-process, on tiny arrays."""
import matplotlib
import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from latentlab import image_grids, palettes, plots


def heatmap_texts(fig):
    """The cell numbers of every heatmap axes (those holding an image) of fig."""
    return [t for ax in fig.axes if ax.images for t in ax.texts]


def text_on_cell_contrast(t, ax):
    """|lightness of the text's colour - lightness of the cell under it|, in CIELAB L (0-100)."""
    im = ax.images[0]
    x, y = t.get_position()
    cell = im.cmap(im.norm(im.get_array()[int(round(y)), int(round(x))]))[:3]
    lab = rgb2lab(np.array([[matplotlib.colors.to_rgb(t.get_color()), cell]]))[0]
    return abs(lab[0, 0] - lab[1, 0])


@pytest.mark.parametrize("c", [2, 10])
def test_confusion_numbers_are_8pt_zeros_blank_and_readable_on_their_cell(c):
    rng = np.random.default_rng(0)
    cm = np.diag(rng.integers(50, 100, c))
    cm[0, 1], cm[1, 0] = 7, 1  # two confusions; every other off-diagonal cell is empty
    cm[-1, 0] = 0
    fig = plots.confusion_figure([(cm, "a"), (cm, "b")], [f"class {i}" for i in range(c)], "t")
    texts = heatmap_texts(fig)
    assert len(texts) == 2 * np.count_nonzero(cm)  # zero cells carry no text
    assert all(t.get_fontsize() >= 8 for t in texts)
    assert "0" not in {t.get_text() for t in texts} and "0.00" not in {t.get_text() for t in texts}
    for ax in fig.axes:
        for t in ax.texts:
            assert text_on_cell_contrast(t, ax) > 40, t.get_text()
    plt_close(fig)


def test_a_matrix_too_large_for_8pt_numbers_has_none_and_a_bigger_figure():
    small = plots.confusion_figure([(np.eye(10, dtype=int) * 9, "a")], list(map(str, range(10))), "t")
    large = plots.confusion_figure([(np.eye(60, dtype=int) * 9, "a")], list(map(str, range(60))), "t")
    assert heatmap_texts(large) == [] and len(heatmap_texts(small)) == 10
    assert large.get_figwidth() > small.get_figwidth()
    plt_close(small, large)


def test_kmeans_table_numbers_are_8pt_and_zero_cells_blank():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 100)
    clusters = np.where(rng.random(1000) < 0.9, labels, rng.integers(0, 10, 1000))
    xy = rng.normal(size=(1000, 2))
    fig = plots.kmeans_figure(xy, clusters, labels, list(map(str, range(10))), "t", "x", "y", "the latents")
    counts = np.zeros((10, 10), int)
    np.add.at(counts, (clusters, labels), 1)
    texts = heatmap_texts(fig)
    assert sorted(int(t.get_text()) for t in texts) == sorted(counts[counts > 0].tolist())
    assert all(t.get_fontsize() >= 8 for t in texts)
    plt_close(fig)


def test_training_curves_have_integer_epochs_a_selected_epoch_entry_and_the_best_loss():
    h = {"epoch": [0, 1, 2], "train_loss": [0.3, 0.2, 0.15], "val_loss": [0.31, 0.22, 0.25], "best_epoch": 1}
    fig = plots.training_curves({"2-d": h, "16-d": {**h, "best_epoch": 2}}, "curves")
    ax = fig.axes[0]
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "2-d: selected (lowest validation), epoch 2" in legend
    assert "2-d 0.22 (epoch 2)" in ax.get_title() and "16-d 0.25 (epoch 3)" in ax.get_title()
    plt_close(fig)


def test_robust_limits_leave_out_a_far_outlier_and_the_title_counts_it():
    xy = np.random.default_rng(0).uniform(-3, 3, size=(2000, 2))
    xy[0] = (1000.0, 0.0)
    (x0, x1), (y0, y1) = plots.robust_limits(xy)
    assert x1 < 10 and x0 > -10 and y1 < 10
    fig = plots.latent_scatter([{"xy": xy, "labels": np.arange(2000) % 3, "title": "p", "xlabel": "a",
                                 "ylabel": "b"}], ["a", "b", "c"], "t")
    ax = fig.axes[0]
    assert ax.get_xlim()[1] < 10
    assert "1 point beyond" in ax.get_title()
    edge = [c for c in ax.collections if c.get_offsets().shape[0] == 1]  # the outlier, drawn on the border
    assert edge and edge[0].get_offsets()[0][0] == pytest.approx(ax.get_xlim()[1])
    plt_close(fig)


def test_limits_without_outliers_keep_every_point():
    xy = np.random.default_rng(1).uniform(-1, 1, size=(100, 2))
    (x0, x1), (y0, y1) = plots.robust_limits(xy)
    assert x0 <= xy[:, 0].min() and x1 >= xy[:, 0].max() and y0 <= xy[:, 1].min() and y1 >= xy[:, 1].max()


def test_point_size_grows_as_the_count_falls():
    assert plots._point_size(100) > plots._point_size(1000) > plots._point_size(10_000) >= 3


@pytest.mark.parametrize("n", [2, 10, 20])
def test_cluster_colors_are_never_class_colors(n):
    for k in (2, n, 20, 40):
        clusters = rgb2lab(np.array([c[:3] for c in palettes.cluster_colors(k)])[None])[0]
        classes = rgb2lab(np.array([c[:3] for c in palettes.class_colors(n)])[None])[0]
        gap = np.linalg.norm(clusters[:, None] - classes[None], axis=-1).min()
        assert gap > 15, (n, k, gap)  # CIELAB distance: 15 is a difference any reader sees
        assert len(set(palettes.cluster_colors(k))) == k


def test_the_outcome_colours_are_neither_a_class_nor_a_cluster():
    colours = {matplotlib.colors.to_hex(c) for c in (*palettes.class_colors(10), *palettes.cluster_colors(20))}
    assert not colours & {matplotlib.colors.to_hex(c) for c in palettes.OUTCOME_COLORS}


@pytest.mark.parametrize("hw,n", [((28, 28), 12), ((28, 28), 5), ((16, 64), 5), ((64, 16), 5)])
def test_image_rows_leave_a_gap_between_rows_and_columns(hw, n):
    """12 columns of two rows: the interpolation figure, whose rows used to touch."""
    imgs = torch.rand(n, 1, *hw)
    fig = image_grids.image_rows([("2-d", imgs), ("16-d", imgs), ("PCA", imgs[:3])], "a title\nof two lines",
                           col_titles=["image 3\nclass 1", *(f"t={t:.2f}" for t in range(n - 1))])
    fig.canvas.draw()
    boxes = [im.get_window_extent() for im in fig.axes[0].images]  # where each image is drawn, in pixels
    assert len(boxes) == 2 * n + 3
    inches = 1 / fig.dpi
    for r in range(2):
        assert (boxes[r * n].y0 - boxes[(r + 1) * n].y1) * inches >= 0.1
    for c in range(n - 1):
        assert (boxes[c + 1].x0 - boxes[c].x1) * inches >= 0.04
    assert fig.get_size_inches()[0] < 18
    plt_close(fig)


def plt_close(*figs):
    import matplotlib.pyplot as plt
    for f in figs:
        plt.close(f)


def test_the_explorer_colours_with_the_same_palettes():
    """One palette per meaning in the explorer too: classes, clusters, right / wrong."""
    import torch
    from matplotlib.colors import to_hex
    from latentlab.analysis import explorer
    n, rng = 40, np.random.default_rng(0)
    labels = np.arange(n) % 10
    points = explorer.Points(z2=rng.normal(size=(n, 2)), zn=rng.normal(size=(n, 8)), labels=labels,
                             split=np.zeros(n, dtype=int), row=np.arange(n), item=np.arange(n),
                             images=torch.zeros(n, 1, 4, 4, dtype=torch.uint8), splits=["test"])
    none = np.zeros(n, dtype=np.float32)
    found = {"clusters": {1: (np.arange(n) * 3) % 10}, "preds": {1: (labels, "mlp")}, "errors": [none, none],
             "neighbours": (np.zeros((n, 8), dtype=np.int32), np.zeros((n, 8), dtype=np.float32)), "kept": none,
             "extra": {}}
    _, colorings = explorer.point_columns(points, points.zn[:, :2], [f"c{i}" for i in range(10)], ("2-d", "8-d"), found)
    colours = {c["name"]: [col for _, col in c["entries"]] for c in colorings if c["entries"] is not None}
    assert colours["class"] == [to_hex(c) for c in palettes.class_colors(10)]
    assert colours["k-means cluster, 8-d model"] == [to_hex(c) for c in palettes.cluster_colors(10)]
    assert not set(colours["class"]) & set(colours["k-means cluster, 8-d model"])
    assert colours["mlp classifier right / wrong, 8-d model"] == list(palettes.OUTCOME_COLORS)
