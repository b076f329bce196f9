"""``fit_head_ray``: the epochs of ``train.fit_head`` data-parallel on Ray Train (``geoscope train ... --ray``).

The driver does everything a local run does before and after the epochs (the split, the targets, the
head's ``on_train_start`` / ``prepare_targets``; afterwards ``fit_data``, the report, the calibration,
the model folder). The epochs run in a ``ray.train.torch.TorchTrainer``: N workers joined in one
torch.distributed process group (gloo: CPUs), each running the same loop as a local run
(``train.run_epochs``) with a ``GlooSync``:

- every worker opens the store itself (memory-mapped; it must sit where every node sees it, at the same
  path) and draws the same seeded permutation; of each batch of ``batch_size`` rows it reads and trains
  on its 1/N share, weighting its loss by its share, and the gradients are summed over the workers in
  one all-reduce per step: the update is the one a single process makes on the whole batch, so the
  workers' weights stay identical without broadcasting them;
- rank 0 validates after each epoch, writes the checkpoint (``MODEL.train/checkpoint.pt``, the same file
  a local run writes and resumes from, whatever the worker count) and sends the epoch's record to the
  driver (a ``ray.util.queue.Queue``), which logs it; its early-stopping decision is broadcast.

A worker that dies makes Ray Train restart the group (``max_failures`` times); the new group resumes
from the last epoch's checkpoint, as the same command does after the driver is interrupted.
Ray is imported only here, when it is asked for; without it ``--ray`` is one sentence naming the extra.
"""

from __future__ import annotations

import json
import logging
import math
import queue as stdlib_queue
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from geoscope.errors import GeoscopeError, InputError
from geoscope.heads.base import Targets, load_head_state
from geoscope.heads.rows import EmbeddingRows
from geoscope.optional import require
from geoscope.store import EmbeddingStore
from geoscope.store.ray_embed import check_reachable, local_num_cpus, ray_session
from geoscope.train import TrainConfig, TrainResult, read_checkpoint, run_epochs, training_fingerprint

logger = logging.getLogger(__name__)

#: seconds between the driver's looks at the queue of epoch records
POLL_S = 0.5


@dataclass
class RayTrainOptions:
    """How to run training on Ray: ``workers`` training processes (default 2), on the cluster at
    ``address`` (``HOST:PORT``, ``ray://HOST:PORT``, ``auto``; default: a local instance), each reserving
    ``cpus_per_worker`` CPUs and running ``threads`` torch threads (default: its CPUs, at least 1);
    ``max_failures``: how often a failed worker group is restarted (it resumes from the checkpoint)."""

    workers: int = 2
    address: str | None = None
    cpus_per_worker: float = 1.0
    threads: int | None = None
    max_failures: int = 2

    def check(self) -> None:
        if self.workers < 1:
            raise InputError(f"--workers must be at least 1 with --ray, got {self.workers}")
        if self.cpus_per_worker <= 0 or self.max_failures < 0 or (self.threads is not None and self.threads < 1):
            raise InputError("cpus_per_worker must be above 0, threads at least 1 and max_failures at least 0")


class GlooSync:
    """``train.LocalSync``'s methods over the torch.distributed group Ray Train set up (gloo on CPU)."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def reduce_grads(self, head) -> None:
        """Sum every parameter's gradient over the workers, in one all-reduce. A parameter that no worker
        gave a gradient keeps none (as in one process, where AdamW then skips it)."""
        import torch.distributed as dist

        params = [p for p in head.parameters() if p.requires_grad]
        if not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
                         + [torch.tensor([float(p.grad is not None) for p in params], dtype=params[0].dtype)])
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            size = p.numel()
            p.grad = flat[offset: offset + size].view_as(p)
            offset += size
        for p, had in zip(params, flat[offset:].tolist()):
            if had == 0:
                p.grad = None

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = tensor.clone()
        dist.all_reduce(out)
        return out

    def agree(self, flag: bool) -> bool:
        import torch.distributed as dist

        t = torch.tensor([int(bool(flag))])
        dist.broadcast(t, src=0)
        return bool(t.item())


def _train_loop(config: dict) -> None:
    """What each Ray Train worker runs: ``run_epochs`` on its share of every batch."""
    import ray
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    head, targets, val_targets, train_rows, val_rows = (
        ray.get(config[k]) for k in ("head", "targets", "val_targets", "train_rows", "val_rows"))
    store = EmbeddingStore.open(config["store"])
    records = config["queue"]
    result = run_epochs(
        head, EmbeddingRows(store, train_rows), targets, EmbeddingRows(store, val_rows), val_targets,
        TrainConfig(**config["cfg"]), config["lr"], checkpoint=config["checkpoint"], progress=False,
        log=records.put if rank == 0 else None, sync=GlooSync(rank, world),
    )
    ray.train.report({"epochs_run": len(result.history), "best_epoch": result.best_epoch})


def _store_of(rows: EmbeddingRows) -> EmbeddingStore:
    store = rows.data
    if not isinstance(store, EmbeddingStore):
        raise InputError("training on Ray reads the embeddings from a store on disk: give it a store directory "
                         "(made by `geoscope embed`), not arrays in memory")
    return store


def _failure(exc: BaseException) -> BaseException:
    """One sentence for a failed Ray Train run; a worker's own geoscope error is raised as it is."""
    failures = getattr(exc, "worker_failures", None) or {}
    for err in failures.values():
        cause = getattr(err, "cause", None) or err
        if isinstance(cause, GeoscopeError):
            return cause
    first = next(iter(failures.values()), None) or getattr(exc, "controller_failure", None) or exc
    text = " ".join(str(first).split())[:300]
    return GeoscopeError(f"training on Ray failed ({type(first).__name__}: {text}); run the same command again to "
                         "resume from the last epoch's checkpoint")


def fit_head_ray(head, emb: EmbeddingRows, targets: Targets, val_emb: EmbeddingRows, val_targets: Targets,
                 cfg: TrainConfig, lr: float, checkpoint, progress: bool, log, options: RayTrainOptions) -> TrainResult:
    """``train.fit_head``'s epochs on Ray Train (called by it with ``ray=options``); returns the same result."""
    require("ray")
    options.check()
    if options.address:
        check_reachable(options.address)  # a wrong address fails within seconds, before anything starts
    store = _store_of(emb)
    if _store_of(val_emb) is not store:
        raise InputError("the training and validation rows must come from the same store")
    path = Path(store.path).absolute()
    ckpt = Path(checkpoint).absolute() if checkpoint else Path(tempfile.mkdtemp(prefix="geoscope-train-")) / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    n = len(emb)
    fingerprint = training_fingerprint(head, cfg, targets, n, val_targets)
    state = read_checkpoint(ckpt, fingerprint)  # refused here, not by every worker
    done = 0 if state is None else len(json.loads(state["history"]))
    threads = options.threads or max(1, int(math.floor(options.cpus_per_worker)))
    local = not options.address
    with ray_session(options.address, num_cpus=local_num_cpus(options.workers) if local else None) as ray:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
        from ray.util.queue import Empty, Queue

        records = Queue(actor_options={"num_cpus": 0})
        config = {
            "head": ray.put(head), "targets": ray.put(targets), "val_targets": ray.put(val_targets),
            "train_rows": ray.put(emb.rows), "val_rows": ray.put(val_emb.rows), "store": str(path),
            "cfg": cfg.to_dict(), "lr": lr, "checkpoint": str(ckpt), "threads": threads, "queue": records,
        }
        trainer = TorchTrainer(
            _train_loop, train_loop_config=config, torch_config=TorchConfig(backend="gloo"),
            scaling_config=ScalingConfig(num_workers=options.workers, use_gpu=False,
                                         resources_per_worker={"CPU": options.cpus_per_worker}),
            run_config=RunConfig(name="geoscope-train", storage_path=str(ckpt.parent / "ray"),
                                 failure_config=FailureConfig(max_failures=options.max_failures)),
        )
        outcome: dict = {}

        def fit() -> None:
            try:
                outcome["result"] = trainer.fit()
            except BaseException as exc:  # noqa: BLE001 - handed to the driver's thread below
                outcome["error"] = exc

        runner = threading.Thread(target=fit, name="geoscope-ray-train", daemon=True)
        runner.start()
        bar = tqdm(total=cfg.epochs, initial=done, desc=f"training on Ray ({options.workers} workers)", unit="epoch",
                   disable=not progress)
        try:
            while True:
                alive = runner.is_alive()
                try:
                    while True:  # everything queued so far
                        record = records.get(block=False)
                        bar.update(record["epoch"] - bar.n)
                        if log is not None:
                            log(record)
                except (stdlib_queue.Empty, Empty):
                    pass
                if not alive:
                    break
                runner.join(POLL_S)
        finally:
            bar.close()
        if "error" in outcome:
            raise _failure(outcome["error"]) from None
    state = read_checkpoint(ckpt, fingerprint)
    if state is None:
        raise GeoscopeError(f"training on Ray ended without writing its checkpoint {ckpt}")
    history = json.loads(state["history"])
    if state["best_head"] is not None:
        load_head_state(head, state["best_head"])
    head.eval()
    stopped = bool(history and history[-1].get("stopped_early"))
    return TrainResult(head, history, best_epoch=state["best_epoch"], stopped_early=stopped, lr=lr)
