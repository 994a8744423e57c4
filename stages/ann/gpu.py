"""FAISS on GPUs: how many it sees, and cloning an index onto them."""

from __future__ import annotations

import faiss


def num_gpus() -> int:
    try:
        return int(faiss.get_num_gpus())
    except (RuntimeError, AttributeError):  # a CPU-only faiss build
        return 0


def to_gpu(index: faiss.Index) -> faiss.Index:
    """Clone a CPU index onto every GPU (replicas). Raises where FAISS has no GPU version (or no GPU support)."""
    try:
        seen = int(faiss.get_num_gpus())
    except (RuntimeError, AttributeError):
        seen = 0
    if seen == 0:  # asked FAISS itself: cloning onto no GPU would give an empty replica set
        raise RuntimeError("FAISS sees no GPU (a CPU-only faiss build, or no CUDA device visible)")
    co = faiss.GpuMultipleClonerOptions()
    ivf = faiss.try_extract_index_ivf(index)
    co.useFloat16 = ivf is not None and "PQ" in type(faiss.downcast_index(ivf)).__name__  # large PQ codes need it
    return faiss.index_cpu_to_all_gpus(index, co=co)


def to_cpu(index: faiss.Index) -> faiss.Index:
    return faiss.index_gpu_to_cpu(index)
