"""CUDA paths, run for real where a GPU is present (marker `gpu`; skipped with the reason elsewhere).

The CPU fallbacks of the same paths are tested everywhere else (test_index.py, test_geometry.py); these tests
check that the GPU gives what the CPU gives: features in fp32 within float tolerance and under autocast within
the precision's tolerance, a FAISS index cloned onto the GPU with the CPU index's neighbours.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@needs_cuda
@pytest.mark.parametrize("amp,tol", [(None, 1e-4), ("fp16", 2e-2), ("bf16", 5e-2)])
def test_model_features_on_cuda_match_the_cpu(amp, tol):
    from stages.backbones.registry import load_model

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(4, 240, 320, 3), dtype=np.uint8)
    cpu = load_model("clip-vit-b-32", allow_random=True, device="cpu")
    gpu = load_model("clip-vit-b-32", allow_random=True, device="cuda", amp_dtype=amp)
    units = torch.from_numpy(cpu.preprocess()(frames))
    a = cpu.encode_units(units).numpy()
    b = gpu.encode_units(units).numpy()
    assert gpu.precision == (amp or "fp32")
    assert np.abs(a - b).max() <= tol * max(1.0, np.abs(a).max())


@needs_cuda
def test_faiss_index_on_the_gpu_finds_the_cpu_neighbours():
    import faiss

    from stages.ann.gpu import num_gpus, to_cpu, to_gpu

    if num_gpus() == 0:
        pytest.skip("this faiss build sees no GPU")
    rng = np.random.default_rng(1)
    xb = rng.standard_normal((20000, 64)).astype(np.float32)
    xq = rng.standard_normal((100, 64)).astype(np.float32)
    cpu = faiss.IndexFlatIP(64)
    cpu.add(xb)
    gpu = to_gpu(cpu)
    _, i_cpu = cpu.search(xq, 10)
    _, i_gpu = gpu.search(xq, 10)
    assert (i_cpu == i_gpu).mean() > 0.99  # float summation order may swap near-equal neighbours
    back = to_cpu(gpu)
    assert back.ntotal == cpu.ntotal

