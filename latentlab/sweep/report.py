"""The sweep's outputs from its finished jobs: every run's numbers (sweep_runs.csv), their mean and
standard deviation over seeds (sweep_results.csv / .md), one figure per dataset
(sweep_metrics_<dataset>.png) of every metric against the latent size, PCA dashed, and one of the
linear CKA between every two of its codes, at its first seed (sweep_cka_<dataset>.png)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from latentlab.store import files
from latentlab.sweep.jobs import CODE_METRICS, METRICS, PCA, dataset_dir, family_name

SHOWN = {**METRICS, **CODE_METRICS}  # the columns and panels, each metric's (name, higher is better)
RUN_COLUMNS = ("dataset", "family", "latent_size", "seed", *SHOWN, "epochs_run", "train_seconds")
TABLE_COLUMNS = ("dataset", "family", "latent_size", "seeds",
                 *(f"{m}_{s}" for m in SHOWN for s in ("mean", "sd")), "train_seconds_mean")
# decimals; 3 for others
DIGITS = {"test_mse": 4, "test_psnr": 2, "gen_fd": 2, "gen_novelty": 2, "active_units": 1, "intrinsic_dim": 1}


def run_rows(records: list[dict]) -> list[dict]:
    return [{"dataset": r["settings"]["dataset"], "family": r["family"], "latent_size": r["latent_size"],
             "seed": r["settings"]["seed"], **dict.fromkeys(CODE_METRICS), **r["metrics"], "epochs_run": r.get("epochs_run"),
             "train_seconds": r.get("train_seconds")} for r in records]


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per (dataset, family, latent size): each metric's mean and sample standard deviation
    over the seeds that have it (sd None for one; both None for none), in the order the runs come."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["family"], r["latent_size"]), []).append(r)
    rows = []
    for (dataset, family, size), rs in groups.items():
        row = {"dataset": dataset, "family": family, "latent_size": size, "seeds": len(rs)}
        for m in SHOWN:
            v = np.array([r.get(m) for r in rs if m in METRICS or r.get(m) is not None], dtype=float)
            row[f"{m}_mean"] = float(v.mean()) if len(v) else None
            row[f"{m}_sd"] = float(v.std(ddof=1)) if len(v) > 1 else None
        secs = [r["train_seconds"] for r in rs if r["train_seconds"] is not None]
        row["train_seconds_mean"] = float(np.mean(secs)) if secs else None
        rows.append(row)
    return rows


def to_csv(rows: list[dict], columns) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if r[k] is None else r[k] for k in columns} for r in rows])
    return buf.getvalue()


def to_markdown(rows: list[dict]) -> str:
    """The aggregated table: mean ± sd over the seeds of each metric."""
    head = ["dataset", "model", "latent size", "seeds", *(name for name, _ in SHOWN.values()), "training s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["dataset"], family_name(r["family"]), str(r["latent_size"]), str(r["seeds"])]
        for m in SHOWN:
            d, mean, sd = DIGITS.get(m, 3), r[f"{m}_mean"], r[f"{m}_sd"]
            cells.append("" if mean is None else f"{mean:.{d}f}" + ("" if sd is None else f" ± {sd:.{d}f}"))
        cells.append("" if r["train_seconds_mean"] is None else f"{r['train_seconds_mean']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(records: list[dict], output_dir, epochs: int) -> dict:
    """sweep_runs.csv, sweep_results.csv / .md and one figure per dataset in output_dir."""
    from latentlab import plots  # noqa: F401 (matplotlib's headless backend, set by plots)
    out = Path(output_dir)
    runs = run_rows(records)
    rows = aggregate(runs)
    paths = {"runs": files.save_text(to_csv(runs, RUN_COLUMNS), out / "sweep_runs.csv"),
             "csv": files.save_text(to_csv(rows, TABLE_COLUMNS), out / "sweep_results.csv"),
             "markdown": files.save_text(to_markdown(rows), out / "sweep_results.md")}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        lines, seeds = {}, set()
        for r in rows:
            if r["dataset"] == dataset:
                means = {m: np.nan if r[f"{m}_mean"] is None else r[f"{m}_mean"] for m in SHOWN}
                sds = {m: r[f"{m}_sd"] or 0.0 for m in SHOWN}
                lines.setdefault(family_name(r["family"]), []).append((r["latent_size"], means, sds))
                seeds.add(r["seeds"])
        n = "/".join(map(str, sorted(seeds)))
        title = (f"latent-size sweep on {dataset}: {', '.join(l for l in lines if l != family_name(PCA))} and PCA "
                 f"({epochs} epoch{'s' if epochs != 1 else ''} per model; mean ± sd over {n} seed{'s' if n != '1' else ''})")
        fig = sweep_figure(lines, SHOWN, dashed={family_name(PCA)}, title=title)
        name = dataset_dir(out, dataset).name
        paths[f"figure {dataset}"] = files.save_figure(fig, out / f"sweep_metrics_{name}.png", dpi=100)
        cka = cka_matrix([r for r in records if r["settings"]["dataset"] == dataset])
        if cka is not None:
            from latentlab.diagnosis_figures import cka_figure
            title = f"linear CKA between the codes of the {dataset} test images\n(seed {cka[2]}; Kornblith et al. 2019)"
            paths[f"CKA {dataset}"] = files.save_figure(cka_figure(cka[0], cka[1], title), out / f"sweep_cka_{name}.png")
    return paths


def cka_matrix(records: list[dict]):
    """(linear CKA of every two codes (k, k), their labels, the seed) of the records of one dataset
    at its first seed whose jobs saved their codes (code_sample, beside metrics.json, in "folder"), all
    of the same encoded images; None for fewer than two."""
    from latentlab.analysis.diagnosis import linear_cka
    seed = min(r["settings"]["seed"] for r in records)
    codes, labels = [], []
    for r in records:
        path = Path(r.get("folder", "")) / str(r.get("code_sample", ""))
        if r["settings"]["seed"] == seed and r.get("code_sample") and path.is_file():
            codes.append(np.load(path, allow_pickle=False))
            labels.append(f"{family_name(r['family'])}, {r['latent_size']}")
    if len(codes) < 2 or len({len(c) for c in codes}) > 1:
        return None
    return np.array([[linear_cka(a, b) for b in codes] for a in codes]), labels, seed


def sweep_figure(lines: dict[str, list], metrics: dict[str, tuple[str, bool]], dashed: set, title: str):
    """One panel per metric against the latent size (log2 axis). lines: label -> [(latent size,
    {metric: mean}, {metric: sd})], one line each, the sd as error bars (0: none); labels in
    `dashed` (the baseline) are drawn dashed. metrics: metric -> (its name, whether higher is better; None: neither)."""
    import matplotlib.pyplot as plt
    names = list(metrics)
    ncols = 3
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.3 * nrows + 0.6), squeeze=False)
    sizes = sorted({p[0] for points in lines.values() for p in points})
    for ax, name in zip(axes.flat, names):
        label, higher = metrics[name]
        for line, points in lines.items():
            points = sorted(points, key=lambda p: p[0])
            xs, ys, err = [p[0] for p in points], [p[1][name] for p in points], [p[2][name] for p in points]
            if line in dashed:
                ax.errorbar(xs, ys, yerr=err, fmt="s--", color="0.35", label=line, markersize=4, capsize=3)
            else:
                ax.errorbar(xs, ys, yerr=err, fmt="o-", color=f"C{list(lines).index(line)}", label=line,
                            markersize=5, capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(k) for k in sizes])
        ax.minorticks_off()
        ax.set_xlabel("latent size (log2 scale)")
        ax.set_ylabel(label)
        ax.set_title(label if higher is None else f"{label} ({'higher' if higher else 'lower'} is better)", fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
