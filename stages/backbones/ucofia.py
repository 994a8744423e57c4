"""UCoFiA (Wang et al. 2023, "Unified Coarse-to-Fine Alignment for Video-Text Retrieval"), eval_t2v model.

Checkpoint: a raw ``state_dict()`` (``pytorch_model.bin.<epoch>``), ``module.`` stripped, loaded strictly:

* ``clip.*`` (OpenAI CLIP, QuickGELU), ``frame_position_embeddings.weight`` [77, W] and
  ``transformerClip.resblocks.{0..3}.*`` (the released eval runs sim_header seqTransf), as CLIP4Clip;
* the alignment matrices, all initialised to identities: ``global_mat_weight``, ``global_mat_weight_1``,
  ``local_mat_weight``, ``local_mat_weight1`` [D, D]; ``word_logit_weight``, ``word_mat_weight``,
  ``word_mat_weight2``, ``word_mat_weight_for_pixel`` [W, W] (W = max_words, 32); ``frame_logit_weight``,
  ``frame_mat_weight``, ``frame_mat_weight2`` [F, F] (F = max_frames, 12); ``pixel_mat_weight``,
  ``pixel_mat_weight2`` [4F, 4F] (CLS + top-3 patches per frame). Unused ones are loaded and ignored, as
  in the reference.
* the patch selector ``visual_token_selector.score_predictor.in_conv.{0.weight, 0.bias, 1.weight}``
  (LayerNorm(2D), Linear(2D, D, no bias), GELU) and ``out_conv.{0.weight, 2.weight}`` (Linear(2D, D),
  GELU, Linear(D, 1), Tanh; no biases).

What is stored per video (one video = its max_frames frames from the CLIP4Clip reader, padded frames fed
as zeros in normalised space, as the reference's dataloader does): ``5 F`` rows of D floats -
rows [0, F): the raw CLIP frame features (``ln_post(CLS) @ proj``), unit_mask False on padded frames;
rows [F, 5F): per frame, its CLS token and 3 patch tokens chosen by the selector (``ln_post(token) @
proj``, selection = the mean of 500 noisy top-3 one-hot indicators over the patch scores, sigma 0.05).
This is the reduced form: the reference scores only these selected tokens, and the selection depends on
the video alone, so the 49 patch tokens per frame need not be stored (5F x D x 4 B = 120 KiB per video for
ViT-B/32 in float32, against 1.2 MB for all 50 tokens of every frame). The reference draws the selection noise from the
global RNG (a different selection on every run); vtpipe draws it from a generator seeded with
params.selection_seed for every video, so features are deterministic and batch-independent.
The pooled vector is the video-sentence level's video feature: meanP over the seqTransf-aggregated real
frames. Captions: the EOT feature (sentence) and every one of the max_words positions (words, including
those after EOT, which the reference also scores); the stored mask is True on all max_words positions.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from stages.backbones import checkpoints as ck
from stages.backbones.base import ModelInfo, TextFeatures
from stages.backbones.clip import OPENAI_METADATA_KEYS, build_clip, checkpoint_path, clip_text_tokens
from stages.backbones.clip4clip import Clip4ClipNet, Clip4ClipVideoText
from stages.contract.errors import ConfigError

TOPK = 3
PIXELS_PER_FRAME = TOPK + 1
NOISE_SAMPLES = 500
NOISE_SIGMA = 0.05
D_MATS = ("global_mat_weight", "global_mat_weight_1", "local_mat_weight", "local_mat_weight1")
W_MATS = ("word_logit_weight", "word_mat_weight", "word_mat_weight2", "word_mat_weight_for_pixel")
F_MATS = ("frame_logit_weight", "frame_mat_weight", "frame_mat_weight2")
P_MATS = ("pixel_mat_weight", "pixel_mat_weight2")


class ScorePredictor(nn.Module):
    """Patch scores in [-1, 1] from each token, its frame's CLS and the video's summed CLS (UCoFiA's PredictorLG)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_conv = nn.Sequential(nn.LayerNorm(dim * 2), nn.Linear(dim * 2, dim, bias=False), nn.GELU())
        self.out_conv = nn.Sequential(nn.Linear(dim * 2, dim, bias=False), nn.GELU(), nn.Linear(dim, 1, bias=False),
                                      nn.Tanh())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [V, F, N, D] (token 0 = CLS) -> scores [V, F, N]."""
        v, f, n, d = tokens.shape
        x = torch.cat((tokens, tokens[:, :, :1].expand(v, f, n, d)), dim=-1)
        x = self.in_conv(x)  # [V, F, N, D]
        video = x[:, :, 0].sum(dim=1)  # [V, D]: the frames' CLS summed over the video (padded frames too)
        x = torch.cat((x, video[:, None, None, :].expand_as(x)), dim=-1)
        return self.out_conv(x).squeeze(-1)


class TokenSelector(nn.Module):
    """``visual_token_selector``: CLS + a soft top-3 of the patches per frame."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score_predictor = ScorePredictor(dim)

    def forward(self, tokens: torch.Tensor, seed: int) -> torch.Tensor:
        """tokens [V, F, N, D] -> [V, F * 4, D]; the noise of each video is drawn from its own seeded generator."""
        v, f, n, d = tokens.shape
        scores = self.score_predictor(tokens)[:, :, 1:]  # [V, F, N-1], CLS scores dropped
        out = []
        for i in range(v):  # per video, so a video's selection does not depend on its batch
            g = torch.Generator().manual_seed(int(seed))
            noise = torch.normal(0.0, 1.0, size=(f, NOISE_SAMPLES, n - 1), generator=g).to(scores.device, scores.dtype)
            noisy = scores[i][:, None, :] + noise * NOISE_SIGMA  # [F, S, N-1]
            idx = torch.sort(torch.topk(noisy, k=TOPK, dim=-1, sorted=False).indices, dim=-1).values
            indicators = torch.nn.functional.one_hot(idx, num_classes=n - 1).to(tokens.dtype).mean(dim=1)  # [F, k, N-1]
            patches = torch.einsum("fkl,fld->fkd", indicators, tokens[i, :, 1:])
            out.append(torch.cat((tokens[i, :, :1], patches), dim=1).reshape(f * PIXELS_PER_FRAME, d))
        return torch.stack(out)


class UcofiaNet(Clip4ClipNet):
    """The checkpoint's module tree: CLIP4Clip's (seqTransf) plus the alignment matrices and the selector."""

    def __init__(self, clip: nn.Module, max_words: int = 32, max_frames: int = 12, seq_layers: int = 4) -> None:
        super().__init__(clip, "seqTransf", "dp", seq_layers)
        d = int(clip.text_projection.shape[-1])
        sizes = {**dict.fromkeys(D_MATS, d), **dict.fromkeys(W_MATS, max_words), **dict.fromkeys(F_MATS, max_frames),
                 **dict.fromkeys(P_MATS, max_frames * PIXELS_PER_FRAME)}
        for name, n in sizes.items():
            self.register_parameter(name, nn.Parameter(torch.eye(n)))
        self.visual_token_selector = TokenSelector(d)
        self.max_words, self.max_frames = max_words, max_frames


class UcofiaVideoText(Clip4ClipVideoText):
    """UCoFiA: whole videos in, 5F rows per video out (see the module docstring); CLIP text with every word."""

    encodes_whole_videos = True  # the engine hands encode_video one video's frames at a time

    def __init__(self, info: ModelInfo, net: UcofiaNet, device: str = "cpu", amp_dtype: str | None = None) -> None:
        super().__init__(info, net, device, amp_dtype)
        self.max_frames = net.max_frames
        self.selection_seed = int(info.params.get("selection_seed", 0))
        if self.max_words != net.max_words:
            raise ConfigError(f"{info.name}: params.max_words {self.max_words} but the word matrices are {net.max_words}")

    def encode_video(self, units: np.ndarray, mask: np.ndarray, times_s: np.ndarray | None = None):
        """One video's frames [F, 3, H, W] (+ mask [F], False = padding, and start times [F]) -> (rows [5F, D]
        float32, row mask [5F], row times [5F]); a selected-token row carries its frame's mask and time."""
        frames = torch.as_tensor(np.asarray(units), dtype=torch.float32)
        m = torch.as_tensor(np.asarray(mask, dtype=bool))
        if frames.ndim != 4 or len(frames) != self.max_frames or m.shape != (len(frames),):
            raise ValueError(f"ucofia encodes {self.max_frames} frames per video, got {tuple(frames.shape)} / mask "
                             f"{tuple(m.shape)}; use a sampling policy with max_frames={self.max_frames}")
        frames = frames.clone()
        frames[~m] = 0.0  # the reference pads with zeros after normalisation
        rows = self.run_forward(lambda x: self._video_rows(x[None])[0], frames, 4)
        times = np.full(len(m), np.nan) if times_s is None else np.asarray(times_s, np.float64)
        fm = m.numpy()
        return (rows.numpy(), np.concatenate([fm, np.repeat(fm, PIXELS_PER_FRAME)]),
                np.concatenate([times, np.repeat(times, PIXELS_PER_FRAME)]))

    def _video_rows(self, frames: torch.Tensor) -> torch.Tensor:
        v, f = frames.shape[:2]
        visual = self.clip.visual
        x = visual.transformer(visual._embeds(frames.flatten(0, 1)))
        hidden = visual.ln_post(x) @ visual.proj  # every token, as UCoFiA's encode_image(return_hidden=True)
        d = hidden.shape[-1]
        allt = hidden.reshape(v, f, -1, d)
        pixels = self.net.visual_token_selector(allt, self.selection_seed)
        return torch.cat((allt[:, :, 0], pixels), dim=1)

    def pool(self, unit_features: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        frames = unit_features[: self.max_frames]
        fmask = None if mask is None else np.asarray(mask, bool)[: self.max_frames]
        return super().pool(frames, fmask)  # meanP over the seqTransf-aggregated real frames

    def encode_text(self, captions: Sequence[str]) -> TextFeatures:
        """Sentence = EOT feature; words = all max_words positions (mask all True: UCoFiA scores every one)."""
        ids = self.tokenizer(list(captions)) if len(captions) else torch.zeros(0, self.max_words, dtype=torch.long)
        with torch.inference_mode(), self.autocast():
            tokens, pooled, _ = clip_text_tokens(self.clip, ids.to(self.device))
        tokens = tokens.float().cpu().numpy()
        return TextFeatures(pooled=pooled.float().cpu().numpy(), tokens=tokens, mask=np.ones(tokens.shape[:2], bool))

    def head(self) -> dict[str, np.ndarray]:
        """The alignment matrices and the logit scale, for stages.retrieval.ucofia_similarity."""
        names = ("global_mat_weight", "global_mat_weight_1", "frame_logit_weight", "local_mat_weight",
                 "word_mat_weight", "pixel_mat_weight", "pixel_mat_weight2", "word_mat_weight2")
        out = {n: getattr(self.net, n).detach().float().cpu().numpy() for n in names}
        out["logit_scale"] = np.float32(self.clip.logit_scale.detach().float().exp().item())
        return out


def load(info: ModelInfo, weights: Mapping[str, str | None], device: str = "cpu", amp_dtype: str | None = None,
         allow_random: bool = False) -> UcofiaVideoText:
    """Registry loader for family "ucofia"."""
    p = info.params
    key, path = checkpoint_path(info, weights)
    max_frames = int((info.sampling or {}).get("max_frames", 12))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(p.get("seed", 0)))
        net = UcofiaNet(build_clip(p), int(p.get("max_words", 32)), max_frames, int(p.get("seq_layers", 4)))
    if path is None:
        ck.missing_weights(info.name, key, str(info.files.get(key, "")), allow_random)
        model = UcofiaVideoText(info, net.eval(), device, amp_dtype)
        model.random_weights = True
        return model
    obj = ck.load_torch_file(path, what=f"{info.name} checkpoint")
    sd = ck.strip_prefix(ck.unwrap_state_dict(obj, ("state_dict", "model"), what=f"{info.name} checkpoint {path!r}"))
    ck.load_strict(net, sd, ignore=[f"clip.{k}" for k in OPENAI_METADATA_KEYS], what=f"{info.name}: checkpoint {path!r}",
                   hint="a UCoFiA eval checkpoint (seqTransf, loose type) for these max_words / max_frames")
    return UcofiaVideoText(info, net.eval(), device, amp_dtype)
