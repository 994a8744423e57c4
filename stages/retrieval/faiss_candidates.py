"""t2v from a FAISS index's top-k candidates instead of exact blockwise ranks (evaluate --candidates faiss)."""

from __future__ import annotations

import numpy as np


def t2v_from_index(index_dir: str, data: dict, truth: list[str], k: int, ks, median: str) -> tuple[dict, np.ndarray]:
    """t2v ranks from the top-k candidates of a FAISS index (million-video galleries).

    A caption whose video is among its k candidates gets rank = number of candidates scoring strictly
    higher (optimistic ties); otherwise its rank is only known to be >= k and is recorded as k. So R@K is
    exact for K <= k (relative to the index: exact with a Flat index), MdR is exact while it is below k, and
    MnR is a lower bound (reported as MnR_lower_bound)."""
    from stages.ann.io import search
    from stages.retrieval import retrieval_metrics

    scores, hits = search(index_dir, data["captions"], k, model=data["model"])
    ranks = np.full(len(truth), float(k))
    for q, (row, ids) in enumerate(zip(scores, hits)):
        for j, hit in enumerate(ids):
            if hit == truth[q]:
                ranks[q] = float(np.sum(row[:j] > row[j]))
                break
    m = retrieval_metrics(ranks, ks=tuple(x for x in ks if x <= k), median=median, ties="optimistic")
    m["MnR_lower_bound"] = m.pop("MnR")
    m.pop("StdR", None)
    m["censored_queries"] = int(np.sum(ranks >= k))
    if m["MdR"] > k:
        m["MdR"] = None
    m.update({"rerank": "none", "candidates": "faiss", "candidates_k": k, "index_dir": index_dir})
    return m, ranks
