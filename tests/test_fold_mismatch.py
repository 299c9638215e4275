"""A torch whose trunc_normal_ no longer runs the op sequence the engine folds: simulated by
replacing torch's sampler with an edited copy of its own source. The engine must warn
(FoldMismatchWarning: function, torch version, the parameter's name, not the contract's
TruncNormal) and still give values of the right distribution - the code runs as written on
the contract's draws."""
import inspect
import textwrap
import warnings

import pytest
import torch
from torch import nn

import fusedinit
from fusedinit import torch_internals as ti

scipy_stats = pytest.importorskip("scipy.stats")

pytestmark = pytest.mark.skipif(ti.torch_release() <= ti.ERFINV_LAST_RELEASE,
                                reason="torch <= 2.12: the erfinv chain")


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """The warning is once per process: each test starts as a new process would."""
    monkeypatch.setattr(ti, "_warned", set())


def changed_sampler(monkeypatch, old: str, new: str) -> None:
    """torch.nn.init's sampler with `old` replaced by `new` in its source."""
    source = textwrap.dedent(inspect.getsource(ti.trunc_normal_code()))
    assert old in source, f"the simulation's anchor {old!r} is not in torch's sampler"
    namespace = dict(vars(torch.nn.init))
    exec(compile(source.replace(old, new), "<changed torch sampler>", "exec"), namespace)
    monkeypatch.setattr(torch.nn.init, "_no_grad_trunc_normal_",
                        namespace["_no_grad_trunc_normal_"])


def drawn(mean, std, a, b, rows=128):
    lin = nn.Linear(64, rows, bias=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fusedinit.fuse(lin, seed=5):
            nn.init.trunc_normal_(lin.weight, mean=mean, std=std, a=a, b=b)
    mismatches = [w for w in caught if issubclass(w.category, ti.FoldMismatchWarning)]
    return lin.weight.detach().reshape(-1).double().numpy(), mismatches


def assert_trunc_normal(values, mean, std, a, b):
    assert values.min() >= a and values.max() <= b
    dist = scipy_stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    assert scipy_stats.kstest(values, dist.cdf).pvalue > 1e-4


def test_the_installed_sampler_folds_without_a_warning():
    values, mismatches = drawn(0.0, 1.0, -1.0, 1.5)
    assert mismatches == []
    expected = fusedinit.trunc_normal_(torch.empty(128, 64), 0.0, 1.0, -1.0, 1.5, seed=5,
                                       stream=fusedinit.param_stream("weight"))
    assert torch.equal(torch.from_numpy(values).float(), expected.reshape(-1))
    _, narrow = drawn(0.0, 1.0, 1.5, 3.0)  # the branch the engine does not fold: no warning
    assert narrow == []


def test_a_changed_threshold_warns_and_keeps_the_distribution(monkeypatch):
    changed_sampler(monkeypatch, "if p > 0.3:", "if p > 0.5:")
    mean, std, a, b = 0.0, 1.0, 0.0, 1.0  # 34% of the mass: torch now takes the other branch
    values, mismatches = drawn(mean, std, a, b)
    assert len(mismatches) == 1
    message = str(mismatches[0].message)
    for part in ("torch.nn.init.trunc_normal_", ti.TORCH_VERSION, "'weight'", "aten::uniform_",
                 "not the contract's TruncNormal"):
        assert part in message, (part, message)
    assert_trunc_normal(values, mean, std, a, b)


def test_an_extra_op_warns_once_and_keeps_the_distribution(monkeypatch):
    anchor = "result = tensor.normal_(mean, std, generator=generator)"
    changed_sampler(monkeypatch, anchor, anchor + "; result.clamp_(-1e30, 1e30)")
    mean, std, a, b = 0.0, 1.0, -1.0, 1.5
    values, mismatches = drawn(mean, std, a, b)
    assert len(mismatches) == 1
    assert "chain stopped" in str(mismatches[0].message)
    assert_trunc_normal(values, mean, std, a, b)
    _, again = drawn(mean, std, a, b)
    assert again == [], "once per process"
