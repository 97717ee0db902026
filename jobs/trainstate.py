"""What every training job shares: resumable state in safetensors, loss logs, and the optional
torch DDP wiring.

State files hold module weights, AdamW moments (flattened to tensors) and the step; the
optimiser's hyper-parameters and anything else go in the JSON header. Nothing is pickled.

DDP: run a job under `torchrun --nproc_per_node N` (or any launcher that sets RANK /
WORLD_SIZE / MASTER_ADDR). Every step draws one *global* batch from (seed, step) and rank r
takes rows r, r+N, ...; DDP averages gradients, so N workers with batch B/N take the same
steps as one worker with batch B (tested in tests/train/test_train.py)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from patchscaler.checkpoint import read_metadata
from storage import read_uri, write_uri


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @classmethod
    def from_env(cls, device: str = "cpu") -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend)
        rank = int(os.environ.get("RANK", "0"))
        if device.startswith("cuda") and world > 1:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        return cls(rank, world, device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, x):
        """This rank's rows of a global batch."""
        return x[self.rank::self.world]

    def wrap(self, module: nn.Module) -> nn.Module:
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP
        return DDP(module, device_ids=[int(self.device.split(":")[1])] if self.device.startswith("cuda:") else None)

    def barrier(self):
        if self.world > 1:
            dist.barrier()


def save_state(path: str, modules: dict[str, nn.Module], opt: torch.optim.Optimizer | None,
               step: int, extra: dict | None = None) -> None:
    t = {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items()
         for k, v in m.state_dict().items()}
    groups = []
    if opt is not None:
        sd = opt.state_dict()
        for i, st in sd["state"].items():
            for k, v in st.items():
                t[f"opt.{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
        groups = sd["param_groups"]
    meta = {"step": str(step), "param_groups": json.dumps(groups), "extra": json.dumps(extra or {})}
    write_uri(path, st_save(t, metadata=meta))


def load_state(path: str, modules: dict[str, nn.Module], opt: torch.optim.Optimizer | None) -> tuple[int, dict]:
    data = read_uri(path)
    meta = read_metadata(data)
    t = st_load(data)
    for name, m in modules.items():
        m.load_state_dict({k[len(name) + 1:]: v for k, v in t.items() if k.startswith(name + ".")})
    if opt is not None and meta.get("param_groups", "[]") != "[]":
        state: dict = {}
        for k, v in t.items():
            if k.startswith("opt."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["step"]), json.loads(meta.get("extra", "{}"))


class LossLog:
    """Appends one JSON line per logged step to WORK/logs/STAGE.jsonl (the loss curve)."""

    def __init__(self, work: str, stage: str, enabled: bool = True):
        self.path = os.path.join(work, "logs", f"{stage}.jsonl")
        self.enabled = enabled
        self.t0 = time.time()
        if enabled:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)

    def write(self, step: int, **values) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, "time": round(time.time() - self.t0, 1),
                                    **{k: round(float(v), 6) for k, v in values.items()}}) + "\n")


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    import math
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


class EMA:
    """Exponential moving average of a module's parameters (the weights that get shipped)."""

    def __init__(self, module: nn.Module, decay: float):
        import copy
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # short warm-up: early EMA follows the model
        for e, p in zip(self.shadow.parameters(), module.parameters()):
            e.lerp_(p.detach(), 1 - d)
