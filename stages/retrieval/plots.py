"""The evaluate stage's retrieval plots: recall@K and the histogram of ground-truth ranks (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.contract.tasks import atomic_path


def write_plots(ranks: np.ndarray, out: Path, title: str) -> None:
    """recall_at_k.png (R@K for K = 1..max) and rank_histogram.png (1-based ranks, log-spaced bins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = np.asarray(ranks, dtype=np.float64) + 1
    ks = np.unique(np.clip(np.round(np.logspace(0, np.log10(max(2.0, r.max())), 60)), 1, None))
    recall = [100.0 * np.mean(r <= k) for k in ks]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ks, recall, marker=".")
    ax.set(xscale="log", xlabel="K", ylabel="R@K (%)", ylim=(0, 101), title=f"{title}: recall@K")
    ax.grid(alpha=0.3)
    with atomic_path(out / "recall_at_k.png", suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.unique(np.round(np.logspace(0, np.log10(max(2.0, r.max() + 1)), 30)))
    ax.hist(r, bins=bins)
    ax.set(xscale="log", xlabel="rank of the ground truth (1 = first)", ylabel="queries", title=f"{title}: ranks")
    with atomic_path(out / "rank_histogram.png", suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
