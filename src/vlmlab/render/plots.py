"""matplotlib figures for reports (Agg backend, no display, no network); one colour per variant throughout."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PALETTE = plt.get_cmap("tab10").colors


def colours(variants: list[str]) -> dict[str, tuple]:
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(variants)}


def grouped_bars(
    frame: pd.DataFrame,
    group: str,
    value: str,
    low: str | None = None,
    high: str | None = None,
    ylabel: str = "",
    ax=None,
    title: str = "",
    variants: list[str] | None = None,
    colour_of: dict[str, tuple] | None = None,
):
    """Bars of `value` per `group` (x) and variant (colour), with error bars from the `low`/`high` columns.

    `colour_of` overrides the colour of some bars' series (e.g. a comparison drawn in its level's colour)."""
    variants = variants or list(dict.fromkeys(frame["variant"]))
    groups = list(dict.fromkeys(frame[group]))
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(groups) * max(1, len(variants)) / 2 + 2), 3.6))
    width = 0.8 / max(1, len(variants))
    x = np.arange(len(groups))
    cmap = {**colours(variants), **(colour_of or {})}
    for i, v in enumerate(variants):
        sub = frame[frame["variant"] == v].set_index(group).reindex(groups)
        vals = sub[value].to_numpy(dtype=float)
        err = None
        if low and high:
            err = np.vstack([vals - sub[low].to_numpy(dtype=float), sub[high].to_numpy(dtype=float) - vals])
            err = np.nan_to_num(np.clip(err, 0, None))
        ax.bar(x + (i - (len(variants) - 1) / 2) * width, vals, width, yerr=err, capsize=2, label=v, color=cmap[v])
    ax.set_xticks(
        x,
        groups,
        rotation=20 if max(len(str(g)) for g in groups) > 10 else 0,
        ha="right" if max(len(str(g)) for g in groups) > 10 else "center",
    )
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="#444", lw=0.6)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if own:
        ax.legend(fontsize=8, ncols=min(4, len(variants)), loc="best")
        fig.tight_layout()
        return fig
    return ax


def per_category(summary: pd.DataFrame, variants: list[str]):
    """One panel per task: accuracy per category and variant, with 95% CIs."""
    tasks = list(dict.fromkeys(summary["task"]))
    cols = min(2, len(tasks))
    rows = int(np.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.4 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        grouped_bars(
            summary[summary["task"] == task],
            "category",
            "accuracy",
            "ci_low",
            "ci_high",
            ylabel="accuracy",
            ax=ax,
            title=task,
            variants=variants,
        )
        ax.set_ylim(0, 1.05)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncols=min(6, len(variants)), fontsize=8, bbox_to_anchor=(0.5, 1.02))
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def training_curves(logs: dict[str, list[dict]], variants: list[str]):
    """Training loss against the optimizer step counted across stages, one line per variant and seed (`logs`
    keyed `variant@seed`; a variant's first seed solid, the others dashed); dotted verticals mark stage boundaries."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    cmap = colours(variants)
    boundaries: set[int] = set()
    labelled: set[str] = set()
    for key, log in logs.items():
        variant, seed = key.rsplit("@", 1)
        offset, prev_stage, prev_step, xs, ys = 0, None, 0, [], []
        for rec in log:
            if "step" not in rec:
                continue
            if rec["stage"] != prev_stage or rec["step"] < prev_step:  # a new stage (two may share a name)
                offset += prev_step if prev_stage is not None else 0
                if prev_stage is not None:
                    boundaries.add(offset)
                prev_stage = rec["stage"]
            prev_step = rec["step"]
            xs.append(offset + rec["step"])
            ys.append(rec["loss"])
        ax.plot(
            xs,
            ys,
            color=cmap[variant],
            lw=1.2,
            ls="-" if variant not in labelled else "--",
            label=None if variant in labelled else variant,
        )
        labelled.add(variant)
    for b in sorted(boundaries):
        ax.axvline(b, color="#888", ls=":", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step (all stages)")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def cost_bars(info: pd.DataFrame, variants: list[str]):
    """Training time (vision pretraining stacked under the VQA stages) and trainable parameters per
    variant, means over seeds. A variant that loaded a shared pretrained tower shows no vision time."""
    cols = ["vision_pretrain_s", "vqa_stages_s", "trainable_max"]
    mean = info.groupby("variant", sort=False)[cols].mean().reindex(variants)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    cmap = colours(variants)
    x = range(len(variants))
    vision, vqa = mean["vision_pretrain_s"].to_numpy(dtype=float), mean["vqa_stages_s"].to_numpy(dtype=float)
    axes[0].bar(x, vision, color="#bbbbbb", label="vision-pretrain")
    axes[0].bar(x, vqa, bottom=vision, color=[cmap[v] for v in variants], label="align + finetune")
    axes[0].set_title("training time (s)", fontsize=10)
    axes[0].legend(fontsize=7)
    axes[1].bar(x, mean["trainable_max"].to_numpy(dtype=float), color=[cmap[v] for v in variants])
    axes[1].set_title("trainable parameters (max over stages)", fontsize=10)
    for ax in axes:
        ax.set_xticks(list(x), variants, rotation=20, ha="right")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def upset(patterns: pd.DataFrame, variants: list[str], top: int = 16):
    """UpSet-style plot: bars = items per correctness pattern, dot matrix = which variants solve them."""
    frame = patterns.head(top)
    fig, (bars, dots) = plt.subplots(
        2,
        1,
        figsize=(max(5.0, 0.45 * len(frame) + 2.5), 2.6 + 0.3 * len(variants)),
        sharex=True,
        gridspec_kw={"height_ratios": [3, max(1, 0.35 * len(variants))]},
    )
    x = np.arange(len(frame))
    bars.bar(x, frame["items"], color="#4c72b0")
    for i, v in enumerate(frame["items"]):
        bars.text(i, v, str(int(v)), ha="center", va="bottom", fontsize=7)
    bars.set_ylabel("items")
    bars.grid(axis="y", alpha=0.3)
    for j, variant in enumerate(variants):
        on = frame[variant].to_numpy(dtype=bool)
        dots.scatter(x[~on], np.full((~on).sum(), j), color="#d0d0d0", s=30)
        dots.scatter(x[on], np.full(on.sum(), j), color="#222", s=30)
    for i in range(len(frame)):
        solved = [j for j, v in enumerate(variants) if frame[v].iloc[i]]
        if len(solved) > 1:
            dots.plot([i, i], [min(solved), max(solved)], color="#222", lw=1.2)
    dots.set_yticks(range(len(variants)), variants)
    dots.set_ylim(-0.6, len(variants) - 0.4)
    dots.set_xticks([])
    dots.invert_yaxis()
    fig.tight_layout()
    return fig


def heatmap(frame: pd.DataFrame, label: str, centre: float | None = None, fmt: str = "{:+.2f}"):
    """Rows x columns of numbers as a coloured grid with the values written in; diverging around `centre`."""
    values = frame.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.1 * values.shape[1] + 3.2, 0.32 * values.shape[0] + 1.4))
    if centre is not None:
        span = float(np.nanmax(np.abs(values - centre))) or 1.0
        image = ax.imshow(values, cmap="RdBu_r", vmin=centre - span, vmax=centre + span, aspect="auto")
    else:
        image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(values.shape[1]), [str(c) for c in frame.columns])
    ax.set_yticks(range(values.shape[0]), [str(i) for i in frame.index], fontsize=8)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label=label, shrink=0.8)
    fig.tight_layout()
    return fig


def lines(frame: pd.DataFrame, x: str, y: str, ylabel: str = ""):
    """One line per variant (its first seed solid, other seeds or seed pairs dashed), `y` against `x`."""
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    variants = list(dict.fromkeys(frame["variant"]))
    cmap = colours(variants)
    split = "seed" if "seed" in frame else ("seeds" if "seeds" in frame else None)
    for v in variants:
        sub = frame[frame["variant"] == v]
        groups = list(sub.groupby(split, sort=False)) if split else [(None, sub)]
        for k, (_, g) in enumerate(groups):
            ax.plot(
                g[x], g[y], marker="o", ms=3, color=cmap[v], ls="-" if k == 0 else "--", label=v if k == 0 else None
            )
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or y)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylim(min(0.0, float(frame[y].min()) - 0.05), 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
