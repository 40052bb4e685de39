"""Lesson 05's capstone exercise: a DilateBlock assembled from the learner's own pieces.

The learner writes a class ``MyDilateBlock(dim, num_heads, msda, kernel_size=3,
dilation=(1, 2, 3), mlp_ratio=4.0)``: the conditional position embedding (a depthwise
3x3 convolution), a LayerNorm, the qkv projection, the ``msda`` function it is given
(lesson 04's), the output projection, a second LayerNorm and an MLP, each branch added
residually. The checker judges the work, not only one output:

- the block must be the learner's own: a block that is, contains or runs dilate_lab's
  own blocks or attention (``DilateBlock``, ``MultiDilateAttention``, ``Mlp``, ``swda`` ...)
  is refused, because the package's ``DilateBlock`` is what it is checked against;
- its layers must carry the names of the template, so that the weights of a package
  ``DilateBlock`` load into them; then, with the same weights, its output must equal that
  block's on several shapes, dilations and kernel sizes (a wrong output is explained: a
  missing residual, a pre-norm turned post-norm, q, k, v split the wrong way ...);
- it must use the ``msda`` it was given: the checker passes its own (correct MSDA in plain
  torch, counting its calls), then one that returns the values unchanged, and the block's
  output must follow what ``msda`` returns;
- a gradient must reach the input and every parameter.

The checker's own MSDA and the block by its equations (with the usual mistakes) are in
``_block_parts``.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn

from ..checking import Incorrect, NotAttempted, call_answer, first_mismatch
from ...nn import DilateBlock
from ._block_parts import MISTAKES, GivenMSDA, plain_msda, reference_block_forward
from ._common import _FunctionRecorder, _is_library_file

__all__ = ["check_dilate_block", "BLOCK_HINTS", "BLOCK_SOLUTION"]

LAYER_NAMES = ("pos_embed", "norm1", "qkv", "proj", "norm2", "fc1", "fc2")
"""The layer names the template asks for, in the order the data meets them."""

_PACKAGE_NAMES = {"attn.qkv": "qkv", "attn.proj": "proj", "mlp.fc1": "fc1", "mlp.fc2": "fc2"}
"""The package ``DilateBlock``'s names for the same layers (accepted from the learner too)."""

_CASES = [  # (dim, num_heads, kernel_size, dilation, mlp_ratio, (B, H, W))
    (12, 3, 3, (1, 2, 3), 4.0, (2, 6, 7)),
    (24, 6, 3, (1, 2), 2.0, (1, 5, 5)),
    (8, 2, 5, (2,), 4.0, (1, 7, 6)),
]

_ATOL, _RTOL = 1e-4, 1e-4  # float32 against float32: the same sums in another order


# --------------------------------------------------------------------------- refusing the library
def _library_class(cls: type) -> type | None:
    """The first class in ``cls``'s MRO that dilate_lab defines (outside the checkers), or None."""
    for base in cls.__mro__:
        try:
            filename = inspect.getsourcefile(base) or inspect.getfile(base)
        except (TypeError, OSError):
            continue  # builtins and classes defined in a notebook cell
        if _is_library_file(filename):
            return base
    return None


_OWN_WORK = (
    "this exercise asks you to assemble the block yourself, from torch.nn layers and the msda you "
    "are given (dilate_lab's own DilateBlock is what your block is checked against, so it cannot be "
    "part of it)."
)


def _refuse_library_modules(block: nn.Module) -> None:
    """Refuse a block that is, or holds, one of dilate_lab's modules (DilateBlock, MSDA, Mlp ...)."""
    for name, module in block.named_modules():
        found = _library_class(type(module))
        if found is None:
            continue
        where = "your block is a subclass of" if not name else f"your block holds, as `{name}`,"
        raise Incorrect(f"{where} dilate_lab's {found.__name__}: {_OWN_WORK}")


# --------------------------------------------------------------------------- loading the weights
def _learner_name(name: str) -> str:
    """A parameter name with the package's prefixes removed: ``attn.qkv.weight`` -> ``qkv.weight``."""
    for package, own in _PACKAGE_NAMES.items():
        if name.startswith(package + "."):
            return own + name[len(package):]
    return name


def _seeded_package_block(dim, num_heads, kernel_size, dilation, mlp_ratio, seed) -> DilateBlock:
    """The package's DilateBlock (qkv with a bias, like DilateFormer's) with seeded, non-trivial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        block = DilateBlock(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, kernel_size=kernel_size,
                            dilation=dilation, impl="shift")
        with torch.no_grad():
            for p in block.parameters():
                p.normal_(0.0, 0.3)
    return block.eval()


def _expected_layers(package: DilateBlock) -> dict[str, tuple[int, ...]]:
    """The learner's parameter names and shapes, qkv as the template's nn.Linear (the package's is a 1x1 conv)."""
    shapes = {_learner_name(name): tuple(p.shape) for name, p in package.named_parameters()}
    shapes["qkv.weight"] = shapes["qkv.weight"][:2]
    return shapes


def _load_package_weights(block: nn.Module, package: DilateBlock) -> dict[str, torch.Tensor]:
    """Copy ``package``'s weights into the learner's block; explain any layer that does not fit.

    Returns the weights under the learner's names (for ``reference_block_forward``).
    """
    expected = _expected_layers(package)
    own = {_learner_name(name): p for name, p in block.named_parameters()}
    listing = ", ".join(f"{name} {shape}" for name, shape in expected.items())
    missing = [name for name in expected if name not in own]
    extra = [name for name in own if name not in expected]
    if missing:
        hint = ""
        if "qkv.bias" in missing and "qkv.weight" in own:
            hint = " Your qkv has no bias; DilateFormer's has one: nn.Linear(dim, 3 * dim) (bias=True, the default)."
        raise Incorrect(
            f"your block has no parameter {missing[0]!r}{' (nor ' + ', '.join(map(repr, missing[1:])) + ')' if missing[1:] else ''}."
            f"{hint} Name the layers as the template says ({', '.join(LAYER_NAMES)}), so that the weights of a "
            f"DilateBlock load into them. Expected parameters: {listing}."
        )
    if extra:
        raise Incorrect(
            f"your block has parameters a DilateBlock does not: {', '.join(map(repr, extra))}. A DilateBlock "
            f"has exactly: {listing}."
        )
    weights = {}
    with torch.no_grad():
        for name, p in package.named_parameters():
            own_name = _learner_name(name)
            mine = own[own_name]
            allowed = {tuple(p.shape)}
            if own_name == "qkv.weight":  # the package's 1x1 convolution, or an nn.Linear
                allowed.add(tuple(p.shape[:2]))
            if own_name == "proj.weight":  # the package's nn.Linear, or a 1x1 convolution
                allowed.add((*p.shape, 1, 1))
            if tuple(mine.shape) not in allowed:
                raise Incorrect(
                    f"your {own_name} has shape {tuple(mine.shape)}, expected "
                    f"{' or '.join(str(shape) for shape in sorted(allowed, key=len))}: {_shape_hint(own_name)}"
                )
            mine.copy_(p.reshape(mine.shape))
            weights[own_name] = p.detach().clone()
    return weights


def _shape_hint(name: str) -> str:
    layer = name.split(".")[0]
    return {
        "pos_embed": "the position embedding is depthwise: nn.Conv2d(dim, dim, 3, padding=1, groups=dim).",
        "norm1": "nn.LayerNorm(dim).",
        "norm2": "nn.LayerNorm(dim).",
        "qkv": "one projection to q, k and v together: nn.Linear(dim, 3 * dim).",
        "proj": "nn.Linear(dim, dim).",
        "fc1": "the MLP widens to int(dim * mlp_ratio): nn.Linear(dim, int(dim * mlp_ratio)).",
        "fc2": "and back: nn.Linear(int(dim * mlp_ratio), dim).",
    }[layer]


# --------------------------------------------------------------------------- running the learner's block
def _build(cls, dim, num_heads, msda, kernel_size, dilation, mlp_ratio) -> nn.Module:
    if cls is None or cls is Ellipsis:
        raise NotAttempted("the answer is still empty.")
    call = (f"{getattr(cls, '__name__', 'your class')}({dim}, {num_heads}, msda, kernel_size={kernel_size}, "
            f"dilation={dilation}, mlp_ratio={mlp_ratio})")
    try:
        block = call_answer(cls, dim, num_heads, msda, kernel_size=kernel_size, dilation=dilation, mlp_ratio=mlp_ratio)
    except NotAttempted:
        raise NotAttempted("your block's __init__ still raises NotImplementedError.") from None
    except Incorrect as error:
        raise Incorrect(f"building your block, {call}, failed: {_as_block(str(error))}") from None
    if not isinstance(block, nn.Module):
        raise Incorrect(
            f"{call} gave a {type(block).__name__}, expected an nn.Module: write a class that subclasses "
            "nn.Module (and calls super().__init__())."
        )
    return block


def _as_block(message: str) -> str:
    return message.replace("your function", "it", 1)


def _run(block: nn.Module, x: torch.Tensor, where: str) -> torch.Tensor:
    """``block(x)`` under a recorder that refuses dilate_lab's own attention, blocks and layers."""
    recorder = _FunctionRecorder()
    try:
        with recorder:
            out = call_answer(block, x)
    except NotAttempted:
        raise NotAttempted("your block's forward still raises NotImplementedError (or returns None).") from None
    except Incorrect as error:
        if recorder.library is not None:
            raise Incorrect(_library_run_message(recorder.library)) from None
        raise Incorrect(f"{where} your forward raised an error: {_as_block(str(error))}") from None
    if recorder.library is not None:
        raise Incorrect(_library_run_message(recorder.library))
    return out


def _library_run_message(name: str) -> str:
    return (
        f"your block called {name}, dilate_lab's own code: use the msda your block is given (store it in "
        f"__init__, self.msda = msda, and call self.msda(q, k, v, kernel_size, dilations)); {_OWN_WORK}"
    )


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=_ATOL, rtol=_RTOL)


def _diagnose(out, expected, weights, x, case, calls) -> None:
    """Explain a wrong output: a wrong call of msda, a known mistake, or where it first differs."""
    dim, num_heads, kernel_size, dilation, mlp_ratio, _ = case
    where = f"(dim={dim}, num_heads={num_heads}, kernel_size={kernel_size}, dilation={dilation}, x of shape {tuple(x.shape)})"
    if not isinstance(out, torch.Tensor):
        raise Incorrect(f"{where} your forward returned a {type(out).__name__}, expected a tensor (B, C, H, W).")
    if out.shape != expected.shape:
        hint = ""
        if tuple(out.shape) == (x.shape[0], x.shape[2], x.shape[3], x.shape[1]):
            hint = " That is channels-last: permute back to (B, C, H, W) at the end, as DilateBlock returns."
        raise Incorrect(f"{where} your output has shape {tuple(out.shape)}, expected {tuple(expected.shape)}.{hint}")
    if not calls:
        raise Incorrect(
            f"{where} your block never called the msda it was given. Store it in __init__ (self.msda = msda) "
            "and call it on q, k, v of shape (B, heads, H, W, head_dim)."
        )
    whole = [c for c in calls if c[0][1] == num_heads]
    for shape, k, rs in whole:
        if k != kernel_size:
            raise Incorrect(f"{where} your block called msda with kernel_size={k}: pass the block's own kernel_size.")
        if rs != tuple(dilation):
            raise Incorrect(f"{where} your block called msda with dilations {list(rs)}: pass the block's own dilation, {list(dilation)}.")
    out = out.detach()
    with torch.no_grad():
        for mistake, message in MISTAKES.items():
            wrong = reference_block_forward(weights, x.detach(), plain_msda, num_heads, kernel_size, dilation, mistake)
            if _same(out, wrong):
                raise Incorrect(f"{where} {message}")
    index = first_mismatch(out, expected, _ATOL, _RTOL)
    raise Incorrect(
        f"{where} your output differs from DilateBlock's (same weights) first at index {index}: yours "
        f"{out[index].item():.6g}, expected {expected[index].item():.6g} (largest difference "
        f"{(out - expected).abs().max().item():.3g}). Follow the three equations: x + pos_embed(x), then "
        "x + proj(msda(q, k, v)) with q, k, v from qkv(norm1(x)), then x + fc2(gelu(fc1(norm2(x))))."
    )


def _check_gradients(block: nn.Module, out: torch.Tensor, x: torch.Tensor, where: str) -> None:
    if not out.requires_grad:
        raise Incorrect(
            f"{where} your output does not require grad: nothing in the block could learn. Did you detach() "
            "or compute under torch.no_grad()?"
        )
    block.zero_grad(set_to_none=True)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
    (out * weight).sum().backward()
    if x.grad is None or not bool(x.grad.abs().sum() > 0):
        raise Incorrect(f"{where} no gradient reaches the block's input x: the residual path must stay in autograd.")
    for name, p in block.named_parameters():
        if p.grad is None or not bool(p.grad.abs().sum() > 0):
            raise Incorrect(
                f"{where} your {name} gets no gradient, so it would never learn: somewhere the computation "
                "leaves autograd (detach, .data, torch.no_grad, numpy)."
            )


def check_dilate_block(cls) -> str:
    """The checker of ``lesson05.dilate_block``: see the module docstring."""
    for case_index, case in enumerate(_CASES):
        dim, num_heads, kernel_size, dilation, mlp_ratio, (B, H, W) = case
        where = f"(dim={dim}, num_heads={num_heads}, kernel_size={kernel_size}, dilation={dilation})"
        package = _seeded_package_block(dim, num_heads, kernel_size, dilation, mlp_ratio, seed=case_index)
        gen = torch.Generator().manual_seed(100 + case_index)
        x = torch.randn(B, dim, H, W, generator=gen)  # B, C, H, W
        with torch.no_grad():
            expected = package(x)  # B, C, H, W

        given = GivenMSDA("msda")
        block = _build(cls, dim, num_heads, given, kernel_size, dilation, mlp_ratio)
        _refuse_library_modules(block)
        weights = _load_package_weights(block, package)
        block.train()  # as in training; a DilateBlock has no dropout, so train and eval agree
        x_leaf = x.clone().requires_grad_(True)
        out = _run(block, x_leaf, where)
        if not (isinstance(out, torch.Tensor) and _same(out.detach(), expected)):
            _diagnose(out, expected, weights, x, case, given.calls)
        if not given.calls:  # right output without the given msda: attention computed some other way
            raise Incorrect(
                f"{where} your output is right, but your block never called the msda it was given: "
                "it must use that function for the attention (store it: self.msda = msda)."
            )
        _check_gradients(block, out, x_leaf, where)

        values = GivenMSDA("values")
        swapped = _build(cls, dim, num_heads, values, kernel_size, dilation, mlp_ratio)
        _load_package_weights(swapped, package)
        with torch.no_grad():
            out_values = _run(swapped, x.clone(), where)
            expected_values = reference_block_forward(weights, x, values, num_heads, kernel_size, dilation)
        if not (isinstance(out_values, torch.Tensor) and _same(out_values, expected_values)):
            raise Incorrect(
                f"{where} your block does not follow what its msda returns: given an msda that returns v "
                "unchanged, its output should change accordingly. Build the attention branch from the "
                "result of self.msda(q, k, v, ...), not from attention computed some other way."
            )
    return (
        "your block matches dilate_lab's DilateBlock with the same weights (three shapes, dilations "
        "(1, 2, 3), (1, 2) and (2,), kernels 3 and 5), uses the msda it is given, and every parameter "
        "gets a gradient: position embedding, pre-norm MSDA and pre-norm MLP, each added residually."
    )


BLOCK_HINTS = [
    "In __init__, store msda, num_heads, kernel_size and dilation, and make the layers: pos_embed = "
    "nn.Conv2d(dim, dim, 3, padding=1, groups=dim); norm1 and norm2 = nn.LayerNorm(dim); qkv = nn.Linear(dim, "
    "3 * dim); proj = nn.Linear(dim, dim); fc1 = nn.Linear(dim, hidden) and fc2 = nn.Linear(hidden, dim) "
    "with hidden = int(dim * mlp_ratio).",
    "In forward, x is (B, C, H, W): x = x + self.pos_embed(x), then permute to (B, H, W, C) for the rest. "
    "qkv(norm1(x)) is (B, H, W, 3C): reshape to (B, H, W, 3, heads, head_dim) and permute to "
    "(3, B, heads, H, W, head_dim) to get q, k, v.",
    "msda returns (B, heads, H, W, head_dim): permute to (B, H, W, heads, head_dim), reshape to (B, H, W, C), "
    "then x = x + proj(...); x = x + fc2(gelu(fc1(norm2(x)))); permute back to (B, C, H, W).",
]

BLOCK_SOLUTION = '''
class MyDilateBlock(nn.Module):
    def __init__(self, dim, num_heads, msda, kernel_size=3, dilation=(1, 2, 3), mlp_ratio=4.0):
        super().__init__()
        self.msda, self.num_heads = msda, num_heads
        self.kernel_size, self.dilation = kernel_size, list(dilation)
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)   # conditional position embedding
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):                                   # B, C, H, W
        B, C, H, W = x.shape
        d = C // self.num_heads
        x = x + self.pos_embed(x)                           # B, C, H, W
        x = x.permute(0, 2, 3, 1)                           # B, H, W, C
        qkv = self.qkv(self.norm1(x))                       # B, H, W, 3C
        q, k, v = qkv.reshape(B, H, W, 3, self.num_heads, d).permute(3, 0, 4, 1, 2, 5)  # each B, heads, H, W, d
        heads = self.msda(q, k, v, self.kernel_size, self.dilation)                    # B, heads, H, W, d
        x = x + self.proj(heads.permute(0, 2, 3, 1, 4).reshape(B, H, W, C))             # B, H, W, C
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))  # B, H, W, C
        return x.permute(0, 3, 1, 2)                        # B, C, H, W
'''
