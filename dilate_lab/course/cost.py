"""Global attention against a sliding window, measured as the map grows (lesson 01).

Global attention is written out the way a ViT computes it, ``softmax(Q K^T / sqrt(d)) V``
with the (N, N) matrix in memory, N = H * W; SWDA is ``dilate_lab.swda``. For each
map side the forward pass of both is timed (the best of ``repeats`` runs, taking
turns: on a shared machine the fastest run is the one least disturbed)
and its peak memory measured with ``bench.peak_memory_bytes`` (exact allocator
accounting on CPU, ``max_memory_allocated`` on CUDA).

Fused kernels such as FlashAttention avoid *storing* the (N, N) matrix, but still
compute all N^2 scores: the time grows as N^2 either way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from .._checks import check_dilation, check_kernel_size, check_positive_int
from ..bench.measure import peak_memory_bytes
from ..functional import swda

__all__ = ["global_attention", "measure_global_vs_window"]


def global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Every pixel attends to every pixel. q, k, v: (B, heads, H, W, d) -> same shape."""
    B, heads, H, W, d = q.shape
    q_rows = q.reshape(B, heads, H * W, d)  # B, heads, N, d
    k_rows = k.reshape(B, heads, H * W, d)  # B, heads, N, d
    v_rows = v.reshape(B, heads, H * W, d)  # B, heads, N, d
    scores = (q_rows @ k_rows.transpose(-1, -2)) * d**-0.5  # B, heads, N, N
    out = torch.softmax(scores, dim=-1) @ v_rows  # B, heads, N, d
    return out.reshape(B, heads, H, W, d)


def _times_ms(fn, device: torch.device, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def measure_global_vs_window(
    sides: Sequence[int] = (8, 16, 24, 32, 48, 64),
    heads: int = 1,
    head_dim: int = 32,
    kernel_size: int = 3,
    dilation: int = 1,
    device=None,
    repeats: int = 5,
    seed: int = 0,
) -> list[dict]:
    """Forward time (best of ``repeats``, ms) and peak memory of global attention and SWDA on side x side maps.

    Returns one dict per side: ``side``, ``tokens`` (N), ``global_scores`` (N^2),
    ``window_scores`` (N k^2), ``global_ms``, ``window_ms``, ``global_peak_bytes``,
    ``window_peak_bytes`` (None where the device has no exact counter).
    """
    for name, value in (("heads", heads), ("head_dim", head_dim), ("repeats", repeats)):
        check_positive_int(value, name)
    check_kernel_size(kernel_size)
    check_dilation(dilation)
    if not sides:
        raise ValueError("sides must list at least one map side, e.g. (8, 16, 32)")
    for side in sides:
        check_positive_int(side, "sides[...]")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gen = torch.Generator().manual_seed(seed)
    rows = []
    with torch.no_grad():
        for side in sides:
            q, k, v = (
                torch.randn(1, heads, side, side, head_dim, generator=gen).to(device) for _ in range(3)
            )
            run_global = lambda: global_attention(q, k, v)  # noqa: E731
            run_window = lambda: swda(q, k, v, kernel_size, dilation)  # noqa: E731
            run_global(), run_window()  # warm-up
            global_times, window_times = [], []
            for _ in range(repeats):  # take turns, so that load elsewhere hits both alike
                global_times += _times_ms(run_global, device, 1)
                window_times += _times_ms(run_window, device, 1)
            n = side * side
            rows.append(
                {
                    "side": side,
                    "tokens": n,
                    "global_scores": heads * n * n,
                    "window_scores": heads * n * kernel_size**2,
                    "global_ms": min(global_times),
                    "window_ms": min(window_times),
                    "global_peak_bytes": peak_memory_bytes(run_global, device),
                    "window_peak_bytes": peak_memory_bytes(run_window, device),
                }
            )
    return rows
