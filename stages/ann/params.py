"""What an index is made of and its search knob: nprobe (IVF), efSearch (HNSW), set on CPU or GPU."""

from __future__ import annotations

from typing import Any

import faiss

from stages.contract.errors import VtpipeError


def inner(index: faiss.Index) -> faiss.Index:
    """Strip pre-transforms and refinement wrappers."""
    index = faiss.downcast_index(index)
    while True:
        if isinstance(index, faiss.IndexPreTransform):
            index = faiss.downcast_index(index.index)
        elif isinstance(index, faiss.IndexRefine):
            index = faiss.downcast_index(index.base_index)
        else:
            return index


def knob(index: faiss.Index) -> tuple[str, list[int]] | None:
    """The search parameter that trades recall for speed, with candidate values in increasing cost."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        vals, v = [], 1
        while v < ivf.nlist:
            vals.append(v)
            v *= 2
        return "nprobe", vals + [int(ivf.nlist)]
    if isinstance(inner(index), faiss.IndexHNSW):
        return "efSearch", [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048]
    return None


def is_hnsw(index: faiss.Index) -> bool:
    """A graph index, or an IVF whose coarse quantizer is a graph (neither has a FAISS GPU version)."""
    if isinstance(inner(index), faiss.IndexHNSW):
        return True
    ivf = faiss.try_extract_index_ivf(index)
    return ivf is not None and isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW)


def on_gpu(index: faiss.Index) -> bool:
    return "Gpu" in type(faiss.downcast_index(index)).__name__ or "Replicas" in type(index).__name__


def last_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def set_search_params(index: faiss.Index, params: dict[str, Any]) -> None:
    """Apply {"nprobe": 16} / {"efSearch": 64} / {"k_factor_rf": 4} to a CPU or GPU index."""
    if not params:
        return
    spaces = [faiss.GpuParameterSpace(), faiss.ParameterSpace()] if on_gpu(index) else [faiss.ParameterSpace()]
    for name, value in params.items():
        for i, ps in enumerate(spaces):
            try:
                ps.set_index_parameter(index, name, float(value))
                break
            except RuntimeError as e:
                if i == len(spaces) - 1:
                    raise VtpipeError(f"cannot set search parameter {name}={value} on this index: "
                                      f"{last_line(e)}") from e


def set_build_params(index: faiss.Index, params: dict[str, Any]) -> None:
    """Construction settings a factory string cannot say: {"efConstruction": 16} for HNSW graphs."""
    ef = params.get("efConstruction")
    if ef is None:
        return
    top = inner(index)
    if isinstance(top, faiss.IndexHNSW):
        top.hnsw.efConstruction = int(ef)
        return
    raise VtpipeError(f"efConstruction={ef} asked for, but {type(top).__name__} is not an HNSW graph")
