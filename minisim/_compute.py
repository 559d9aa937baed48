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


def cluster_threads(scheduler) -> int | None:
    """The threads of the distributed cluster that ``scheduler`` (a Client, or None while one is
    the default client) computes on; None for dask's local schedulers, a scheduler's address
    (no client is made here) and a cluster with no worker yet (e.g. a jobqueue cluster still
    starting its jobs)."""
    if isinstance(scheduler, str):
        return None
    client = _client_for(scheduler)
    if client is None:
        return None
    return sum(client.nthreads().values()) or None


def compute(*objs, scheduler=None, progress: bool = False):
    """dask.compute on the chosen (or active) scheduler, with an optional progress bar."""
    import dask

    client = _client_for(scheduler)
    if client is not None:
        return _Submitted(client, objs, progress).result()
    kw = {"scheduler": scheduler} if scheduler else {}
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            return dask.compute(*objs, **kw)
    return dask.compute(*objs, **kw)


class Deferred:
    """A step of :func:`compute_in_steps` built when its turn comes, from nothing computed: e.g.
    graph building (and the store metadata it needs) done while the earlier steps compute."""

    def __init__(self, build):
        self.build = build


class After:
    """A step of :func:`compute_in_steps` built from the results of the earlier steps ``needs``
    (their indices) once those are done, the others still computing: ``build(results)`` with
    ``results`` mapping each of ``needs`` to its result tuple. (A step that is a plain function
    of the results waits for every earlier step, and on a cluster the steps after it were not
    submitted meanwhile: a worker idled.)"""

    def __init__(self, needs, build):
        self.needs, self.build = tuple(needs), build


class Kept:
    """An object of a :func:`compute_in_steps` step whose value a later step's tasks read and
    the caller does not: on a distributed cluster its result is the Future, its value staying on
    the worker that computed it (put in a later step's tasks, they read it there), not fetched
    to the client and sent back inside every task of that step (the footprint cores of a V4
    save, ~6 MB, went out ~10 times with the oracle's tasks: 64 MB through the scheduler);
    on dask's local schedulers its value."""

    def __init__(self, obj):
        self.obj = obj


def _unkept(objs: tuple) -> tuple:
    return tuple(o.obj if isinstance(o, Kept) else o for o in objs)


def compute_in_steps(steps: list, scheduler=None, progress: bool = False, ahead: int = 0) -> list[tuple]:
    """:func:`compute` of each step's objects, in order; one result tuple per step.

    Each step is its own computation, so the scheduler never holds more than a few steps'
    graphs (a long movie's writes, a window of frames at a time). A step is a tuple of objects;
    a :class:`Deferred` (built when its turn comes); or a function of the results so far that
    returns one (a step that reads what an earlier step computed: it waits for all of them).
    An object wrapped in :class:`Kept` gives its Future on a distributed cluster, its value
    elsewhere. An :class:`After` step waits only for the steps it reads.

    ``ahead``: how many later steps may be in flight while a step computes, on the threaded
    scheduler (one pool of threads for all of them, so never more threads than one computation
    has) and on a distributed cluster; the sync and processes schedulers run one step at a
    time. Steps in flight together keep the threads busy across a step's end, and a Deferred
    step's graph is built while the step before it computes. With ``progress``, one bar over all
    steps on the local schedulers (it follows these computations only, not others running at
    the same time in other threads), one per step on a distributed cluster.
    """
    client = _client_for(scheduler)
    bar = [_StepsBar(len(steps))._callback] if progress and client is None else []
    if client is not None:
        # (with progress, each step's bar is shown while the oldest step computes, in order)
        return _in_flight(steps, ahead, lambda objs: _Submitted(client, objs, progress),
                          None if progress else _wait_any)
    if ahead and _threaded(scheduler) and _concurrency_safe_callbacks():
        return _threaded_in_steps(steps, scheduler, bar, ahead)
    results: list[tuple] = []
    for step in steps:
        results.append(_local(_unkept(_objects(step, results)), scheduler, bar))
    return results


def _objects(step, results: list) -> tuple:
    if isinstance(step, Deferred):
        return step.build()
    if isinstance(step, After):
        return step.build({j: results[j] for j in step.needs})
    return step(results) if callable(step) else step


def _in_flight(steps: list, ahead: int, submit, wait_any=None) -> list[tuple]:
    """Run ``steps`` with up to ``ahead`` later ones submitted while the oldest computes:
    ``submit(objs)`` starts a computation and returns a handle with ``result()`` and
    ``cancel()``. A step that reads earlier results is built once every earlier step is done.
    On an error every computation still running is cancelled and waited for before it is
    raised (nothing writes into a store its caller then removes).

    With ``wait_any`` (a function that returns once one of the handles it is given is done;
    the handles then also have ``done()`` and ``failed()``), the steps are limited to
    ``ahead`` + 1 *computing*, not to ``ahead`` + 1 since the oldest one not yet done: a step
    that ends before one submitted earlier lets the next begin at once (a distributed
    worker that finished a later step would otherwise wait for the other's). The results are
    still returned in order, a step that failed is raised as soon as it is seen, and a
    Deferred step is built while the steps before it compute (submitted the moment one ends,
    before the ended one's results are fetched)."""
    handles: list = []
    results: list = []
    built = None  # (the index of a Deferred step built ahead, its objects)

    def computing() -> list:
        if wait_any is None:
            return handles[len(results):]
        for h in handles[len(results):]:
            if h.done() and h.failed():
                h.result()  # raises its error
        return [h for h in handles[len(results):] if not h.done()]

    def collect() -> None:  # the results of the steps done, in order
        while len(results) < len(handles) and handles[len(results)].done():
            results.append(handles[len(results)].result())

    def make_room() -> None:  # until at most ``ahead`` steps compute
        while len(running := computing()) > ahead:
            if wait_any is None:
                results.append(handles[len(results)].result())
            else:
                wait_any(running)

    try:
        for i, step in enumerate(steps):
            if isinstance(step, After):
                objs = step.build({j: results[j] if j < len(results) else handles[j].result()
                                   for j in step.needs})
            else:
                if callable(step) and not isinstance(step, Deferred):
                    while len(results) < len(handles):
                        results.append(handles[len(results)].result())
                objs = built[1] if built and built[0] == i else _objects(step, results)
            handles.append(submit(objs))
            if (wait_any is not None and i + 1 < len(steps) and isinstance(steps[i + 1], Deferred)
                    and len(computing()) > ahead):
                # built while the others compute, so that it is submitted the moment one ends
                # (a distributed worker that finishes its part of a step waits for the next one)
                built = (i + 1, steps[i + 1].build())
            if wait_any is not None:
                # (fetched once the next step is submitted: a round trip to a worker that
                # otherwise came before the next step's tasks)
                collect()
            make_room()
        while len(results) < len(handles):
            results.append(handles[len(results)].result())
    except BaseException:
        for h in handles[len(results):]:
            h.cancel()
        raise
    return results


class _Submitted:
    """A computation on a distributed cluster (its futures), as :func:`_in_flight` takes it."""

    def __init__(self, client, objs: tuple, progress: bool):
        self.client, self.futures, self.progress = client, client.compute(list(_unkept(objs))), progress
        self.kept = [isinstance(o, Kept) for o in objs]
        self._result = None

    def result(self) -> tuple:
        """The values of the objects, but a :class:`Kept` one's Future (fetched once)."""
        if self._result is None:
            if self.progress:
                from distributed import progress as dprogress

                dprogress(self.futures)
            values = iter(self.client.gather([f for f, k in zip(self.futures, self.kept) if not k]))
            self._result = tuple(f if k else next(values) for f, k in zip(self.futures, self.kept))
        return self._result

    def cancel(self) -> None:
        self.client.cancel(self.futures)

    def done(self) -> bool:
        return all(f.done() for f in self.futures)

    def failed(self) -> bool:
        return any(f.status in ("error", "cancelled") for f in self.futures)


def _wait_any(handles: list) -> None:
    """Until one of the distributed computations ``handles`` (:class:`_Submitted`) is done."""
    from distributed import wait

    while not any(h.done() for h in handles):
        wait([f for h in handles for f in h.futures if not f.done()], return_when="FIRST_COMPLETED")


#: The attribute of a dask Callback that says it may follow computations running at the same
#: time (dask's own diagnostics may not: Profiler restarts its record at each computation's start).
CONCURRENCY_SAFE = "concurrency_safe"


def _concurrency_safe_callbacks() -> bool:
    """Whether every active dask callback may see steps computing at the same time: those
    whose object says so (:data:`CONCURRENCY_SAFE`); with any other active (a Profiler, a
    ProgressBar) a save computes one step at a time, as the callback expects."""
    from dask.callbacks import Callback

    for methods in Callback.active:
        owners = {getattr(m, "__self__", None) for m in methods if m is not None}
        if not all(getattr(o, CONCURRENCY_SAFE, False) for o in owners):
            return False
    return True


def _threaded(scheduler) -> bool:
    """Whether ``scheduler`` (or the active one) is dask's threaded scheduler."""
    import dask.threaded
    from dask.base import get_scheduler

    return get_scheduler(scheduler=scheduler) in (None, dask.threaded.get)  # (None: arrays' default)


def _threaded_in_steps(steps: list, scheduler, bar: list, ahead: int) -> list[tuple]:
    """:func:`_in_flight` on dask's threaded scheduler: each computation from a thread of its
    own, every one on the same pool of worker threads (the configured ``pool`` or
    ``num_workers``, else one per core) and with the same callbacks: those active now (a
    computation started outside the main thread would not see them) and ``bar``."""
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor, wait

    import dask
    from dask.callbacks import Callback

    pool = dask.config.get("pool", None)
    own = None
    if pool is None:
        own = pool = ThreadPoolExecutor(dask.config.get("num_workers", None) or os.cpu_count() or 1)
    stop = threading.Event()
    callbacks = [*Callback.active, *bar, _Stop(stop)._callback]
    kw = {"scheduler": scheduler} if scheduler else {}
    runners = ThreadPoolExecutor(ahead + 1)
    errors: list[BaseException] = []  # the computations' own errors (not their stops), in order

    class Running:
        def __init__(self, objs):
            self.future = runners.submit(self._run, objs)

        @staticmethod
        def _run(objs):
            try:
                # (the pool as an argument: dask.config.set is global, and two threads setting
                # and restoring it in turn would leave it set)
                return dask.compute(*_unkept(objs), callbacks=callbacks, pool=pool, **kw)
            except BaseException as e:  # the others stop at once, not when their turn comes
                if not isinstance(e, _Stopped):
                    errors.append(e)
                stop.set()
                raise

        def result(self):
            return self.future.result()

        def cancel(self):
            stop.set()  # the running computations start no further task
            wait([self.future])  # (its own error, or the stop: the first error is the one raised)

    try:
        return _in_flight(steps, ahead, Running)
    except _Stopped:
        if errors:  # the error that stopped the others, not their stop
            raise errors[0] from None
        raise
    finally:
        runners.shutdown(wait=True)
        if own is not None:
            own.shutdown(wait=True)


class _Stopped(Exception):
    """A computation stopped because another one of the same steps failed."""


def _Stop(event):
    """A dask callback that raises :class:`_Stopped` before any further task once ``event`` is
    set."""
    from dask.callbacks import Callback

    class Stop(Callback):
        concurrency_safe = True

        def _pretask(self, key, dsk, state):
            if event.is_set():
                raise _Stopped("stopped: another computation of the same steps failed")

    return Stop()


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
    import threading
    import time

    from dask.callbacks import Callback

    class StepsBar(Callback):
        """Steps may compute at the same time (:func:`compute_in_steps`' ``ahead``): the bar is
        the finished steps plus the fraction done of each running one (each only grows)."""

        concurrency_safe = True

        def __init__(self):
            super().__init__()
            self.steps_done, self._t0, self._last, self._shown = 0, time.perf_counter(), 0.0, -1.0
            self._running: dict[int, float] = {}  # id of a running step's state -> its fraction
            self._lock = threading.Lock()

        def _draw(self, force: bool = False) -> None:
            now = time.perf_counter()
            frac = min(1.0, (self.steps_done + sum(self._running.values())) / max(n_steps, 1))
            if frac >= self._shown and (force or now - self._last >= 0.1):
                self._last, self._shown = now, frac
                sys.stdout.write(f"\r[{'#' * int(width * frac):<{width}}] | {int(100 * frac)}% Completed "
                                 f"| {now - self._t0:.1f} s")
                sys.stdout.flush()

        def _posttask(self, key, result, dsk, state, worker_id):
            done = len(state["finished"])
            total = done + sum(len(state[k]) for k in ("ready", "waiting", "running"))
            if done < total:  # (a step's end is drawn once, by _finish)
                with self._lock:
                    self._running[id(state)] = done / total
                    self._draw()

        def _finish(self, dsk, state, errored):
            with self._lock:
                self._running.pop(id(state), None)
                self.steps_done += 1
                last = self.steps_done >= n_steps
                self._draw(force=True)
                if errored or last:
                    sys.stdout.write("\n")
                    sys.stdout.flush()

    return StepsBar()
