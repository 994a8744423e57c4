"""Memory budgets and sizes: parse '4G', IVF list counts, the memory an index type needs."""

from __future__ import annotations

import math
import re

import numpy as np

from stages.contract.errors import VtpipeError


def parse_memory(text: str | int) -> int:
    """'4G' / '512M' / '1.5GB' / 1073741824 -> bytes."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        if text <= 0:
            raise VtpipeError(f"memory budget must be positive, got {text}")
        return int(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise VtpipeError(f"cannot read memory size {text!r}; write it like 512M or 4G")
    mult = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * mult)


def nlist_for(n: int) -> int:
    """IVF list count: the power of two nearest 2*sqrt(n), with at least 39 training points per list.

    2*sqrt(n) keeps k-means training and list assignment (both ~ n * nlist * d) affordable on a few CPU cores;
    at 1M vectors each probe scans ~500 vectors, so tens of probes stay >= 20x cheaper than exact search.
    """
    target = 2.0 * math.sqrt(max(n, 1))
    nlist = 1 << max(0, int(round(math.log2(target))))
    while nlist > 1 and nlist * 39 > n:
        nlist //= 2
    return int(min(max(nlist, 1), 65536))


def hnsw_bytes(n: int, d: int, m: int, code_bytes: int | None = None) -> int:
    """Vectors (float32, or code_bytes each) plus the graph: 2M level-0 links of int32, ~20% upper levels."""
    return (4 * d if code_bytes is None else code_bytes) * n + int(n * m * 2 * 4 * 1.2)


def ivf_bytes(n: int, d: int, nlist: int, code_bytes: int, quantizer_m: int = 0) -> int:
    """Codes plus 8-byte ids plus the coarse centroids (and their HNSW graph when quantizer_m > 0)."""
    coarse = 4 * nlist * d + (int(nlist * quantizer_m * 2 * 4 * 1.2) if quantizer_m else 0)
    return n * (code_bytes + 8) + coarse
