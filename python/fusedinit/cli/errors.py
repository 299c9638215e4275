"""Argument parsing shared by `python -m fusedinit bench` and `init-model`: every bad argument
or input ends in one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable

import torch


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: `prog: error: message (see --help)`, exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        message = " ".join(str(message).split())  # one line, whatever the exception said
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seed(text: str) -> int:
    value = _int(text)
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^64), got {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def choice_list(choices) -> Callable[[str], list[str]]:
    """A comma-separated, non-empty list of names from choices."""
    def parse(text: str) -> list[str]:
        names = [s.strip() for s in text.split(",")]
        bad = [n for n in names if n not in choices]
        if not text.strip() or bad:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(map(repr, bad or [text]))}; choose from {', '.join(choices)}")
        return names
    return parse


def device(text: str) -> torch.device:
    """cpu or cuda[:index]; cuda only where a GPU is visible."""
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a device: {text!r} (cpu or cuda)") from None
    if dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r}: only cpu and cuda are supported")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: no CUDA device is available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return dev


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
