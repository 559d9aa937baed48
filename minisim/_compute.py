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


def compute_in_steps(steps: list, scheduler=None, progress: bool = False) -> list[tuple]:
    """:func:`compute` of each step's objects, one step after the other; one result tuple per step.

    Each step is its own computation, so the scheduler never holds more than one step's graph
    (a long movie's writes, a window of frames at a time). A step is a tuple of objects, or a
    function of the results so far that returns one (a step that reads what an earlier step
    computed). With ``progress``, one bar over all steps on the local schedulers (it follows
    these computations only, not others running at the same time in other threads), one per
    step on a distributed cluster.
    """
    distributed = _client_for(scheduler) is not None
    bar = [_StepsBar(len(steps))._callback] if progress and not distributed else []
    results: list[tuple] = []
    for step in steps:
        objs = step(results) if callable(step) else step
        results.append(compute(*objs, scheduler=scheduler, progress=progress) if distributed
                       else _local(objs, scheduler, bar))
    return results


def _local(objs: tuple, scheduler, callbacks: list) -> tuple:
    """dask.compute of ``objs`` on a local scheduler, with these callbacks and the active ones."""
    import dask
    from dask.callbacks import Callback

    kw = {"scheduler": scheduler} if scheduler else {}
    if not callbacks:
        return dask.compute(*objs, **kw)
    return dask.compute(*objs, callbacks=[*Callback.active, *callbacks], **kw)


def _StepsBar(n_steps: int, width: int = 40):
    """One text bar over ``n_steps`` computations on the local schedulers (dask's callbacks)."""
    import sys
    import time

    from dask.callbacks import Callback

    class StepsBar(Callback):
        def __init__(self):
            super().__init__()
            self.steps_done, self._t0, self._last = 0, time.perf_counter(), 0.0

        def _draw(self, frac: float, force: bool = False) -> None:
            now = time.perf_counter()
            if force or now - self._last >= 0.1:
                self._last = now
                frac = min(1.0, (self.steps_done + frac) / max(n_steps, 1))
                sys.stdout.write(f"\r[{'#' * int(width * frac):<{width}}] | {int(100 * frac)}% Completed "
                                 f"| {now - self._t0:.1f} s")
                sys.stdout.flush()

        def _posttask(self, key, result, dsk, state, worker_id):
            done = len(state["finished"])
            total = done + sum(len(state[k]) for k in ("ready", "waiting", "running"))
            if done < total:  # (a step's end is drawn once, by _finish)
                self._draw(done / total)

        def _finish(self, dsk, state, errored):
            last = self.steps_done + 1 >= n_steps
            self._draw(1.0, force=True)
            self.steps_done += 1
            if errored or last:
                sys.stdout.write("\n")
                sys.stdout.flush()

    return StepsBar()
