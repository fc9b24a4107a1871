"""Several processes launched by torchrun: which one this is, and how they agree.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and where to meet); a plain run is rank 0 of 1
and never touches torch.distributed. GPUs talk over NCCL, CPUs over gloo.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from seq2seq.device import resolve_device


class Ranks:
    def __init__(self):
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.started = False

    @property
    def main(self) -> bool:
        """Rank 0: the one that validates, logs and writes."""
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """The device named in the config; each process of a multi-GPU run takes its own GPU."""
        device = resolve_device(name)
        if device.type == "cuda" and self.world > 1 and device.index is None:
            device = torch.device("cuda", self.local_rank)
        return device

    def start(self, device: torch.device) -> None:
        if self.world > 1 and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.started = True

    def stop(self) -> None:
        if self.started:
            dist.barrier()
            dist.destroy_process_group()
            self.started = False

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def agree_max(self, value: int, device: torch.device) -> int:
        """The largest of every rank's value (a vote where any rank can raise the flag)."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.long, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def any_flag(self, flag: torch.Tensor) -> torch.Tensor:
        """A boolean tensor that is True on every rank when it is True on any, without
        waiting on the host (the all-reduce is queued on the device)."""
        if self.world == 1:
            return flag
        value = flag.to(torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return value.bool()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()
