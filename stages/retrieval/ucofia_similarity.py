"""UCoFiA's coarse-to-fine similarity (eval_t2v ``_loose_similarity``) and its per-level SK-norm.

Inputs per caption: the sentence feature s (EOT) and the word features w_1..w_W (every one of max_words
positions); per video: the video vector v (meanP over the seqTransf-aggregated real frames, L2-normalised,
= the store's pooled vector), the raw frame features f_1..f_F (padded frames included) and the selected
tokens p_1..p_P (P = 4F, not normalised). With s, w, f L2-normalised, lambda = exp(logit_scale), tau = 0.01,
softmax_k over axis k and the model's matrices G, G1 (D x D), Wf (F x F), Lw (D x D), Ww, Ww2 (W x W),
Wp, Wp2 (P x P):

* video-sentence:  S1 = lambda (s G) . (v G1)
* frame-sentence:  c_j = s . f_j;  S2 = lambda sum_j c_j softmax_j((softmax_j(c / tau) Wf) / tau)
* patch-word:      A_ij = (w_i Lw) . p_j;
                   a_j = sum_i A_ij softmax_i((softmax_i(A_.j / tau) Ww) / tau)         (word level, per token)
                   b_i = sum_j A_ij softmax_j((softmax_j(A_i. / tau) Wp) / tau)          (token level, per word)
                   S3 = 1/2 [ sum_j a_j softmax_j((softmax_j(a / tau) Wp2) / tau)
                            + sum_i b_i softmax_i((softmax_i(b / tau) Ww2) / tau) ]       (no lambda)

Every score depends on one (caption, video) pair only, so blocks of captions x videos give the same
values as the reference's batched loops. SK-norm per level (``sinkhorn_bias``, as the reference's
``sinkhorn_knopp``): K = exp(B - max B) over the query bank's scores B [bank captions, videos] of that
level; b = 1 / colsum K; 4 times a = 1 / (K b), b = 1 / (a K); bias = log_softmax(log b - max B) (a
constant apart from log b, so the same ranks). Final t2v score = mean over the levels of (S_l + bias_l).
Computation in float32, as the reference.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

TAU = 1e-2
LEVELS = ("video_sentence", "frame_sentence", "patch_word")


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _sharpened(x: torch.Tensor, weight: torch.Tensor, dim: int) -> torch.Tensor:
    """softmax_dim((softmax_dim(x / tau) @ weight along dim) / tau), for dim = the last axis."""
    assert dim == -1
    return torch.softmax(torch.softmax(x / TAU, dim=-1) @ weight / TAU, dim=-1)


def _levels_block(sent, words, video, frames, pixels, h) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s, w, f = _unit(sent), _unit(words), _unit(frames)  # [n, D], [n, W, D], [v, F, D]
    lam = h["logit_scale"]
    s1 = lam * (s @ h["global_mat_weight"]) @ (video @ h["global_mat_weight_1"]).t()
    c = torch.einsum("nd,vfd->nvf", s, f)
    s2 = lam * (c * _sharpened(c, h["frame_logit_weight"], -1)).sum(-1)
    n, nw, d = w.shape
    nv, npix, _ = pixels.shape
    a = ((w.reshape(-1, d) @ h["local_mat_weight"]) @ pixels.reshape(-1, d).t()).view(n, nw, nv, npix)
    a_w = a.permute(0, 2, 3, 1)  # [n, v, P, W]: over words
    word_level = (a_w * _sharpened(a_w, h["word_mat_weight"], -1)).sum(-1)  # [n, v, P]
    pix_level = (a * _sharpened(a, h["pixel_mat_weight"], -1)).sum(-1)  # [n, W, v]
    sent2frame = (word_level * _sharpened(word_level, h["pixel_mat_weight2"], -1)).sum(-1)
    b_w = pix_level.permute(0, 2, 1)  # [n, v, W]
    video2word = (b_w * _sharpened(b_w, h["word_mat_weight2"], -1)).sum(-1)
    return s1, s2, (sent2frame + video2word) / 2


def ucofia_levels(sent, words, video, frames, pixels, head: Mapping[str, np.ndarray],
                  max_pair_floats: int = 1 << 24) -> np.ndarray:
    """[3, N, V] float32 level scores (video-sentence, frame-sentence, patch-word) of N captions x V videos.

    sent [N, D], words [N, W, D], video [V, D] (L2-normalised pooled), frames [V, F, D], pixels [V, P, D].
    Blocks keep the [n, W, v, P] word-token tensor under `max_pair_floats` floats."""
    h = {k: _t(v) for k, v in head.items()}
    sent, words, video, frames, pixels = map(_t, (sent, words, video, frames, pixels))
    n_all, nw = words.shape[:2]
    v_all, npix = pixels.shape[:2]
    if frames.shape[0] != v_all or video.shape[0] != v_all or sent.shape[0] != n_all:
        raise ValueError("ucofia_levels: caption and video inputs disagree in count")
    out = np.zeros((3, n_all, v_all), np.float32)
    vb = max(1, min(v_all, max_pair_floats // max(1, nw * npix * 64)))
    nb = max(1, max_pair_floats // max(1, nw * npix * vb))
    with torch.inference_mode():
        for v0 in range(0, v_all, vb):
            vs = slice(v0, v0 + vb)
            for n0 in range(0, n_all, nb):
                ns = slice(n0, n0 + nb)
                for k, lv in enumerate(_levels_block(sent[ns], words[ns], video[vs], frames[vs], pixels[vs], h)):
                    out[k, ns, vs] = lv.numpy()
    return out


def sinkhorn_bias(bank_scores, n_iters: int = 4) -> np.ndarray:
    """Per-video bias [V] from a level's query-bank scores [N_bank, V] (UCoFiA's sinkhorn_knopp, float32)."""
    x = _t(bank_scores)
    m = x.max()
    k = torch.exp(x - m)
    b = 1 / k.sum(0)
    for _ in range(int(n_iters)):
        a = 1 / (k @ b)
        b = 1 / (a @ k)
    return torch.log_softmax(b.log() - m, dim=0).numpy()


def ucofia_scores(test_levels: np.ndarray, bank_levels: np.ndarray | None = None, n_iters: int = 4) -> dict:
    """The t2v matrix [N, V]: mean over levels of (S_l + bias_l) with SK-norm (bank given), else of S_l."""
    biases = None if bank_levels is None else np.stack([sinkhorn_bias(b, n_iters) for b in bank_levels])
    adj = test_levels if biases is None else test_levels + biases[:, None, :]
    return {"scores": (adj.sum(0) / np.float32(len(adj))).astype(np.float32), "biases": biases}


class MatrixScorer:
    """A precomputed t2v matrix as a blockwise ``score_fn``: items travel as [N, 2] id rows (side, index)
    like TokenScorer's; (text, video) blocks read the matrix, (video, text) blocks its transpose."""

    TEXT, VIDEO = 0, 1

    def __init__(self, t2v: np.ndarray) -> None:
        self.t2v = np.asarray(t2v, np.float32)

    def ids(self, tag: int) -> np.ndarray:
        n = self.t2v.shape[0] if tag == self.TEXT else self.t2v.shape[1]
        out = np.empty((n, 2))
        out[:, 0], out[:, 1] = tag, np.arange(n)
        return out

    def __call__(self, q: np.ndarray, g: np.ndarray) -> np.ndarray:
        qi, gi = q[:, 1].astype(np.int64), g[:, 1].astype(np.int64)
        if len(q) and int(q[0, 0]) == self.VIDEO:
            return self.t2v[np.ix_(gi, qi)].T
        return self.t2v[np.ix_(qi, gi)]
