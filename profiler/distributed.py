"""Where ``profiler extract`` runs its sites: a Dask cluster.

:func:`dask_client` gives a :class:`distributed.Client` for the three cases a user meets:

* nothing given — a :class:`distributed.LocalCluster` sized to this machine (one single-threaded
  worker process per core, fewer when memory is short or there are fewer sites than cores);
* ``workers=N`` — a LocalCluster with exactly N worker processes;
* ``scheduler="tcp://HOST:PORT"`` — an existing cluster (``dask scheduler`` + ``dask worker``,
  dask-jobqueue on SLURM, dask-kubernetes …); its workers must see the plate and output folders
  under the same paths (a shared file system).

Worker processes run one task at a time (``threads_per_worker=1``): segmentation and measurement
are numpy code that holds the GIL part of the time, so processes scale and threads do not.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from cellfusion_core.errors import ConfigError

log = logging.getLogger(__name__)

#: Memory one worker should have for a typical site (a few 2k×2k channels plus label images).
WORKER_MEMORY_BYTES = 2 * 1024**3

#: Dask settings of the LocalCluster ``profiler extract`` starts (a batch job without a dashboard):
#: the event-loop tick that only watches for blocked loops every 20 ms, each worker's statistical
#: profiler (for the dashboard) and the active memory manager (whose replica reduction would undo
#: the broadcast of the plate-level inputs) together took ≈ 4.5 % of a core in this process and
#: ≈ 2 % per worker or nanny process while idle; with these, ≈ 2 % and ≈ 0.5 %
#: (measured 2026-12-07 with 2 idle workers: 0.065 → 0.019 CPU s/s here, 0.078 → 0.019 in the four
#: child processes) — CPU the sites share the cores with.
LOCAL_CLUSTER_CONFIG = {
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.profile.enabled": False,
    "distributed.scheduler.active-memory-manager.start": False,
}


def default_workers(n_tasks: int | None = None) -> int:
    """Worker processes for a LocalCluster on this machine.

    One per usable core (cgroup and CPU-affinity limits respected, as Dask counts them), at most
    one per :data:`WORKER_MEMORY_BYTES` of physical memory, and no more than ``n_tasks``.
    """
    from dask.system import CPU_COUNT

    n = max(1, int(CPU_COUNT))
    with contextlib.suppress(Exception):
        import psutil

        n = min(n, max(1, int(psutil.virtual_memory().total // WORKER_MEMORY_BYTES)))
    if n_tasks is not None:
        n = min(n, max(1, int(n_tasks)))
    return n


def _check_address(scheduler: str) -> str:
    scheduler = scheduler.strip()
    if "://" not in scheduler:
        raise ConfigError(f"scheduler address {scheduler!r} has no protocol",
                          hint="give the address the scheduler prints, e.g. tcp://10.0.0.5:8786")
    return scheduler


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, *,
                n_tasks: int | None = None, timeout: float = 30.0) -> Iterator[object]:
    """A connected :class:`distributed.Client`; the cluster it started (if any) is closed after.

    Parameters
    ----------
    workers:
        Worker processes of the LocalCluster (``None``: :func:`default_workers`). Ignored with
        ``scheduler``.
    scheduler:
        Address of a running Dask scheduler (``tcp://HOST:PORT``); no local cluster is started.
    n_tasks:
        Number of tasks that will be submitted (caps the default worker count).
    timeout:
        Seconds to wait for the scheduler to answer.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        address = _check_address(scheduler)
        try:
            client = Client(address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}: {exc})",
                              hint="check the address and that `dask scheduler` is running and reachable "
                                   "from this machine") from exc
        try:
            n = len(client.scheduler_info().get("workers", {}))
            log.info("using the Dask cluster at %s (%d worker(s) now)", address, n)
            if n == 0:
                log.warning("the scheduler at %s has no workers yet; tasks wait until workers join", address)
            yield client
        finally:
            client.close()
        return

    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1 for a Dask cluster, got {workers}",
                          hint="use --workers 0 to run in this process without Dask")
    n = default_workers(n_tasks) if workers is None else int(workers)
    import dask

    with dask.config.set(LOCAL_CLUSTER_CONFIG):  # the nannies hand this configuration to their workers
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=logging.ERROR)
        try:
            client = Client(cluster)
            try:
                log.info("started a local Dask cluster: %d worker process(es), 1 thread each", n)
                yield client
            finally:
                client.close()
        finally:
            cluster.close()
