"""DRL token-wise similarities (TI / WTI), usable as a blockwise ``score_fn``.

Follows DRL's ``wti_interaction`` (Wang et al. 2022, "Disentangled Representation Learning for
Text-Video Retrieval"): tokens are L2-normalised, ``A[a, b, t, v] = text[a, t] . video[b, v]``, then
multiplied by both masks (padded positions become 0, *not* -inf - so a padded position can win a max
when every real similarity is negative; reproduced on purpose), and

* ``"ti"``:  ``(sum_t max_v A / n_text_tokens + sum_v max_t A / n_video_frames) / 2``;
* ``"wti"``: ``(sum_t w_t max_v A + sum_v w_v max_t A) / 2`` with ``w = softmax(weight logits)`` over
  the real tokens (padded logits are set to -inf first), the logits being the model's
  ``text_weight_fc`` / ``video_weight_fc`` outputs.

The blockwise rank functions take 2-D feature arrays, so token sets travel packed one item per row:
:func:`pack_tokens` -> ``[N, L * D + 2 * L]`` (tokens, mask, weight logits) and :func:`drl_score_fn`
unpacks a block of each side (a small-scale reference; it holds ``block * G * Lt * Lv`` floats).

:class:`TokenScorer` is the scalable form the evaluate stage uses: each side (texts, videos, a query bank)
is a :class:`TokenSets` - the *real* tokens only, L2-normalised once, stored ragged ``[sum_len, D]`` with
their weights (WTI: the model's softmax weights; TI: ``1 / n``) - and items travel through the blockwise
rank functions as ``[N, 2]`` id rows ``(side, index)`` (:meth:`TokenScorer.ids`). A block is scored by one
float32 GEMM between the two sides' real tokens (chunked to ``max_block_bytes``) and a numba kernel that,
per pair, sweeps the ``n_a x n_b`` tile once (row maxes and column maxes together) and forms
``(sum_a w_a max_b s + sum_b w_b max_a s) / 2`` in float64. The formula is symmetric in the two sides, so the
same scorer serves t2v (text queries) and v2t (video queries).

Padding. DRL pads every caption to ``max_words`` tokens and every video to ``max_frames`` frames, and the
padded positions take part in the maxima with ``s = 0``. So an item with fewer real positions than its
side's ``padded_len`` contributes a 0 to every max taken over it (``pad`` flag); with only real positions
in the maxima a max can be negative, with padding it is at least 0. This matters only when every
similarity of a token to the other item is negative, and it reproduces DRL's numbers exactly.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .blocks import DEFAULT_MAX_BLOCK_BYTES

__all__ = ["drl_similarity", "pack_tokens", "drl_score_fn", "TokenSets", "TokenScorer", "uniform_weights"]

MODES = ("ti", "wti")


def _masked_softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    z = np.where(mask > 0, logits.astype(np.float64), -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def drl_similarity(text_tokens, text_mask, video_tokens, video_mask, mode: str = "wti",
                   text_weight_logits=None, video_weight_logits=None) -> np.ndarray:
    """``[A, B]`` DRL similarity between ``A`` token sets ``[A, Lt, D]`` and ``B`` frame sets ``[B, Lv, D]``.

    Masks are ``[A, Lt]`` / ``[B, Lv]`` (1 = real token). ``"wti"`` needs the weight logits
    ``[A, Lt]`` / ``[B, Lv]``. Memory O(A * B * Lt * Lv): call it on blocks (see :func:`drl_score_fn`).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")
    t = np.asarray(text_tokens, dtype=np.float32)
    v = np.asarray(video_tokens, dtype=np.float32)
    tm = np.asarray(text_mask, dtype=np.float32)
    vm = np.asarray(video_mask, dtype=np.float32)
    if t.ndim != 3 or v.ndim != 3 or t.shape[2] != v.shape[2]:
        raise ValueError(f"token arrays must be [N, L, D] with the same D, got {t.shape} and {v.shape}")
    t = t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    A = np.einsum("atd,bvd->abtv", t, v, optimize=True)
    A = A * tm[:, None, :, None] * vm[None, :, None, :]
    t2v = A.max(axis=3)  # [a, b, t]
    v2t = A.max(axis=2)  # [a, b, v]
    if mode == "ti":
        t2v = t2v.sum(axis=2) / tm.sum(axis=1)[:, None]
        v2t = v2t.sum(axis=2) / vm.sum(axis=1)[None, :]
    else:
        if text_weight_logits is None or video_weight_logits is None:
            raise ValueError("mode='wti' needs text_weight_logits and video_weight_logits")
        wt = _masked_softmax(np.asarray(text_weight_logits), tm)
        wv = _masked_softmax(np.asarray(video_weight_logits), vm)
        t2v = np.einsum("abt,at->ab", t2v, wt)
        v2t = np.einsum("abv,bv->ab", v2t, wv)
    return (t2v + v2t) / 2.0


def pack_tokens(tokens, mask, weight_logits=None) -> np.ndarray:
    """``[N, L, D]`` tokens + ``[N, L]`` mask (+ weight logits) -> one float32 row per item."""
    tokens = np.asarray(tokens, dtype=np.float32)
    n, L, d = tokens.shape
    w = np.zeros((n, L), np.float32) if weight_logits is None else np.asarray(weight_logits, np.float32)
    return np.ascontiguousarray(
        np.concatenate([tokens.reshape(n, L * d), np.asarray(mask, np.float32), w], axis=1))


def _unpack(x: np.ndarray, L: int, d: int):
    n = x.shape[0]
    return x[:, : L * d].reshape(n, L, d), x[:, L * d: L * d + L], x[:, L * d + L: L * d + 2 * L]


def drl_score_fn(text_len: int, video_len: int, dim: int, mode: str = "wti", queries: str = "text"):
    """A ``score_fn(query_block, gallery)`` for the blockwise rank functions over :func:`pack_tokens`
    rows. ``queries="text"`` for t2v (queries are packed texts, gallery packed videos), ``"video"`` for
    v2t. Keep ``block`` small: one block holds ``block * G * Lt * Lv`` floats."""
    if queries not in ("text", "video"):
        raise ValueError(f"queries={queries!r} is not 'text' or 'video'")

    def score_fn(q: np.ndarray, g: np.ndarray) -> np.ndarray:
        if queries == "text":
            t, tm, tw = _unpack(q, text_len, dim)
            v, vm, vw = _unpack(g, video_len, dim)
            return drl_similarity(t, tm, v, vm, mode, tw, vw)
        v, vm, vw = _unpack(q, video_len, dim)
        t, tm, tw = _unpack(g, text_len, dim)
        return np.ascontiguousarray(drl_similarity(t, tm, v, vm, mode, tw, vw).T)

    return score_fn


# --------------------------------------------------------------------------------------------------
# scalable token-wise scoring (the evaluate stage's path)
# --------------------------------------------------------------------------------------------------


def uniform_weights(mask) -> np.ndarray:
    """TI weights: ``1 / n_real`` on real positions, 0 on padding. ``[N, L]`` float64."""
    m = np.asarray(mask, dtype=bool)
    n = m.sum(axis=1, keepdims=True)
    return np.where(m, 1.0 / np.maximum(n, 1), 0.0)


class TokenSets:
    """One side's token sets, ragged: real tokens L2-normalised (float32 ``flat [sum_len, D]``), ``offsets
    [N + 1]``, float64 ``weights [sum_len]`` and ``pad [N]`` (the item has fewer real positions than
    ``padded_len``, so DRL's padding puts a 0 into every max over it; see the module doc).

    ``tokens [N, L, D]``, ``mask [N, L]`` (True = real), ``weights [N, L]`` (WTI: the model's softmax
    weights over real positions; None: TI, ``1 / n``), ``padded_len`` (DRL's fixed length for this side;
    default ``L``). Every item needs at least one real position.
    """

    def __init__(self, tokens, mask, weights=None, padded_len: int | None = None, name: str = "items"):
        tokens = np.asarray(tokens)
        mask = np.asarray(mask, dtype=bool)
        if tokens.ndim != 3 or mask.shape != tokens.shape[:2]:
            raise ValueError(f"{name}: tokens must be [N, L, D] and mask [N, L], got {tokens.shape} and {mask.shape}")
        n, L, d = tokens.shape
        lengths = mask.sum(axis=1)
        if n and lengths.min() == 0:
            bad = int(np.flatnonzero(lengths == 0)[0])
            raise ValueError(f"{name}: item {bad} has no real position (its mask is all False)")
        w = uniform_weights(mask) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != mask.shape:
            raise ValueError(f"{name}: weights must be [N, L] = {mask.shape}, got {w.shape}")
        flat = np.ascontiguousarray(tokens[mask], dtype=np.float32)
        flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
        self.flat = flat
        self.offsets = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.weights = np.ascontiguousarray(w[mask])
        self.padded_len = int(L if padded_len is None else padded_len)
        if self.padded_len < L:
            raise ValueError(f"{name}: padded_len {self.padded_len} is shorter than the token arrays ({L})")
        self.pad = lengths < self.padded_len
        self.name = name
        self.dim = d

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def select(self, idx: np.ndarray):
        """(flat, offsets, weights, pad) of items ``idx`` (views when idx is a contiguous range)."""
        idx = np.asarray(idx, np.int64)
        if idx.size and np.all(np.diff(idx) == 1):
            a, b = int(idx[0]), int(idx[-1]) + 1
            o = self.offsets[a:b + 1]
            return (self.flat[o[0]:o[-1]], o - o[0], self.weights[o[0]:o[-1]], self.pad[a:b])
        starts, ends = self.offsets[idx], self.offsets[idx + 1]
        lens = ends - starts
        off = np.zeros(idx.size + 1, np.int64)
        np.cumsum(lens, out=off[1:])
        rows = np.repeat(starts - off[:-1], lens) + np.arange(off[-1], dtype=np.int64)
        return self.flat[rows], off, self.weights[rows], self.pad[idx]


@njit(parallel=True, cache=True)
def _token_wise_kernel(G, qoff, goff, qw, gw, qpad, gpad, out):  # pragma: no cover - compiled
    """out[a, b] = (sum_r qw_r max_c G_rc + sum_c gw_c max_r G_rc) / 2 over item a's rows r and item b's
    columns c of G (maxima start at 0 where the other item is padded, else at -inf); float64 sums."""
    nq = qoff.shape[0] - 1
    ng = goff.shape[0] - 1
    width = 0
    for b in range(ng):
        width = max(width, goff[b + 1] - goff[b])
    for a in prange(nq):
        cmax = np.empty(width)
        r0 = qoff[a]
        r1 = qoff[a + 1]
        for b in range(ng):
            c0 = goff[b]
            c1 = goff[b + 1]
            init_c = 0.0 if qpad[a] else -np.inf
            init_r = 0.0 if gpad[b] else -np.inf
            for c in range(c1 - c0):
                cmax[c] = init_c
            part_q = 0.0
            for r in range(r0, r1):
                rmax = init_r
                for c in range(c0, c1):
                    x = np.float64(G[r, c])
                    if x > rmax:
                        rmax = x
                    if x > cmax[c - c0]:
                        cmax[c - c0] = x
                part_q += qw[r] * rmax
            part_g = 0.0
            for c in range(c1 - c0):
                part_g += gw[c0 + c] * cmax[c]
            out[a, b] = 0.5 * (part_q + part_g)


class TokenScorer:
    """DRL TI / WTI as a ``score_fn`` for the blockwise rank functions (see the module doc).

    ``sides``: ``{tag: TokenSets}`` (e.g. 0 = test texts, 1 = test videos, 2 = bank texts). Pass
    ``scorer.ids(tag)`` wherever the rank functions take features; ``scorer(q, g)`` returns the float64
    ``[len(q), len(g)]`` scores. Memory per call: the two blocks' tokens plus one GEMM chunk of at most
    ``max_block_bytes``.
    """

    def __init__(self, sides: dict, max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES or 2**28):
        dims = {ts.dim for ts in sides.values()}
        if len(dims) > 1:
            raise ValueError(f"token sets have different dimensions {sorted(dims)}")
        self.sides = dict(sides)
        self.max_block_bytes = int(max_block_bytes)

    def ids(self, tag: int) -> np.ndarray:
        n = len(self.sides[tag])
        out = np.empty((n, 2))
        out[:, 0] = tag
        out[:, 1] = np.arange(n)
        return out

    def _side(self, rows: np.ndarray) -> tuple[TokenSets, np.ndarray]:
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != 2:
            raise ValueError(f"TokenScorer takes [N, 2] id rows (TokenScorer.ids), got shape {rows.shape}")
        tags = np.unique(rows[:, 0]) if rows.size else np.array([next(iter(self.sides))])
        if tags.size != 1 or int(tags[0]) not in self.sides:
            raise ValueError(f"a block mixes or names unknown sides {tags.tolist()}; known: {sorted(self.sides)}")
        return self.sides[int(tags[0])], rows[:, 1].astype(np.int64)

    def __call__(self, q: np.ndarray, g: np.ndarray) -> np.ndarray:
        qs, qi = self._side(q)
        gs, gi = self._side(g)
        out = np.empty((qi.size, gi.size))
        if out.size == 0:
            return out
        gflat, goff, gw, gpad = gs.select(gi)
        # chunk the gallery (each chunk leaves room for >= 64 query positions), then the queries
        budget = max(1, self.max_block_bytes // 4)  # float32 entries per GEMM chunk
        g_chunks = _chunks(goff, max(1, budget // 64))
        qflat, qoff, qw, qpad = qs.select(qi)
        for g0, g1 in g_chunks:
            c0, c1 = goff[g0], goff[g1]
            gf = gflat[c0:c1]
            q_cap = max(1, budget // max(1, c1 - c0))
            for a0, a1 in _chunks(qoff, q_cap):
                r0, r1 = qoff[a0], qoff[a1]
                G = qflat[r0:r1] @ gf.T
                _token_wise_kernel(G, qoff[a0:a1 + 1] - r0, goff[g0:g1 + 1] - c0, qw[r0:r1], gw[c0:c1],
                                   qpad[a0:a1], gpad[g0:g1], out[a0:a1, g0:g1])
        return out


def _chunks(offsets: np.ndarray, cap: int) -> list[tuple[int, int]]:
    """Split items (ragged, ``offsets``) into consecutive runs of at most ``cap`` positions (at least one
    item per run)."""
    n = offsets.shape[0] - 1
    out, a = [], 0
    while a < n:
        b = int(np.searchsorted(offsets, offsets[a] + cap, side="right")) - 1
        b = min(n, max(a + 1, b))
        out.append((a, b))
        a = b
    return out
