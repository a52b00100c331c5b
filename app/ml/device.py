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


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a host tensor to ``device``. On CUDA the copy goes through pinned (page-locked)
    host memory and is non-blocking, so it overlaps with queued kernels; the result is
    safe to use at once on the current stream. On the CPU it is the tensor itself."""
    if device.type != "cuda" or tensor.device.type == "cuda":
        return tensor.to(device)
    if not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def device_of(model: torch.nn.Module) -> torch.device:
    """Where a model's parameters live (the device its inputs must go to)."""
    return next(model.parameters()).device


def describe_device(device: torch.device) -> str:
    """A human name for benchmark reports: the card's name on CUDA, the CPU otherwise."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    import os
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


# A dataset is copied to the GPU whole when it takes at most this share of the free memory.
RESIDENT_FRACTION = 0.25


def resident(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device`` in one pinned, non-blocking copy when it fits comfortably
    (MNIST's 60,000 images are 188 MB), so that loops index it there instead of copying a
    minibatch per step; otherwise (or on the CPU) the tensor itself, and the loop copies
    each minibatch with ``to_device``."""
    if device.type != "cuda" or tensor.device.type == "cuda":
        return tensor
    free, _ = torch.cuda.mem_get_info(device)
    if tensor.numel() * tensor.element_size() > RESIDENT_FRACTION * free:
        return tensor
    return to_device(tensor, device)
