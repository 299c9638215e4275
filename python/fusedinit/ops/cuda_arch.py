"""Which CUDA GPUs the compiled CUDA kernels run on (setup.py builds SASS for sm_80 and
sm_90 and PTX for sm_90): a GPU older than sm_80 has no kernel image, so the CUDA backend
must not be picked there."""
from __future__ import annotations

from typing import Tuple

import torch

MIN_CAPABILITY: Tuple[int, int] = (8, 0)


def cuda_kernels_run_on(device: torch.device) -> bool:
    """Whether the CUDA kernels of this build can launch on `device` (a CUDA device)."""
    return torch.cuda.get_device_capability(device) >= MIN_CAPABILITY


def too_old_message(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return (f"{device} ({torch.cuda.get_device_name(device)}) has compute capability "
            f"{major}.{minor}; the CUDA kernels of this build need "
            f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer")
