"""dask.compute on the chosen (or the active) scheduler, with an optional progress bar.

Shared by the store writer and the video export; it knows nothing of recordings.
"""

from __future__ import annotations


def _client_for(scheduler):
    if scheduler is None:
        try:
            from distributed import default_client

            return default_client()
        except (ImportError, ValueError):
            return None
    if isinstance(scheduler, str) and scheduler in ("threads", "processes", "sync", "synchronous",
                                                    "single-threaded"):
        return None
    if isinstance(scheduler, str):
        from distributed import Client

        return Client(scheduler)
    return scheduler  # a distributed.Client


def compute(*objs, scheduler=None, progress: bool = False):
    """dask.compute on the chosen (or active) scheduler, with an optional progress bar."""
    import dask

    client = _client_for(scheduler)
    if client is not None:
        futures = client.compute(list(objs))
        if progress:
            from distributed import progress as dprogress

            dprogress(futures)
        return tuple(client.gather(futures))
    kw = {"scheduler": scheduler} if scheduler else {}
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            return dask.compute(*objs, **kw)
    return dask.compute(*objs, **kw)
