"""The exact rule transformers applies to each parameter, read off a stock model as it builds.

A TorchDispatchMode logs every write to every tensor while the stock model is constructed and
initialized; torch's `trunc_normal_` (which runs as normal_ / uniform_ plus fix-ups, depending
on the torch version) is logged as one write. A parameter's rule is its last whole-tensor
`normal_` / `uniform_` / `trunc_normal_` / `fill_` / `zero_` (with the arguments transformers
passed), plus a padding row when a `zero_` of one row of dim 0 follows a normal. Any other
write after it (copy_, mul_, ...) makes the rule unknown (None). The oracle is independent of
fusedinit's own recorder: it only logs."""
from __future__ import annotations

import math
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from scipy import stats
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

aten = torch.ops.aten
_INITS = {aten.normal_.default: "normal", aten.uniform_.default: "uniform",
          aten.fill_.Scalar: "constant", aten.zero_.default: "constant"}


@dataclass(frozen=True)
class Rule:
    kind: str  # "normal", "uniform", "trunc_normal" or "constant"
    a: float = 0.0  # normal / trunc_normal: mean, uniform: low, constant: value
    b: float = 0.0  # normal / trunc_normal: std, uniform: high
    low: float = 0.0  # trunc_normal: absolute bounds
    high: float = 0.0
    padding_row: Optional[int] = None

    def distribution(self):
        """The scipy.stats distribution of one element."""
        if self.kind == "normal":
            return stats.norm(self.a, self.b)
        if self.kind == "uniform":
            return stats.uniform(self.a, self.b - self.a)
        return stats.truncnorm((self.low - self.a) / self.b, (self.high - self.a) / self.b,
                               loc=self.a, scale=self.b)


def _bound(func, args, kwargs) -> dict:
    """Arguments of an aten call by schema name, defaults filled in."""
    out = {}
    for i, arg in enumerate(func._schema.arguments):
        if i < len(args):
            out[arg.name] = args[i]
        elif arg.name in kwargs:
            out[arg.name] = kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
    return out


TRUNC_NORMAL = "trunc_normal_"  # stands for the whole of torch's trunc_normal_ in the log


class _WriteLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.writes = defaultdict(list)  # storage data_ptr -> [(func, view geometry, args)]
        self.paused = False

    def log(self, t: torch.Tensor, func, bound: dict) -> None:
        if t.device.type != "meta":
            geometry = (t.storage_offset(), tuple(t.shape), tuple(t.stride()))
            self.writes[t.untyped_storage().data_ptr()].append((func, geometry, bound))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.paused:
            return out
        bound = _bound(func, args, kwargs)
        for arg in func._schema.arguments:
            if arg.alias_info is None or not arg.alias_info.is_write:
                continue
            for t in tree_leaves(bound.get(arg.name)):
                if isinstance(t, torch.Tensor):
                    self.log(t, func, bound)
        return out


@contextmanager
def _trunc_normal_logged(log: _WriteLog):
    """torch.nn.init.trunc_normal_ (and transformers' table entry for it) logged as one write."""
    tables = [torch.nn.init.__dict__]
    try:
        from transformers import initialization  # transformers >= 5
        tables.append(initialization.TORCH_INIT_FUNCTIONS)
    except ImportError:
        pass
    saved = [(table, table["trunc_normal_"]) for table in tables]
    torch_trunc_normal = saved[0][1]

    def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
        log.paused = True
        try:
            out = torch_trunc_normal(tensor, mean=mean, std=std, a=a, b=b, generator=generator)
        finally:
            log.paused = False
        log.log(tensor, TRUNC_NORMAL, dict(mean=mean, std=std, a=a, b=b))
        return out

    for table, _ in saved:
        table["trunc_normal_"] = trunc_normal_
    try:
        yield
    finally:
        for table, original in saved:
            table["trunc_normal_"] = original


def _rule_of(p: torch.Tensor, writes) -> Optional[Rule]:
    whole = (p.storage_offset(), tuple(p.shape), tuple(p.stride()))
    rule = None
    for func, geometry, bound in writes:
        if geometry == whole and func in _INITS:
            kind = _INITS[func]
            if kind == "normal":
                rule = Rule("normal", float(bound["mean"]), float(bound["std"]))
            elif kind == "uniform":
                rule = Rule("uniform", float(bound["from"]), float(bound["to"]))
            else:
                rule = Rule("constant", 0.0 if func is aten.zero_.default else float(bound["value"]))
            continue
        offset, shape, stride = geometry
        row, rest = divmod(offset - p.storage_offset(), p.stride(0)) if p.dim() else (0, 1)
        if (func is aten.zero_.default and rule is not None and rule.kind == "normal"
                and p.dim() >= 1 and shape == tuple(p.shape[1:]) and stride == tuple(p.stride()[1:])
                and rest == 0 and 0 <= row < p.shape[0]):
            rule = Rule("normal", rule.a, rule.b, padding_row=row)
            continue
        if geometry == whole and func == TRUNC_NORMAL:
            rule = Rule("trunc_normal", float(bound["mean"]), float(bound["std"]),
                        float(bound["a"]), float(bound["b"]))
            continue
        rule = None  # a write the oracle cannot express: the rule is unknown
    return rule


def stock_with_rules(cls, config, seed: int = 0):
    """(stock model built with torch.manual_seed(seed), {parameter name: Rule or None})."""
    log = _WriteLog()
    torch.manual_seed(seed)
    with log, _trunc_normal_logged(log):
        model = cls(config)
    rules: Dict[str, Optional[Rule]] = {}
    for name, p in model.named_parameters():
        rules[name] = _rule_of(p, log.writes.get(p.untyped_storage().data_ptr(), []))
    return model, rules


def check_sample_follows(x: torch.Tensor, rule: Rule, what: str, z: float = 6.0) -> None:
    """The values `x` are a sample of `rule`: padding row zero, values inside the support, and
    a z-SE test on the mean and the std with bounds from the sample size and the rule's exact
    moments (the sample variance of n values has variance (kurtosis - 1) var^2 / n)."""
    if rule.padding_row is not None:
        assert (x[rule.padding_row] == 0).all(), f"{what}: padding row {rule.padding_row}"
        keep = torch.ones(x.shape[0], dtype=torch.bool)
        keep[rule.padding_row] = False
        x = x[keep]
    x = x.detach().double().flatten()
    n = x.numel()
    if rule.kind == "normal" and rule.b == 0:  # N(mean, 0): every value is the mean
        assert (x == rule.a).all(), f"{what}: N({rule.a}, 0) must be the constant {rule.a}"
        return
    dist = rule.distribution()
    mu, sigma = float(dist.mean()), float(dist.std())
    excess_kurtosis = float(dist.stats(moments="k"))
    lo, hi = dist.support()
    assert lo <= float(x.min()) and float(x.max()) <= hi, f"{what}: outside [{lo}, {hi}]"
    mean, std = float(x.mean()), float(x.std())
    assert abs(mean - mu) <= z * sigma / math.sqrt(n), f"{what}: mean {mean} vs {mu} (n={n})"
    rel_se_std = math.sqrt((excess_kurtosis + 2) / (4 * n))
    assert abs(std / sigma - 1) <= z * rel_se_std, f"{what}: std {std} vs {sigma} (n={n})"
