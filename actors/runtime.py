"""Process set-up shared by the entry points (OpenMP's wait policy) and by every Ray job here
(the upscale graph, build-rtm): starting or joining Ray quietly, and the arguments of an actor
pool stage. Imports nothing heavy: the command line imports it before `--help`."""
from __future__ import annotations

import logging
import os
import signal

RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")


def passive_openmp() -> None:
    """Idle OpenMP threads sleep instead of spinning, unless the user chose otherwise: on a busy
    host spinning threads fight the process that holds the core (a tiny model's Patch-DiT took
    155 s instead of 0.8 s beside other jobs, bench/busy_host.py). libgomp reads the variable
    when torch loads, so each entry point calls this before anything imports torch: the command
    line, the tests' conftest, the scripts and benchmarks; init_ray hands it to the Ray workers.
    patchscaler/__init__.py sets it as well, for programs that use the library alone (it cannot
    import this module: the library imports nothing above it)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def quiet_ray(verbose: bool = False) -> None:
    """Ray's own Python logs at WARNING and Ray Data's progress bars off (ours replace them),
    unless verbose."""
    level = logging.INFO if verbose else logging.WARNING
    for name in RAY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # "Progress bars disabled": ours replace them, that is the point
    logging.getLogger("ray.data._internal.progress").setLevel(logging.INFO if verbose else logging.ERROR)
    # Ray Data's issue detectors ("... consider setting memory=..." for an operator of ours,
    # many lines): our actors' memory is bounded by design (pieces, one call at a time), and
    # the advice is about Ray Data's arguments, which the user of this command does not write
    logging.getLogger("ray.data._internal.issue_detection").setLevel(logging.INFO if verbose else logging.ERROR)
    # "Token authentication is enabled for this Ray cluster": a local Ray of our own turning on
    # its default; nothing a user of this command can act on
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.INFO if verbose else logging.ERROR)


def _python_handlers() -> dict:
    """The Python-level SIGTERM / SIGHUP handlers set now (e.g. the CLI's), main thread only."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        return {}
    out = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        h = signal.getsignal(sig)
        if callable(h) and h not in (signal.default_int_handler,):
            out[sig] = h
    return out


def init_ray(address: str | None = None, verbose: bool = False):
    import ray
    import ray.data  # noqa: F401  (its import configures its loggers: quieten them after)
    quiet_ray(verbose)
    if not ray.is_initialized():
        # no address: a Ray of our own ("local"), never whichever cluster `ray start` left
        # running on this host; inside `ray job submit` RAY_ADDRESS names the job's cluster
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        # the workers' OpenMP threads sleep when idle (passive_openmp); a cluster's workers get it
        # from the job's runtime environment
        passive_openmp()
        env = {"OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"]}
        kept = _python_handlers()
        # a Ray of our own starts no dashboard: nobody looks at it, and on a small host its
        # process takes CPU and memory from the run (`--verbose` keeps it, for those who do)
        own = {} if address != "local" or verbose else {"include_dashboard": False}
        ray.init(address=address, log_to_driver=verbose, runtime_env={"env_vars": env},
                 logging_level=logging.INFO if verbose else logging.WARNING, **own)
        # ray.init puts its own SIGTERM handler (a C++ stack dump) over the caller's: keep the caller's
        for sig, handler in kept.items():
            signal.signal(sig, handler)
    quiet_ray(verbose)  # ray.init and the ray.data import set their own levels
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbose
    ctx.print_on_execution_start = verbose
    # a block whose task failed for good (its actor died on both tries) is dropped, not the run:
    # the stages catch every per-image error themselves, so only such deaths end up here, and
    # the driver gives the photo an error row (graph._lost)
    ctx.max_errored_blocks = -1
    return ray


def _retry_once() -> dict:
    """Ray Data restarts a dead actor without end (its default) and, with this, retries the row
    it died on once, not forever."""
    return {"max_restarts": -1, "max_task_retries": 1}


def pool(size: int, cpus: float, gpus: float = 0.0, resources: dict | None = None, rows: int = 1) -> dict:
    """map_batches arguments of an actor pool stage: `size` actors, `rows` rows per call."""
    from ray.data import ActorPoolStrategy
    # one call at a time per actor: a model call already uses the actor's CPU share.
    # An actor that dies is restarted, and its row tried once more: a photo that kills its worker
    # every time (a native crash, the OOM killer) must not hold the run forever (graph.py).
    # Nothing queued behind a call either: rows queued on an actor die with it and use up their
    # one retry, so a poison photo would take an innocent photo's piece down with it.
    kw = {"compute": ActorPoolStrategy(size=max(1, size), max_concurrent_calls_per_actor=1,
                                       max_tasks_in_flight_per_actor=1),
          "num_cpus": cpus, "batch_size": max(1, rows), "ray_remote_args_fn": _retry_once}
    if gpus:
        kw["num_gpus"] = gpus
    if resources:
        kw["resources"] = dict(resources)
    return kw


def _probe(requested: str, gpus: float) -> dict:
    """In a Ray worker that holds what a stage reserves: the stage's device (or NoCUDA's text)."""
    import ray
    import torch

    from patchscaler.model import NoCUDA, resolve_device
    ids = [str(i) for i in ray.get_gpu_ids()]
    try:
        return {"device": resolve_device(requested, gpus), "gpu_ids": ids, "error": ""}
    except NoCUDA as e:
        return {"device": "", "gpu_ids": ids, "error": str(e), "torch": torch.__version__}


def check_devices(stages: dict[str, tuple[float, dict]], requested: str, fixed: bool,
                  wait: float = 600.0) -> dict[str, dict]:
    """Before the pipeline starts: for each stage that reserves GPUs ({name: (gpus, custom
    resources)}), one task with the same reservation resolves the stage's device where the
    stage will run. A stage that finds no CUDA, or no node that can hold it, stops the run with
    one line (DeviceError), not every image as an error row nor a silent CPU run. `fixed`: the
    Ray has the nodes it will ever have (a Ray of our own), so too few GPUs fail at once; on a
    cluster the autoscaler may bring a GPU node within `wait` seconds."""
    import ray
    out = {}
    for name, (gpus, resources) in stages.items():
        if not gpus:
            continue
        if fixed and ray.cluster_resources().get("GPU", 0) < gpus:
            raise DeviceError(f"the {name} stage reserves {gpus:g} GPU(s) per actor, but this Ray has "
                              f"{ray.cluster_resources().get('GPU', 0):g}: drop the GPU options or use a cluster with GPUs")
        task = ray.remote(_probe).options(num_cpus=0, num_gpus=gpus, resources=dict(resources) or None)
        try:
            got = ray.get(task.remote(requested, gpus), timeout=wait)
        except ray.exceptions.GetTimeoutError:
            raise DeviceError(f"the {name} stage: no node could take an actor with {gpus:g} GPU(s) "
                              f"and {resources or 'no custom resources'} within {wait:.0f} s") from None
        if got["error"]:
            raise DeviceError(f"the {name} stage: {got['error']}")
        out[name] = got
    return out


class DeviceError(RuntimeError):
    """A stage cannot run on the device it was given (exit 1, one line)."""
