"""Where a sweep runs: a distributed Client on a LocalCluster, a scheduler address or a
dask-jobqueue (SLURM/PBS) cluster.

:func:`connect` is the one place a sweep gets its cluster; :func:`jobqueue_cluster` builds a
SLURM or PBS cluster from dask config and a ``jobqueue.yaml`` (see ``cluster/README.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Name of the dask-jobqueue configuration picked up beside a sweep file.
JOBQUEUE_CONFIG_NAME = "jobqueue.yaml"

#: dask config that keeps glibc's adaptive malloc thresholds in distributed's worker processes.
#: The nanny otherwise sets ``MALLOC_TRIM_THRESHOLD_=65536``, which also turns off glibc's adaptive
#: mmap threshold: each large temporary of a render block is then a fresh, page-faulted mmap.
#: Measured here (608 x 608 px, 400 frames, 2 workers x 1 thread): 15.3 s with it, 9.2 s without.
#: ``with dask.config.set(WORKER_MALLOC_CONFIG): LocalCluster(...)``; ``connect`` uses it for the
#: LocalCluster it starts. Workers of a jobqueue cluster read their own dask config on the compute
#: nodes (see cluster/README.md). A value of None unsets the variable (distributed >= 2023.1).
WORKER_MALLOC_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}

#: dask config for the LocalCluster :func:`connect` starts, where the user's dask config leaves
#: distributed's default (:func:`local_cluster_config`): the periodic work of an idle
#: cluster, which on a small machine takes its CPU from the workers. Measured here (2 workers,
#: 10 s idle): the client's process (scheduler, nannies) 0.35 s of CPU and each worker 0.27 s
#: with distributed's defaults, 0.12 s and 0.06 s with these. The event loops' health check
#: every 200 ms (not 20 ms), the nannies' and workers' memory check every 500 ms (not 100 ms:
#: a worker past its memory limit is stopped up to 0.4 s later), the system monitor's
#: dashboard figures every 2 s, and the workers' profiler (the dashboard's profile) sampling
#: every 100 ms (not 10 ms).
LOCAL_CLUSTER_CONFIG = {
    "distributed.admin.tick.interval": "200ms",
    "distributed.worker.memory.monitor-interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.profile.interval": "100ms",
}

#: The module a sweep's workers preload (:mod:`minisim.sweep.worker_setup`): minisim imported and
#: its compiled kernels loaded as each worker starts, not inside the first recording it renders.
WORKER_PRELOAD = "minisim.sweep.worker_setup"


def jobqueue_cluster(kind: str, config: str | Path | None = None, **kwargs):
    """A dask-jobqueue ``SLURMCluster``/``PBSCluster`` from dask config (plus ``config``, a
    jobqueue.yaml such as ``cluster/jobqueue.yaml``); ``kwargs`` override single settings."""
    import yaml

    if kind not in ("slurm", "pbs"):
        raise ValueError(f"jobqueue kind must be 'slurm' or 'pbs', got {kind!r}")
    from dask_jobqueue import PBSCluster, SLURMCluster

    cls = SLURMCluster if kind == "slurm" else PBSCluster
    if config is not None:
        # as keyword arguments: dask-jobqueue reads its config again long after construction
        section = ((yaml.safe_load(Path(config).read_text()) or {}).get("jobqueue") or {}).get(kind) or {}
        renamed = {"name": "job_name"}
        kwargs = {renamed.get(k, k.replace("-", "_")): v for k, v in section.items() if v is not None} | kwargs
    return cls(**kwargs)


def local_cluster_config() -> dict:
    """:data:`LOCAL_CLUSTER_CONFIG`, less each setting the current dask config holds at a value
    of its own (not distributed's default): a user's choice stays theirs."""
    import dask
    import distributed  # noqa: F401 - its defaults registered in dask's config

    defaults = dask.config.merge(*dask.config.defaults)
    return {key: value for key, value in LOCAL_CLUSTER_CONFIG.items()
            if dask.config.get(key, None) == dask.config.get(key, None, config=defaults)}


@contextlib.contextmanager
def connect(scheduler: str = "local", workers: int | None = None, client=None,
            root: Path | None = None) -> Iterator[tuple[Any, int]]:
    """A distributed Client for ``scheduler`` and the number of workers it is meant to have."""
    from distributed import Client

    if client is not None:
        yield client, max(1, len(client.scheduler_info()["workers"]))
        return
    if scheduler == "local":
        import dask
        from distributed import LocalCluster

        n = workers or 2
        with dask.config.set({**local_cluster_config(), **WORKER_MALLOC_CONFIG}), \
                LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                             dashboard_address=":0", preload=[WORKER_PRELOAD]) as cluster, Client(cluster) as c:
            yield c, n
        return
    if scheduler in ("slurm", "pbs"):
        n = workers or 2
        config = root / JOBQUEUE_CONFIG_NAME if root is not None else None
        config = config if config is not None and config.is_file() else None
        with jobqueue_cluster(scheduler, config) as cluster, Client(cluster) as c:
            cluster.scale(jobs=n)
            yield c, n
        return
    if "://" in scheduler or ":" in scheduler:
        with Client(scheduler) as c:
            yield c, max(1, len(c.scheduler_info()["workers"]), workers or 0)
        return
    raise ValueError(f"scheduler must be 'local', 'slurm', 'pbs' or a scheduler address, got {scheduler!r}")
