"""What the official DilateFormer code (JIAOJIAYUASD/dilateformer, models/dilateformer.py)
does, re-stated here for the tests: its state_dict layout and its forward pass.

Nothing here imports dilate_lab. The key names and shapes are derived from reading
the official modules:

- ``Dilateformer.patch_embed = PatchEmbed(..., patch_way="overlaping")``, hidden_dim 16:
  ``proj`` = Sequential(conv3x3 3->16 no bias, BN, GELU, conv3x3 s2 16->32, BN, GELU,
  conv3x3 32->64, BN, GELU, conv3x3 s2 64->embed_dim); BN at indices 1, 4, 7.
- ``stages[i]`` = Dilatestage (i < 2) or Globalstage, dim = embed_dim * 2**i, each with
  ``blocks[j]``: ``pos_embed`` (cpe_per_block=True, depthwise 3x3 with bias), ``norm1``,
  ``attn.qkv`` (Conv2d 1x1 for dilate blocks, Linear for global blocks; qkv_bias=True),
  ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``; then ``downsample`` =
  PatchMerging("conv3_2"): ``proj`` = Sequential(conv3x3 s2 dim->2dim with bias, BN)
  for stages 0-2, Identity (no parameters) for the last.
- ``norm`` (LayerNorm eps 1e-6) over the tokens, AdaptiveAvgPool1d, ``head`` Linear.

The forward re-statement follows the official reshape/permute order exactly, but
writes the per-dilation results out of place (torch.stack) instead of the official
``x[i] = ...``, which breaks backward on current PyTorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TINY = dict(embed_dim=72, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
OFFICIAL_DILATE_STAGES = (True, True, False, False)


def _bn_keys(prefix, channels):
    return {
        f"{prefix}.weight": (channels,),
        f"{prefix}.bias": (channels,),
        f"{prefix}.running_mean": (channels,),
        f"{prefix}.running_var": (channels,),
        f"{prefix}.num_batches_tracked": (),
    }


def official_keys(embed_dim=72, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), num_classes=1000,
                  mlp_ratio=4, dilate_stages=OFFICIAL_DILATE_STAGES):
    """{state_dict key: shape} of the official Dilateformer with these settings."""
    keys = {"patch_embed.proj.0.weight": (16, 3, 3, 3)}
    keys.update(_bn_keys("patch_embed.proj.1", 16))
    keys["patch_embed.proj.3.weight"] = (32, 16, 3, 3)
    keys.update(_bn_keys("patch_embed.proj.4", 32))
    keys["patch_embed.proj.6.weight"] = (64, 32, 3, 3)
    keys.update(_bn_keys("patch_embed.proj.7", 64))
    keys["patch_embed.proj.9.weight"] = (embed_dim, 64, 3, 3)
    n = len(depths)
    for i in range(n):
        dim = embed_dim * 2**i
        hidden = int(dim * mlp_ratio)
        for j in range(depths[i]):
            p = f"stages.{i}.blocks.{j}"
            keys[f"{p}.pos_embed.weight"] = (dim, 1, 3, 3)
            keys[f"{p}.pos_embed.bias"] = (dim,)
            keys[f"{p}.norm1.weight"] = (dim,)
            keys[f"{p}.norm1.bias"] = (dim,)
            if dilate_stages[i]:
                keys[f"{p}.attn.qkv.weight"] = (3 * dim, dim, 1, 1)
            else:
                keys[f"{p}.attn.qkv.weight"] = (3 * dim, dim)
            keys[f"{p}.attn.qkv.bias"] = (3 * dim,)
            keys[f"{p}.attn.proj.weight"] = (dim, dim)
            keys[f"{p}.attn.proj.bias"] = (dim,)
            keys[f"{p}.norm2.weight"] = (dim,)
            keys[f"{p}.norm2.bias"] = (dim,)
            keys[f"{p}.mlp.fc1.weight"] = (hidden, dim)
            keys[f"{p}.mlp.fc1.bias"] = (hidden,)
            keys[f"{p}.mlp.fc2.weight"] = (dim, hidden)
            keys[f"{p}.mlp.fc2.bias"] = (dim,)
        if i < n - 1:
            keys[f"stages.{i}.downsample.proj.0.weight"] = (2 * dim, dim, 3, 3)
            keys[f"stages.{i}.downsample.proj.0.bias"] = (2 * dim,)
            keys.update(_bn_keys(f"stages.{i}.downsample.proj.1", 2 * dim))
    features = embed_dim * 2 ** (n - 1)
    keys["norm.weight"] = (features,)
    keys["norm.bias"] = (features,)
    keys["head.weight"] = (num_classes, features)
    keys["head.bias"] = (num_classes,)
    return keys


def random_state_dict(keys, seed=0, dtype=torch.float64):
    """Random tensors for every key: running variances positive, counters integer."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in keys.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=gen, dtype=dtype) + 0.5
        else:
            state[name] = torch.randn(shape, generator=gen, dtype=dtype) * 0.2
    return state


# ---------------------------------------------------------------------------
# the official forward, re-stated out of place
# ---------------------------------------------------------------------------
def official_dilate_attention(q, k, v, head_dim, kernel_size, dilation, scale):
    """Official DilateAttention.forward: q, k, v (B, d, H, W) -> (B, H, W, d)."""
    B, d, H, W = q.shape
    kk = kernel_size * kernel_size
    pad = dilation * (kernel_size - 1) // 2
    q = q.reshape(B, d // head_dim, head_dim, 1, H * W).permute(0, 1, 4, 3, 2)
    k = F.unfold(k, kernel_size, dilation, pad, 1)
    k = k.reshape(B, d // head_dim, head_dim, kk, H * W).permute(0, 1, 4, 2, 3)
    attn = ((q @ k) * scale).softmax(dim=-1)
    v = F.unfold(v, kernel_size, dilation, pad, 1)
    v = v.reshape(B, d // head_dim, head_dim, kk, H * W).permute(0, 1, 4, 3, 2)
    return (attn @ v).transpose(1, 2).reshape(B, H, W, d)


def official_msda(x, state, prefix, num_heads, kernel_size=3, dilation=(1, 2, 3), qk_scale=None):
    """Official MultiDilatelocalAttention.forward on x (B, H, W, C), weights from state."""
    B, H, W, C = x.shape
    nd = len(dilation)
    head_dim = C // num_heads
    scale = qk_scale or head_dim**-0.5
    x = x.permute(0, 3, 1, 2)
    qkv = F.conv2d(x, state[f"{prefix}qkv.weight"], state.get(f"{prefix}qkv.bias"))
    qkv = qkv.reshape(B, 3, nd, C // nd, H, W).permute(2, 1, 0, 3, 4, 5)
    outs = [
        official_dilate_attention(qkv[i][0], qkv[i][1], qkv[i][2], head_dim, kernel_size,
                                  dilation[i], scale)
        for i in range(nd)
    ]
    x = torch.stack(outs, dim=0)  # the official writes these into x[i] in place
    x = x.permute(1, 2, 3, 0, 4).reshape(B, H, W, C)
    return F.linear(x, state[f"{prefix}proj.weight"], state[f"{prefix}proj.bias"])


def official_global_attention(x, state, prefix, num_heads):
    B, H, W, C = x.shape
    scale = (C // num_heads) ** -0.5
    qkv = F.linear(x, state[f"{prefix}qkv.weight"], state.get(f"{prefix}qkv.bias"))
    qkv = qkv.reshape(B, H * W, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
    x = (attn @ v).transpose(1, 2).reshape(B, H, W, C)
    return F.linear(x, state[f"{prefix}proj.weight"], state[f"{prefix}proj.bias"])


def _bn(x, state, p):
    return F.batch_norm(x, state[f"{p}.running_mean"], state[f"{p}.running_var"],
                        state[f"{p}.weight"], state[f"{p}.bias"], training=False, eps=1e-5)


def _ln(x, state, p, eps):
    return F.layer_norm(x, x.shape[-1:], state[f"{p}.weight"], state[f"{p}.bias"], eps)


def official_forward(x, state, embed_dim, depths, num_heads, dilate_stages=OFFICIAL_DILATE_STAGES,
                     kernel_size=3, dilation=(1, 2, 3)):
    """Official Dilateformer.forward in eval mode, image (B, 3, H, W) -> logits."""
    s = state
    x = F.gelu(_bn(F.conv2d(x, s["patch_embed.proj.0.weight"], padding=1), s, "patch_embed.proj.1"))
    x = F.gelu(_bn(F.conv2d(x, s["patch_embed.proj.3.weight"], stride=2, padding=1), s, "patch_embed.proj.4"))
    x = F.gelu(_bn(F.conv2d(x, s["patch_embed.proj.6.weight"], padding=1), s, "patch_embed.proj.7"))
    x = F.conv2d(x, s["patch_embed.proj.9.weight"], stride=2, padding=1)
    n = len(depths)
    for i in range(n):
        dim = embed_dim * 2**i
        for j in range(depths[i]):
            p = f"stages.{i}.blocks.{j}."
            x = x + F.conv2d(x, s[p + "pos_embed.weight"], s[p + "pos_embed.bias"], padding=1, groups=dim)
            x = x.permute(0, 2, 3, 1)
            # the blocks' own norm_layer is partial(nn.LayerNorm, eps=1e-6), passed down by Dilateformer
            y = _ln(x, s, p + "norm1", 1e-6)
            if dilate_stages[i]:
                y = official_msda(y, s, p + "attn.", num_heads[i], kernel_size, dilation)
            else:
                y = official_global_attention(y, s, p + "attn.", num_heads[i])
            x = x + y
            y = _ln(x, s, p + "norm2", 1e-6)
            y = F.linear(F.gelu(F.linear(y, s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"])),
                         s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"])
            x = (x + y).permute(0, 3, 1, 2)
        if i < n - 1:
            p = f"stages.{i}.downsample.proj"
            x = F.conv2d(x, s[f"{p}.0.weight"], s[f"{p}.0.bias"], stride=2, padding=1)
            x = _bn(x, s, f"{p}.1")
    x = x.flatten(2).transpose(1, 2)
    x = _ln(x, s, "norm", 1e-6)
    x = F.adaptive_avg_pool1d(x.transpose(1, 2), 1).flatten(1)
    return F.linear(x, s["head.weight"], s["head.bias"])
