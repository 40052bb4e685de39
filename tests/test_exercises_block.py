"""Lesson 05's capstone: a DilateBlock assembled from the learner's own pieces.

Right, wrong, blank and cheating answers each get the right feedback. The answers are
written here as variations of one honest block (``Block``), each with one thing
changed; the checker's own parts (its plain-torch MSDA, the block by its equations)
are checked against the package.
"""

from __future__ import annotations

import itertools
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dilate_lab
from dilate_lab import DilateBlock, MultiDilateAttention, swda
from dilate_lab.course.block_classifier import BlockClassifier
from dilate_lab.course.exercises import lesson05
from dilate_lab.course.exercises._block_parts import (
    MISTAKES as BLOCK_MISTAKES,
    GivenMSDA,
    plain_msda,
    plain_swda,
    reference_block_forward,
)
from dilate_lab.course.loop import fit, seed_everything
from dilate_lab.nn.layers import Mlp

EXERCISE = lesson05.dilate_block


def status(answer):
    return EXERCISE.evaluate(answer)


def incorrect(answer, *fragments) -> str:
    feedback = status(answer)
    assert feedback.status == "incorrect", feedback
    for fragment in fragments:
        assert fragment in feedback.message, feedback.message
    return feedback.message


def lesson04_msda(q, k, v, kernel_size, dilations):
    """Lesson 04's answer, on the library's swda (what the learner has in the notebook)."""
    per_group = q.shape[1] // len(dilations)
    return torch.cat([swda(q[:, i * per_group:(i + 1) * per_group], k[:, i * per_group:(i + 1) * per_group],
                           v[:, i * per_group:(i + 1) * per_group], kernel_size, r)
                      for i, r in enumerate(dilations)], dim=1)


# --------------------------------------------------------------------------- answers written here
class Block(nn.Module):
    """An honest block; subclasses change one thing each."""

    qkv_layer = "linear"
    eps = 1e-5

    def __init__(self, dim, num_heads, msda, kernel_size=3, dilation=(1, 2, 3), mlp_ratio=4.0):
        super().__init__()
        self.msda, self.num_heads = msda, num_heads
        self.kernel_size, self.dilation = kernel_size, list(dilation)
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=self.eps)
        self.qkv = nn.Linear(dim, 3 * dim) if self.qkv_layer == "linear" else nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=self.eps)
        hidden = int(dim * mlp_ratio)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def position(self, x):
        return x + self.pos_embed(x)

    def make_qkv(self, x):  # B, H, W, C -> 3, B, heads, H, W, d
        B, H, W, C = x.shape
        if self.qkv_layer == "linear":
            qkv = self.qkv(x)
        else:
            qkv = self.qkv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return qkv.reshape(B, H, W, 3, self.num_heads, C // self.num_heads).permute(3, 0, 4, 1, 2, 5)

    def attend(self, q, k, v):
        return self.msda(q, k, v, self.kernel_size, self.dilation)  # B, heads, H, W, d

    def merge(self, heads):
        B, h, H, W, d = heads.shape
        return heads.permute(0, 2, 3, 1, 4).reshape(B, H, W, h * d)

    def attention_branch(self, x):
        q, k, v = self.make_qkv(self.norm1(x))
        return self.proj(self.merge(self.attend(q, k, v)))

    def mlp_branch(self, x):
        return self.fc2(F.gelu(self.fc1(self.norm2(x))))

    def forward(self, x):
        x = self.position(x).permute(0, 2, 3, 1)  # B, H, W, C
        x = x + self.attention_branch(x)
        x = x + self.mlp_branch(x)
        return x.permute(0, 3, 1, 2)


def solution_class():
    namespace = {"torch": torch, "nn": nn, "F": F}
    exec(EXERCISE._solution, namespace)
    return namespace["MyDilateBlock"]


# --------------------------------------------------------------------------- the checker's own parts
@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (3, 2), (5, 3), (1, 1)])
def test_the_checkers_swda_is_the_librarys(kernel_size, dilation):
    gen = torch.Generator().manual_seed(kernel_size * 10 + dilation)
    q, k, v = (torch.randn(2, 3, 6, 7, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(plain_swda(q, k, v, kernel_size, dilation), swda(q, k, v, kernel_size, dilation))


def test_the_given_msda_is_lesson_04s_and_records_its_calls():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 6, 5, 5, 2, generator=gen, dtype=torch.float64) for _ in range(3))
    given = GivenMSDA()
    torch.testing.assert_close(given(q, k, v, 3, [1, 2, 3]), lesson04_msda(q, k, v, 3, [1, 2, 3]))
    assert given.calls == [((1, 6, 5, 5, 2), 3, (1, 2, 3))]
    assert torch.equal(GivenMSDA("values")(q, k, v, 3, [1, 2, 3]), v)
    with pytest.raises(ValueError, match="heads must split"):
        given(q, k, v, 3, [1, 2, 3, 4])
    with pytest.raises(ValueError, match="one shape"):
        given(q, k[..., :1], v, 3, [1])


@pytest.mark.parametrize("case", [(12, 3, 3, (1, 2, 3), 4.0), (16, 4, 5, (1, 2), 2.0), (8, 2, 3, (3,), 1.0)])
def test_the_block_by_its_equations_is_the_package_dilateblock(case):
    dim, heads, kernel_size, dilation, mlp_ratio = case
    torch.manual_seed(0)
    block = DilateBlock(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True, kernel_size=kernel_size,
                        dilation=dilation).double().eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.3)
    params = {name.replace("attn.", "").replace("mlp.", ""): p for name, p in block.named_parameters()}
    x = torch.randn(2, dim, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        ours = reference_block_forward(params, x, plain_msda, heads, kernel_size, dilation)
        torch.testing.assert_close(ours, block(x))
        for mistake in BLOCK_MISTAKES:  # every mistake changes the output
            wrong = reference_block_forward(params, x, plain_msda, heads, kernel_size, dilation, mistake)
            assert not torch.allclose(wrong, ours, atol=1e-3), mistake


def test_the_mistakes_differ_from_each_other():
    torch.manual_seed(1)
    params = {name.replace("attn.", "").replace("mlp.", ""): p.detach() for name, p in
              DilateBlock(12, 3, qkv_bias=True).named_parameters()}
    x = torch.randn(1, 12, 6, 6)
    outputs = {m: reference_block_forward(params, x, plain_msda, 3, 3, (1, 2, 3), m) for m in BLOCK_MISTAKES}
    for a, b in itertools.combinations(BLOCK_MISTAKES, 2):
        assert not torch.allclose(outputs[a], outputs[b], atol=1e-4), (a, b)


# --------------------------------------------------------------------------- right
class ConvQkv(Block):
    qkv_layer = "conv"


class SmallEps(Block):
    eps = 1e-6  # as DilateFormer's blocks


class PerGroupCalls(Block):
    def attend(self, q, k, v):
        per_group = q.shape[1] // len(self.dilation)
        return torch.cat([self.msda(q[:, i * per_group:(i + 1) * per_group], k[:, i * per_group:(i + 1) * per_group],
                                    v[:, i * per_group:(i + 1) * per_group], self.kernel_size, [r])
                          for i, r in enumerate(self.dilation)], dim=1)


class PackageNames(nn.Module):
    """The package's names: attn.qkv, attn.proj, mlp.fc1, mlp.fc2 in containers of its own."""

    def __init__(self, dim, num_heads, msda, kernel_size=3, dilation=(1, 2, 3), mlp_ratio=4.0):
        super().__init__()
        self.inner = Block(dim, num_heads, msda, kernel_size, dilation, mlp_ratio)
        self.pos_embed, self.norm1, self.norm2 = self.inner.pos_embed, self.inner.norm1, self.inner.norm2
        self.attn, self.mlp = nn.Module(), nn.Module()
        self.attn.qkv, self.attn.proj = self.inner.qkv, self.inner.proj
        self.mlp.fc1, self.mlp.fc2 = self.inner.fc1, self.inner.fc2
        del self.inner._modules["qkv"], self.inner._modules["proj"], self.inner._modules["fc1"]
        del self.inner._modules["fc2"], self.inner._modules["pos_embed"], self.inner._modules["norm1"]
        del self.inner._modules["norm2"]
        self.__dict__["block"] = self.inner  # not a submodule: its layers are registered above
        del self._modules["inner"]

    def forward(self, x):
        b = self.block
        b.pos_embed, b.norm1, b.norm2 = self.pos_embed, self.norm1, self.norm2
        b.qkv, b.proj, b.fc1, b.fc2 = self.attn.qkv, self.attn.proj, self.mlp.fc1, self.mlp.fc2
        return b(x)


@pytest.mark.parametrize("answer", [solution_class(), Block, ConvQkv, SmallEps, PerGroupCalls, PackageNames],
                         ids=["printed solution", "honest", "conv qkv", "eps 1e-6", "msda per group", "package names"])
def test_right_answers_are_correct(answer):
    feedback = status(answer)
    assert feedback.correct, feedback
    assert "matches dilate_lab's DilateBlock" in feedback.message


def test_the_printed_solution_is_checked_within_two_seconds():
    answer = solution_class()
    start = time.process_time()  # CPU time: other processes on the machine do not count
    assert status(answer).correct
    assert time.process_time() - start < 2.0


def test_check_hint_and_solution_print(capsys):
    EXERCISE.check(None)
    assert "Not attempted yet" in capsys.readouterr().out
    EXERCISE.hint(3)
    assert "Hint 3/3" in capsys.readouterr().out
    EXERCISE.solution()
    assert "class MyDilateBlock(nn.Module)" in capsys.readouterr().out


# --------------------------------------------------------------------------- blank
class Template(nn.Module):
    def __init__(self, dim, num_heads, msda, kernel_size=3, dilation=(1, 2, 3), mlp_ratio=4.0):
        super().__init__()
        raise NotImplementedError

    def forward(self, x):
        raise NotImplementedError


class ForwardLeftBlank(Block):
    def forward(self, x):
        raise NotImplementedError


class ForwardReturnsNone(Block):
    def forward(self, x):
        pass


@pytest.mark.parametrize("answer,phrase", [
    (None, "the answer is still empty"),
    (Ellipsis, "the answer is still empty"),
    (Template, "__init__ still raises NotImplementedError"),
    (ForwardLeftBlank, "forward still raises NotImplementedError"),
    (ForwardReturnsNone, "forward still raises NotImplementedError (or returns None)"),
])
def test_blank_answers_are_not_attempted(answer, phrase):
    feedback = status(answer)
    assert feedback.status == "not attempted", feedback
    assert phrase in feedback.message


# --------------------------------------------------------------------------- wrong: each mistake named
class NoPositionEmbedding(Block):
    def position(self, x):
        return x


class PositionNotResidual(Block):
    def position(self, x):
        return self.pos_embed(x)


class QkvFromRawInput(Block):
    def attention_branch(self, x):
        q, k, v = self.make_qkv(x)
        return self.proj(self.merge(self.attend(q, k, v)))


class PostNorm(Block):
    def forward(self, x):
        x = self.position(x).permute(0, 2, 3, 1)
        x = self.norm1(x)
        q, k, v = self.make_qkv(x)
        x = x + self.proj(self.merge(self.attend(q, k, v)))
        x = self.norm2(x)
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return x.permute(0, 3, 1, 2)


class HeadsFirstSplit(Block):
    def make_qkv(self, x):
        B, H, W, C = x.shape
        return self.qkv(x).reshape(B, H, W, self.num_heads, 3, C // self.num_heads).permute(4, 0, 3, 1, 2, 5)


class MergeWithoutPermute(Block):
    def merge(self, heads):
        B, h, H, W, d = heads.shape
        return heads.reshape(B, H, W, h * d)


class NoProjection(Block):
    def attention_branch(self, x):
        q, k, v = self.make_qkv(self.norm1(x))
        return self.merge(self.attend(q, k, v)) + 0.0 * self.proj.weight.sum()


class AttentionNotResidual(Block):
    def forward(self, x):
        x = self.position(x).permute(0, 2, 3, 1)
        x = self.attention_branch(x)
        x = x + self.mlp_branch(x)
        return x.permute(0, 3, 1, 2)


class NoActivation(Block):
    def mlp_branch(self, x):
        return self.fc2(self.fc1(self.norm2(x)))


class Relu(Block):
    def mlp_branch(self, x):
        return self.fc2(F.relu(self.fc1(self.norm2(x))))


class MlpNotResidual(Block):
    def forward(self, x):
        x = self.position(x).permute(0, 2, 3, 1)
        x = x + self.attention_branch(x)
        x = self.mlp_branch(x)
        return x.permute(0, 3, 1, 2)


MISTAKES = {
    NoPositionEmbedding: "leaves out the position embedding",
    PositionNotResidual: "x = x + pos_embed(x), not x = pos_embed(x)",
    QkvFromRawInput: "qkv(norm1(x))",
    PostNorm: "pre-norm",
    HeadsFirstSplit: "(3, num_heads, head_dim), not (num_heads, 3, head_dim)",
    MergeWithoutPermute: "Permute to (B, H, W, heads, head_dim) first",
    NoProjection: "no output projection",
    AttentionNotResidual: "x = x + proj(attention), not x = proj(attention)",
    NoActivation: "no activation between fc1 and fc2",
    Relu: "uses ReLU",
    MlpNotResidual: "x = x + fc2(gelu(fc1(norm2(x))))",
}


@pytest.mark.parametrize("answer", list(MISTAKES), ids=[cls.__name__ for cls in MISTAKES])
def test_each_usual_mistake_gets_its_own_message(answer):
    incorrect(answer, MISTAKES[answer], "dilation=(1, 2, 3)")


def test_the_mistake_messages_all_differ():
    messages = {status(answer).message for answer in MISTAKES}
    assert len(messages) == len(MISTAKES)


class ChannelsLastOutput(Block):
    def forward(self, x):
        return super().forward(x).permute(0, 2, 3, 1)


class HardCodedDilations(Block):
    def attend(self, q, k, v):
        return self.msda(q, k, v, self.kernel_size, [1, 2, 3])


class HardCodedKernel(Block):
    def attend(self, q, k, v):
        return self.msda(q, k, v, 3, self.dilation)


class DetachedQkv(Block):
    def make_qkv(self, x):
        return super().make_qkv(x).detach()


class NoGrad(Block):
    def forward(self, x):
        with torch.no_grad():
            return super().forward(x)


class NoQkvBias(Block):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.qkv = nn.Linear(self.proj.in_features, 3 * self.proj.in_features, bias=False)


class SequentialMlp(Block):
    def __init__(self, dim, num_heads, msda, kernel_size=3, dilation=(1, 2, 3), mlp_ratio=4.0):
        super().__init__(dim, num_heads, msda, kernel_size, dilation, mlp_ratio)
        del self.fc1, self.fc2
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def mlp_branch(self, x):
        return self.mlp(self.norm2(x))


class FullPositionConv(Block):
    def __init__(self, dim, *args, **kwargs):
        super().__init__(dim, *args, **kwargs)
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1)  # not depthwise


class ExtraScale(Block):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gamma = nn.Parameter(torch.ones(1))


class Crashes(Block):
    def forward(self, x):
        return self.qkv(x)  # (B, C, H, W) into a Linear over C: a shape error


class NotAModule:
    def __init__(self, dim, num_heads, msda, kernel_size=3, dilation=(1, 2, 3), mlp_ratio=4.0):
        pass


@pytest.mark.parametrize("answer,fragments", [
    (ChannelsLastOutput, ["your output has shape", "channels-last: permute back"]),
    (HardCodedDilations, ["called msda with dilations [1, 2, 3]", "own dilation, [1, 2]"]),
    (HardCodedKernel, ["called msda with kernel_size=3", "own kernel_size"]),
    (DetachedQkv, ["your norm1.weight gets no gradient", "leaves autograd"]),
    (NoGrad, ["does not require grad"]),
    (NoQkvBias, ["no parameter 'qkv.bias'", "Your qkv has no bias"]),
    (SequentialMlp, ["no parameter 'fc1.weight'", "pos_embed, norm1, qkv, proj, norm2, fc1, fc2"]),
    (FullPositionConv, ["your pos_embed.weight has shape (12, 12, 3, 3)", "depthwise"]),
    (ExtraScale, ["parameters a DilateBlock does not: 'gamma'"]),
    (Crashes, ["your forward raised an error", "RuntimeError"]),
    (NotAModule, ["expected an nn.Module"]),
])
def test_other_wrong_blocks_are_told_what_is_wrong(answer, fragments):
    incorrect(answer, *fragments)


# --------------------------------------------------------------------------- cheating
_OWN_WORK = "assemble the block yourself"


class WrapsDilateBlock(nn.Module):
    def __init__(self, dim, num_heads, msda, kernel_size=3, dilation=(1, 2, 3), mlp_ratio=4.0):
        super().__init__()
        self.inner = DilateBlock(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, kernel_size=kernel_size,
                                 dilation=dilation)

    def forward(self, x):
        return self.inner(x)


class SubclassesDilateBlock(DilateBlock):
    def __init__(self, dim, num_heads, msda, kernel_size=3, dilation=(1, 2, 3), mlp_ratio=4.0):
        super().__init__(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, kernel_size=kernel_size,
                         dilation=dilation)


class UsesPackageAttention(Block):
    def __init__(self, dim, num_heads, msda, kernel_size=3, dilation=(1, 2, 3), mlp_ratio=4.0):
        super().__init__(dim, num_heads, msda, kernel_size, dilation, mlp_ratio)
        self.attn = MultiDilateAttention(dim, num_heads, kernel_size, dilation, qkv_bias=True)
        del self.qkv, self.proj

    def attention_branch(self, x):
        return self.attn(self.norm1(x))


class UsesPackageMlp(Block):
    def __init__(self, dim, num_heads, msda, kernel_size=3, dilation=(1, 2, 3), mlp_ratio=4.0):
        super().__init__(dim, num_heads, msda, kernel_size, dilation, mlp_ratio)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        del self.fc1, self.fc2

    def mlp_branch(self, x):
        return self.mlp(self.norm2(x))


class HidesDilateBlock(ConvQkv):
    """The package block kept out of sight (a plain list), its weights copied in on every call."""

    def __init__(self, dim, num_heads, msda, kernel_size=3, dilation=(1, 2, 3), mlp_ratio=4.0):
        super().__init__(dim, num_heads, msda, kernel_size, dilation, mlp_ratio)
        self.hidden = [DilateBlock(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, kernel_size=kernel_size,
                                   dilation=dilation)]

    def forward(self, x):
        inner = self.hidden[0]
        state = {("attn." if k.startswith(("qkv", "proj")) else "mlp." if k.startswith("fc") else "") + k: v
                 for k, v in self.state_dict().items()}
        inner.load_state_dict(state)
        return inner(x)


class CallsSwdaItself(Block):
    def attend(self, q, k, v):
        return lesson04_msda(q, k, v, self.kernel_size, self.dilation)  # the notebook's msda, not the given one


class CallsLibrarySwdaDirectly(Block):
    def attend(self, q, k, v):
        per_group = q.shape[1] // len(self.dilation)
        return torch.cat([dilate_lab.functional.swda(q[:, i * per_group:(i + 1) * per_group],
                                                     k[:, i * per_group:(i + 1) * per_group],
                                                     v[:, i * per_group:(i + 1) * per_group], self.kernel_size, r)
                          for i, r in enumerate(self.dilation)], dim=1)


class CatchesTheRefusal(Block):
    def attend(self, q, k, v):
        try:
            return lesson04_msda(q, k, v, self.kernel_size, self.dilation)
        except Exception:
            return self.msda(q, k, v, self.kernel_size, self.dilation)


@pytest.mark.parametrize("answer,fragment", [
    (WrapsDilateBlock, "your block holds, as `inner`, dilate_lab's DilateBlock"),
    (SubclassesDilateBlock, "your block is a subclass of dilate_lab's DilateBlock"),
    (UsesPackageAttention, "your block holds, as `attn`, dilate_lab's MultiDilateAttention"),
    (UsesPackageMlp, "your block holds, as `mlp`, dilate_lab's Mlp"),
    (HidesDilateBlock, "your block called DilateBlock.forward"),
    (CallsSwdaItself, "your block called dilate_lab.swda"),
    (CallsLibrarySwdaDirectly, "your block called dilate_lab.swda"),
    (CatchesTheRefusal, "your block called dilate_lab.swda"),
])
def test_a_block_that_uses_the_librarys_own_is_refused(answer, fragment):
    message = incorrect(answer, fragment)
    assert _OWN_WORK in message


class IgnoresTheGivenMsda(Block):
    """Right output, attention computed with its own code: the given msda is never called."""

    def attend(self, q, k, v):
        return plain_msda(q, k, v, self.kernel_size, self.dilation)


class CallsButDiscards(Block):
    """Calls the given msda, throws the result away and uses its own attention."""

    def attend(self, q, k, v):
        self.msda(q, k, v, self.kernel_size, self.dilation)
        return plain_msda(q, k, v, self.kernel_size, self.dilation)


def test_a_block_that_never_calls_the_given_msda_is_refused():
    incorrect(IgnoresTheGivenMsda, "never called the msda it was given", "self.msda = msda")


def test_a_block_that_ignores_what_msda_returns_is_refused():
    incorrect(CallsButDiscards, "does not follow what its msda returns", "an msda that returns v")


def test_the_library_works_again_after_a_refusal():
    incorrect(CallsSwdaItself, "dilate_lab.swda")
    q = torch.randn(1, 1, 4, 4, 2)
    assert swda(q, q, q, 3, 1).shape == q.shape
    assert not torch.overrides._get_current_function_mode_stack()


# --------------------------------------------------------------------------- training the learner's block
def test_a_classifier_of_the_solution_blocks_trains_on_digits():
    from dilate_lab.course.data import load_digits_data

    answer = solution_class()
    train, test = load_digits_data(size=32, seed=0)
    seed_everything(0)
    model = BlockClassifier(lambda dim: answer(dim, 3, lesson04_msda, mlp_ratio=2.0))
    assert [type(b) for b in model.blocks] == [answer, answer]
    assert model(train.images[:4]).shape == (4, 10)
    history = fit(model, train.subset(640), test.subset(200), epochs=2, lr=1e-2, seed=0, progress=False)
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.final_test_accuracy > 0.3  # chance is 0.1


def test_block_classifier_checks_its_arguments():
    with pytest.raises(ValueError, match="make_block"):
        BlockClassifier("not a function")
    with pytest.raises(ValueError, match="make_block must return an nn.Module"):
        BlockClassifier(lambda dim: None)
    with pytest.raises(ValueError, match="depth"):
        BlockClassifier(lambda dim: nn.Identity(), depth=0)
    model = BlockClassifier(lambda dim: nn.Identity())
    with pytest.raises(ValueError, match="multiples of patch_size"):
        model(torch.zeros(1, 1, 30, 32))
    with pytest.raises(ValueError, match=r"x must be images \(B, 1, H, W\)"):
        model(torch.zeros(1, 3, 32, 32))
