"""The whole DilateFormer-Tiny against the official code path: ``python -m dilate_lab.bench --model``.

The SWDA benchmark times the attention alone, where the compiled kernel is 40-100x
faster than unfold; a whole model also spends its time in the GEMMs and convolutions
both versions share, and in moving data between layouts. This module measures what
a user gets: images per second for inference and for a training step, each against
the official model's code path on the same weights, in the same run.

The reference (``reference_model``) is this package's DilateFormer with the official
code path swapped in, module by module, weights untouched:

- ``UnfoldMSDA``: multi-scale dilated attention as the paper defines it and the
  official code computes it: a 1x1 conv to q, k, v on a channels-first map, per
  dilation group ``nn.Unfold`` of K and V (dilation r, zero padding r*(k//2)), the
  logits q.K over the k*k window, a softmax over it, the weighted sum of V; each
  group's output written into its slice of a per-group buffer. The official code
  wrote them into a view of its input, which autograd had saved for backward (the
  in-place bug); this buffer is a ``clone`` of it, the usual fix.
- ``_OfficialGlobalAttention``: q @ k^T, softmax, @ v as explicit matmuls.
- ``_OfficialBlock``: the block on contiguous channels-first maps, permuting to
  channels-last and back around the attention and the MLP (copies, not views).
- ``_OfficialDilateFormer``: no ``channels_last`` memory format.

Besides the two speeds, the table gives the fraction of the sgemm roofline reached
(``count_flops``'s multiply-accumulates per image against a large ``torch.mm``
timed in the same run), the bfloat16 autocast speed-up, and where the forward's
time goes (``profile_shares``).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..flops import count_flops
from ..nn.attention import GlobalAttention
from ..nn.blocks import _Block
from ..nn.dilateformer import DilateFormer, dilateformer_tiny
from ..nn.msda import MultiDilateAttention
from .measure import _threads

__all__ = [
    "ModelSettings",
    "UnfoldMSDA",
    "reference_model",
    "unfold_swda",
    "sgemm_gflops",
    "profile_shares",
    "run_model_benchmark",
    "format_model_report",
    "SHARE_CATEGORIES",
]


# ---------------------------------------------------------------------------
# the official code path, on this package's modules and weights
# ---------------------------------------------------------------------------
def unfold_swda(q, k, v, heads: int, kernel_size: int, dilation: int, scale: float) -> torch.Tensor:
    """SWDA of one group from the paper's definition, channels-first: q, k, v each
    (B, heads*d, H, W); returns (B, H, W, heads*d).

    ``nn.Unfold`` with dilation r and padding r*(k//2) lists, for every pixel, the k*k
    keys (and values) of its dilated window, zero vectors beyond the border; the
    softmax runs over those k*k logits, padded ones included.
    """
    B, C, H, W = q.shape
    d, kk, N = C // heads, kernel_size * kernel_size, H * W
    unfold = nn.Unfold(kernel_size, dilation, dilation * (kernel_size // 2), 1)
    q = q.reshape(B, heads, d, 1, N).permute(0, 1, 4, 3, 2)  # B, h, N, 1, d
    k = unfold(k).reshape(B, heads, d, kk, N).permute(0, 1, 4, 2, 3)  # B, h, N, d, k*k
    attn = (q @ k * scale).softmax(dim=-1)  # B, h, N, 1, k*k
    v = unfold(v).reshape(B, heads, d, kk, N).permute(0, 1, 4, 3, 2)  # B, h, N, k*k, d
    out = attn @ v  # B, h, N, 1, d
    return out.transpose(1, 2).reshape(B, H, W, C)  # B, H, W, h*d


class UnfoldMSDA(MultiDilateAttention):
    """MultiDilateAttention computed as the official code does (``unfold_swda`` per
    group), with its in-place bug fixed by a ``clone``; same parameters, same values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        G = self.num_dilation
        x = x.permute(0, 3, 1, 2)  # B, C, H, W
        qkv = self.qkv(x).reshape(B, 3, G, C // G, H, W).permute(2, 1, 0, 3, 4, 5)  # G, 3, B, C/G, H, W
        # the official code writes each group's output into this view of x, which the
        # qkv convolution saved for backward; the clone gives it its own memory
        x = x.reshape(B, G, C // G, H, W).permute(1, 0, 3, 4, 2).clone()  # G, B, H, W, C/G
        for i, r in enumerate(self.dilation):
            x[i] = unfold_swda(
                qkv[i][0], qkv[i][1], qkv[i][2], self.num_heads // G, self.kernel_size, r, self.scale
            )  # B, H, W, C/G
        x = x.permute(1, 2, 3, 0, 4).reshape(B, H, W, C)  # B, H, W, C
        return self.proj_drop(self.proj(x))  # B, H, W, C


class _OfficialGlobalAttention(GlobalAttention):
    """Global attention as the official code computes it: explicit q @ k^T, softmax, @ v."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, self.head_dim)  # B, N, 3, h, d
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B, h, N, d
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)  # B, h, N, N
        x = (attn @ v).transpose(1, 2).reshape(B, H, W, C)  # B, H, W, C
        return self.proj_drop(self.proj(x))  # B, H, W, C


class _OfficialBlock(_Block):
    """The official block: contiguous channels-first maps in and out, permutes that copy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()  # B, C, H, W (the official maps are plain contiguous tensors)
        x = x + self.pos_embed(x)  # B, C, H, W
        x = x.permute(0, 2, 3, 1)  # B, H, W, C
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2).contiguous()  # B, C, H, W


class _OfficialDilateFormer(DilateFormer):
    """No channels_last memory format anywhere: the official model's layouts."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # B, C, H/4, W/4
        for stage in self.stages:
            x = stage(x)  # B, C', H', W'
        x = x.flatten(2).transpose(1, 2)  # B, H'*W', C'
        return self.norm(x).mean(dim=1)  # B, C'


_SWAPS = (
    (MultiDilateAttention, UnfoldMSDA),
    (GlobalAttention, _OfficialGlobalAttention),
    (_Block, _OfficialBlock),
    (DilateFormer, _OfficialDilateFormer),
)


def reference_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that runs the official code path on the same weights.

    Each module's class is swapped for its official-path subclass (defined above):
    the parameters, buffers and settings are those of the copy, untouched, so that
    the two models compute the same function and differ only in how.
    """
    reference = copy.deepcopy(model)
    for module in reference.modules():
        for fast, official in _SWAPS:
            if isinstance(module, fast) and not isinstance(module, official):
                module.__class__ = official  # e.g. a DilateBlock becomes an _OfficialBlock
                break
    return reference


# ---------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSettings:
    """What ``run_model_benchmark`` measures: the issue's sizes by default, tiny ones
    with ``quick()`` (a few seconds; the targets only apply to the full sizes)."""

    img_size: int = 224
    infer_batch: int = 8
    train_batch: int = 4
    repeats: int = 5
    threads: int = 2
    sgemm_size: int = 2048
    profile_passes: int = 3
    compile: bool = False

    @classmethod
    def quick(cls, **changes) -> "ModelSettings":
        return cls(**{"img_size": 32, "infer_batch": 1, "train_batch": 2, "repeats": 1,
                      "sgemm_size": 256, "profile_passes": 1, **changes})


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sgemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s (2 per multiply-accumulate) of one large ``torch.mm``: the roof
    for the model's GEMMs and convolutions on this machine, these threads, right now."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm: threads up, buffers allocated
    return 2 * size**3 / _median_seconds(lambda: torch.mm(a, b), repeats) / 1e9


def _inference_step(model: nn.Module, images: torch.Tensor, autocast: bool = False):
    def step():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(images)

    return step


def _training_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
    """Forward, cross-entropy, backward and an SGD step (a tiny learning rate, so the
    weights stay where they were for the other repeats)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-9, momentum=0.9)

    def step():
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _round_robin(steps: dict[str, Callable], repeats: int) -> dict[str, float]:
    """Median seconds of each step, the steps taking turns (a burst of load elsewhere
    hits them all alike); each timed call follows one untimed call of the same step."""
    times = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm: first-call costs (the kernel's load, allocator growth) left out
    for _ in range(repeats):
        for name, step in steps.items():
            step()
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _autocast_step(model: nn.Module, images: torch.Tensor):
    """The bfloat16-autocast inference step, or the reason it does not run."""
    step = _inference_step(model, images, autocast=True)
    try:
        step()
    except Exception as error:  # noqa: BLE001 - reported in the table, not raised
        return None, f"not available ({type(error).__name__}: {str(error).splitlines()[0][:80]})"
    return step, None


def _compiled_step(model: nn.Module, images: torch.Tensor):
    """``torch.compile`` of the whole model, inference, or the reason it does not run."""
    try:
        compiled = torch.compile(model)
        step = _inference_step(compiled, images)
        step()
        step()  # the second call must not recompile either
    except Exception as error:  # noqa: BLE001 - reported in the table, not raised
        return None, f"not available ({type(error).__name__}: {str(error).splitlines()[0][:80]})"
    return step, None


# ---------------------------------------------------------------------------
# where the forward's time goes
# ---------------------------------------------------------------------------
SHARE_CATEGORIES: tuple[str, ...] = ("copies", "GEMMs", "convolutions", "attention", "other")
"""The rows of the profile share table, in order."""

_GEMMS = {"aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul"}
_COPIES = {"aten::copy_", "aten::cat", "aten::contiguous", "aten::clone"}


def _category(name: str) -> str | None:
    if "swda" in name or "scaled_dot_product" in name:
        return "attention"
    if name in _GEMMS:
        return "GEMMs"
    if "conv" in name:
        return "convolutions"
    if name in _COPIES:
        return "copies"
    return None


def _outer_category(event) -> str:
    """The category of the outermost operator around ``event`` (or itself) that has one.

    Time is charged to what the model asked for: a copy inside ``aten::linear`` (the
    bias broadcast into the output before the GEMM) is the GEMM's, a ``contiguous``
    inside the attention operator is the attention's; only copies the model's own code
    makes (permutes made contiguous, concatenations, clones) count as copies.
    """
    chain = [event]
    while chain[-1].cpu_parent is not None:
        chain.append(chain[-1].cpu_parent)
    for outer in reversed(chain):
        category = _category(outer.name)
        if category is not None:
            return category
    return "other"


def profile_shares(model: nn.Module, images: torch.Tensor, passes: int = 3) -> dict[str, float]:
    """Percent of the profiled CPU time of ``passes`` inference forwards (eval mode) per category
    (``SHARE_CATEGORIES``; they add up to 100), plus ``"aten::copy_ (any caller)"``:
    every copy's own time, the GEMMs' bias broadcasts included."""
    from torch.profiler import ProfilerActivity, profile

    from .measure import _quiet_stderr

    step = _inference_step(model, images)
    training = model.training
    model.eval()
    try:
        step()
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(passes):
                step()
    finally:
        model.train(training)
    totals = dict.fromkeys(SHARE_CATEGORIES, 0.0)
    all_copies = 0.0
    for event in prof.events():
        totals[_outer_category(event)] += event.self_cpu_time_total
        if event.name == "aten::copy_":
            all_copies += event.self_cpu_time_total
    total = sum(totals.values()) or 1.0
    shares = {name: 100.0 * t / total for name, t in totals.items()}
    shares["aten::copy_ (any caller)"] = 100.0 * all_copies / total
    return shares


# ---------------------------------------------------------------------------
# the benchmark and its table
# ---------------------------------------------------------------------------
TARGETS = {"inference": 2.0, "training step": 1.8, "copies": 5.0}
"""Same-run goals: images/s over the reference's, and the copies' percent ceiling."""


def _inference_speeds(model, reference, settings: ModelSettings) -> dict:
    """Images/s of inference: the model, the reference, bfloat16 autocast, torch.compile."""
    images = torch.randn(settings.infer_batch, 3, settings.img_size, settings.img_size)
    model.eval(), reference.eval()
    steps = {"model": _inference_step(model, images), "reference": _inference_step(reference, images)}
    notes = {}
    autocast, notes["bf16 autocast"] = _autocast_step(model, images)
    if autocast is not None:
        steps["bf16 autocast"] = autocast
    if settings.compile:
        compiled, notes["torch.compile"] = _compiled_step(model, images)
        if compiled is not None:
            steps["torch.compile"] = compiled
    else:
        notes["torch.compile"] = "not measured (--compile)"
    seconds = _round_robin(steps, settings.repeats)
    speeds = {name: settings.infer_batch / s for name, s in seconds.items()}
    return {"images_per_s": speeds, "notes": {k: v for k, v in notes.items() if v}}


def _training_speeds(model, reference, settings: ModelSettings) -> dict[str, float]:
    images = torch.randn(settings.train_batch, 3, settings.img_size, settings.img_size)
    labels = torch.randint(0, model.num_classes, (settings.train_batch,))
    model.train(), reference.train()
    steps = {
        "model": _training_step(model, images, labels),
        "reference": _training_step(reference, images, labels),
    }
    seconds = _round_robin(steps, settings.repeats)
    return {name: settings.train_batch / s for name, s in seconds.items()}


def run_model_benchmark(settings: ModelSettings = ModelSettings(), model: nn.Module | None = None) -> dict:
    """Measure DilateFormer-Tiny (or ``model``) against ``reference_model`` of it; a report dict."""
    with _threads(settings.threads):
        if model is None:
            torch.manual_seed(0)
            model = dilateformer_tiny(img_size=settings.img_size)
        reference = reference_model(model)
        macs = count_flops(model, settings.img_size).total
        gflops = sgemm_gflops(settings.sgemm_size)
        inference = _inference_speeds(model, reference, settings)
        training = _training_speeds(model, reference, settings)
        images = torch.randn(settings.infer_batch, 3, settings.img_size, settings.img_size)
        shares = profile_shares(model, images, settings.profile_passes)
    return {
        "settings": settings.__dict__, "torch": torch.__version__, "macs_per_image": macs,
        "sgemm_gflops": gflops, "inference": inference, "training": training, "shares": shares,
    }


def _roofline(images_per_s: float, macs: int, gflops: float, passes: float = 1.0) -> float:
    """Fraction of the sgemm roof: FLOPs done per second (2 per MAC; a training step
    counted as 3 forward passes, forward plus a backward twice its cost) over sgemm's."""
    return images_per_s * 2 * macs * passes / (gflops * 1e9)


def _verdict(value: float | None, goal: float, at_least: bool, quick: bool) -> str:
    if value is None:
        return "not measured"
    if quick:
        return "(quick: not judged)"
    return "met" if (value >= goal if at_least else value <= goal) else "MISSED"


def format_model_report(report: dict) -> str:
    """The report as Markdown tables: speeds, then the profile shares, then the targets."""
    s, macs, gflops = report["settings"], report["macs_per_image"], report["sgemm_gflops"]
    quick = s["img_size"] != 224
    infer, notes = report["inference"]["images_per_s"], report["inference"]["notes"]
    train = report["training"]
    lines = [
        f"DilateFormer-Tiny at {s['img_size']}, {s['threads']} thread(s), torch {report['torch']}; "
        f"{macs / 1e9:.2f} GMACs per image; sgemm {gflops:.0f} GFLOP/s "
        f"(medians of {s['repeats']})",
        "",
        "| measurement | this model | reference (unfold, official path) | ratio | of the sgemm roof |",
        "|---|---:|---:|---:|---:|",
        f"| inference, batch {s['infer_batch']} (images/s) | {infer['model']:.2f} | "
        f"{infer['reference']:.2f} | {infer['model'] / infer['reference']:.2f}x | "
        f"{100 * _roofline(infer['model'], macs, gflops):.0f}% |",
        f"| training step, batch {s['train_batch']} (images/s) | {train['model']:.2f} | "
        f"{train['reference']:.2f} | {train['model'] / train['reference']:.2f}x | "
        f"{100 * _roofline(train['model'], macs, gflops, 3.0):.0f}% |",
    ]
    for name in ("bf16 autocast", "torch.compile"):
        if name in infer:
            lines.append(
                f"| inference, {name} (images/s) | {infer[name]:.2f} | | "
                f"{infer[name] / infer['model']:.2f}x over float32 eager | |"
            )
        else:
            lines.append(f"| inference, {name} | {notes.get(name, 'not available')} | | | |")
    lines += ["", "| forward profile | share of CPU time |", "|---|---:|"]
    lines += [f"| {name} | {share:.1f}% |" for name, share in report["shares"].items()]
    lines += ["", "Targets (same run):"]
    compiled = infer.get("torch.compile")
    checks = [
        ("inference >= 2x the reference", infer["model"] / infer["reference"], TARGETS["inference"], True),
        ("training step >= 1.8x the reference", train["model"] / train["reference"],
         TARGETS["training step"], True),
        ("copies <= 5% of the forward", report["shares"]["copies"], TARGETS["copies"], False),
        ("torch.compile >= eager", None if compiled is None else compiled / infer["model"], 1.0, True),
    ]
    for label, value, goal, at_least in checks:
        shown = "-" if value is None else f"{value:.2f}"
        lines.append(f"- {label}: {shown} -> {_verdict(value, goal, at_least, quick)}")
    return "\n".join(lines)


def main_model(args) -> int:
    """``python -m dilate_lab.bench --model``: run, print the tables, optionally write JSON."""
    import json

    make = ModelSettings.quick if args.quick else ModelSettings
    settings = make(threads=args.threads, compile=args.compile,
                    **({"repeats": args.repeats} if args.repeats is not None else {}))
    report = run_model_benchmark(settings)
    print(format_model_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"report written to {args.json}")
    return 0
