"""Pick the torch device from settings; CUDA is honoured when asked for and present."""

from __future__ import annotations

import torch


class DeviceUnavailableError(RuntimeError):
    pass


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"UNLEARN_DEVICE={name!r} but no CUDA device is available on this machine"
        )
    return device
