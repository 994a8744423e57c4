"""The index types an expert would try for n vectors of dimension d under a memory budget.

    n <= flat_max and the raw vectors fit     Flat only: exact, and as fast as anything at this size
    raw vectors (plus a graph) fit            HNSW32 (efConstruction 40), HNSW32 built with efConstruction 16
                                              (4x quicker to build, a little less accurate), IVF{nlist},Flat,
                                              IVF{4 nlist}_HNSW32,Flat (graph coarse quantizer, from 200k
                                              vectors), IVF{nlist},PQ{d/4}x4fs,RFlat (fast-scan codes re-ranked
                                              with the raw vectors)
    1 byte per dimension fits                 HNSW32_SQ8, IVF{nlist},SQ8
    otherwise                                 OPQ{m},IVF{nlist},PQ{m}, the largest code (m bytes) that fits

nlist ~ 2 sqrt(n) (``nlist_for``). Each candidate carries its memory estimate; the ones over the budget are
returned separately with the reason, so the choice can say what it did not try and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stages.ann.budget import hnsw_bytes, ivf_bytes, nlist_for, parse_memory
from stages.contract.errors import VtpipeError

FLAT_MAX = 50_000  # exact search up to this many vectors
HNSW_M = 32
FAST_EF_CONSTRUCTION = 16
IVF_HNSW_MIN = 200_000  # from here a graph coarse quantizer with 4x the lists pays off
PQ_BYTES = (64, 48, 32, 24, 16, 12, 8, 4)  # code sizes tried when memory is short, largest first


@dataclass(frozen=True)
class Candidate:
    template: str  # FAISS factory string; "{nlist}" stands for the list count
    family: str  # flat | hnsw | ivf
    estimated_bytes: int
    nlist: int = 0  # IVF lists at full size
    graph_quantizer: bool = False
    build_params: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def factory(self, nlist: int | None = None) -> str:
        return self.template.format(nlist=self.nlist if nlist is None else nlist)

    @property
    def label(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.build_params.items())
        return self.factory() + extra


def _pq_code(d: int, n: int, budget: int, nlist: int) -> Candidate | None:
    nbits = 8 if n >= 39 * 256 else 4  # 8-bit codebooks need ~10k training vectors
    for m in PQ_BYTES:
        if m > d:
            continue
        dout = d if d % m == 0 else max(m, (d // m) * m)
        opq = f"OPQ{m}" if dout == d else f"OPQ{m}_{dout}"
        size = ivf_bytes(n, d, nlist, m * nbits // 8) + 4 * d * dout + 4 * (1 << nbits) * dout
        if size <= budget:
            code = f"PQ{m}" if nbits == 8 else f"PQ{m}x{nbits}"
            return Candidate(f"{opq},IVF{{nlist}},{code}", "ivf", size, nlist,
                             note=f"compressed to {m * nbits // 8} bytes per vector to fit the budget")
    return None


def candidates(n: int, d: int, max_memory: int | str, flat_max: int = FLAT_MAX
               ) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """(candidates that fit the budget, [{factory, estimated_bytes, why}] of those that do not)."""
    if n <= 0 or d <= 0:
        raise VtpipeError(f"cannot choose an index for {n} vectors of dimension {d}")
    budget = parse_memory(max_memory)
    raw = 4 * n * d
    if n <= flat_max and raw <= budget:
        return [Candidate("Flat", "flat", raw, note=f"{n} vectors <= {flat_max}: exact search")], []
    nlist = nlist_for(n)
    fast = {"efConstruction": FAST_EF_CONSTRUCTION}
    pq_m = max(2, (d // 4) // 2 * 2)  # fast-scan codes of 2 bits per dimension (4-bit, d/4 sub-quantizers)
    pool = [
        Candidate(f"HNSW{HNSW_M}", "hnsw", hnsw_bytes(n, d, HNSW_M), note="graph over the raw vectors"),
        Candidate(f"HNSW{HNSW_M}", "hnsw", hnsw_bytes(n, d, HNSW_M), build_params=fast,
                  note="graph over the raw vectors, quicker build"),
        Candidate("IVF{nlist},Flat", "ivf", ivf_bytes(n, d, nlist, 4 * d), nlist, note="inverted lists, raw vectors"),
        Candidate(f"IVF{{nlist}},PQ{pq_m}x4fs,RFlat", "ivf", ivf_bytes(n, d, nlist, pq_m // 2) + raw, nlist,
                  note="fast-scan PQ codes, re-ranked with the raw vectors"),
    ]
    if n >= IVF_HNSW_MIN:
        big = min(4 * nlist, 65536)
        pool.append(Candidate(f"IVF{{nlist}}_HNSW{HNSW_M},Flat", "ivf", ivf_bytes(n, d, big, 4 * d, HNSW_M), big,
                              graph_quantizer=True, note="more lists, found through a graph"))
    pool += [
        Candidate(f"HNSW{HNSW_M}_SQ8", "hnsw", hnsw_bytes(n, d, HNSW_M, code_bytes=d),
                  note="graph over 1-byte-per-dimension codes"),
        Candidate("IVF{nlist},SQ8", "ivf", ivf_bytes(n, d, nlist, d), nlist, note="1 byte per dimension"),
    ]
    fits = [c for c in pool if c.estimated_bytes <= budget]
    raw_fits = any(c.estimated_bytes <= budget for c in pool[:4])
    if raw_fits:  # the 1-byte codes only matter when the raw vectors do not fit
        fits = [c for c in fits if "SQ8" not in c.template]
        pool = [c for c in pool if "SQ8" not in c.template]
    if not fits:
        pq = _pq_code(d, n, budget, nlist)
        if pq is None:
            smallest = n * (PQ_BYTES[-1] + 8) + 4 * nlist * d
            raise VtpipeError(
                f"{n} vectors of dimension {d} do not fit in max_memory={budget} bytes even as the smallest PQ "
                f"codes (needs about {smallest} bytes); raise --max-memory")
        fits = [pq]
    rejected = [{"factory": c.label, "estimated_bytes": c.estimated_bytes,
                 "why": f"needs about {c.estimated_bytes} bytes, over max_memory={budget}"}
                for c in pool if c.estimated_bytes > budget]
    return fits, rejected
