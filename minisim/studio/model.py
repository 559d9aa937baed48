"""The studio's shared state: one Spec that every panel reads and writes, and a debouncer.

No widgets here: :class:`SpecModel` holds the Spec and notifies observers when it changes;
:class:`Debouncer` turns a burst of changes into one call, with at most one call in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..spec import Spec


class SpecModel:
    """Holds one :class:`~minisim.spec.Spec`; panels update it and observe its changes.

    Observers are called as ``fn(old_spec, new_spec)`` after every change (never for an
    update that leaves the Spec equal). ``render_speed_px_per_s`` is the last measured render
    speed (pixels x frames per second), which the Generate panel uses for its estimate.
    """

    def __init__(self, spec: Spec | None = None):
        self._spec = spec if spec is not None else Spec()
        self._observers: list[Callable[[Spec, Spec], None]] = []
        self._generate_hooks: list[tuple[Callable[[], None], Callable[[], None]]] = []
        self._running_checks: list[Callable[[], bool]] = []
        self.render_speed_px_per_s: float | None = None
        #: True while Generate writes: previews wait (and one in flight stops at its next step)
        self.generating = False

    def on_generate(self, pause: Callable[[], None], resume: Callable[[], None],
                    running: Callable[[], bool] | None = None) -> None:
        """Call ``pause()`` when a Generate starts and ``resume()`` when it ends.

        ``running()`` says whether a preview is in flight; Generate waits for none to be.
        """
        self._generate_hooks.append((pause, resume))
        if running is not None:
            self._running_checks.append(running)

    def previews_running(self) -> bool:
        """True while any preview registered with :meth:`on_generate` is in flight."""
        return any(check() for check in list(self._running_checks))

    def begin_generate(self) -> None:
        """Generate starts: every preview's pending redraw is held until :meth:`end_generate`."""
        self.generating = True
        for pause, _ in list(self._generate_hooks):
            pause()

    def end_generate(self) -> None:
        self.generating = False
        for _, resume in list(self._generate_hooks):
            resume()

    @property
    def spec(self) -> Spec:
        return self._spec

    @spec.setter
    def spec(self, spec: Spec) -> None:
        self.set(spec)

    def set(self, spec: Spec) -> bool:
        """Replace the Spec; returns whether it changed (and observers were told)."""
        if not isinstance(spec, Spec):
            raise TypeError(f"expected a Spec, got {type(spec).__name__}")
        if spec == self._spec:
            return False
        old, self._spec = self._spec, spec
        for fn in list(self._observers):
            fn(old, spec)
        return True

    def update(self, updates: dict[str, Any]) -> bool:
        """Apply dotted-path updates (validated; a bad value raises and changes nothing)."""
        return self.set(self._spec.with_updates(updates))

    def observe(self, fn: Callable[[Spec, Spec], None]) -> None:
        self._observers.append(fn)

    def unobserve(self, fn: Callable[[Spec, Spec], None]) -> None:
        self._observers.remove(fn)

    def save(self, path: str | Path) -> Path:
        """Write the Spec as JSON to ``path``."""
        path = Path(path)
        self._spec.to_json(path)
        return path

    def load(self, path_or_text: str | Path) -> Spec:
        """Read a Spec from a JSON file (or JSON text) and make it the current one."""
        self.set(Spec.from_json(path_or_text))
        return self._spec


class Cancelled(Exception):
    """Raised inside a redraw that a newer request (or a Generate) made stale."""


class Debouncer:
    """Call ``fn`` once, ``delay_s`` after the last of a burst of :meth:`schedule` calls.

    Never two runs at once, and a newer request wins: a schedule while ``fn`` runs makes the
    run stale (:attr:`stale`; ``fn`` may poll it through :meth:`checkpoint` and stop early)
    and ``fn`` runs again, once, when the current run ends. While ``hold()`` is true (a
    Generate is writing) runs wait; :meth:`resume` starts the one that waited.
    ``delay_s = 0`` runs synchronously, which is what tests use; :meth:`run_now` always does.
    """

    def __init__(self, fn: Callable[[], None], delay_s: float = 0.3,
                 hold: Callable[[], bool] | None = None,
                 on_busy: Callable[[bool], None] | None = None):
        self.fn = fn
        self.delay_s = float(delay_s)
        self.hold = hold or (lambda: False)
        self.on_busy = on_busy or (lambda busy: None)
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._running = False
        self._pending = False
        self._requested = 0  # requests so far
        self._run_of = 0  # the request the current run answers
        self.runs = 0  # runs that finished
        self.starts = 0  # runs that began (a cancelled one included)

    def schedule(self) -> None:
        with self._lock:
            self._requested += 1
        if self.delay_s <= 0:
            if self.hold():
                self._pending = True
                return
            self.run_now()
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.delay_s, self._fire)
            self._timer.daemon = True
            self._timer.start()
        self.on_busy(True)

    @property
    def stale(self) -> bool:
        """True inside a run once a newer request came (or a Generate started)."""
        return self._requested != self._run_of or self.hold()

    def checkpoint(self) -> None:
        """Raise :class:`Cancelled` if the current run is stale; ``fn`` calls it between steps."""
        if self.stale:
            raise Cancelled

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
            if self._running or self.hold():
                self._pending = True
                return
            self._running = True
            self._pending = False
            self._run_of = self._requested
            self.starts += 1
        self.on_busy(True)
        finished = False
        try:
            self.fn()
            finished = True
        except Cancelled:
            with self._lock:
                self._pending = True
        finally:
            with self._lock:
                self._running = False
                self.runs += finished
                again = self._pending and not self.hold() and self._timer is None
                if again:
                    self._pending = False
            if again:
                self._reschedule()
            elif not self.busy:
                self.on_busy(False)

    def _reschedule(self) -> None:
        with self._lock:
            self._timer = threading.Timer(self.delay_s, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _drop_timer(self, remember: bool) -> None:
        """Cancel a scheduled run; ``remember`` it as pending (True) or forget any (False)."""
        with self._lock:
            had = self._timer is not None
            if had:
                self._timer.cancel()
                self._timer = None
            self._pending = (self._pending or had) if remember else False

    def pause(self) -> None:
        """Drop a scheduled run but remember it (a Generate starts)."""
        self._drop_timer(remember=True)
        if not self._running:
            self.on_busy(False)

    def resume(self) -> None:
        """Start the run that waited, if any (a Generate ended)."""
        with self._lock:
            again, self._pending = self._pending, False
        if again:
            self.schedule()

    def cancel(self) -> None:
        """Drop a scheduled run (one in flight finishes)."""
        self._drop_timer(remember=False)

    def run_now(self) -> None:
        self.cancel()
        with self._lock:
            self._run_of = self._requested
            self.starts += 1
        try:
            self.fn()
        except Cancelled:  # a Generate started meanwhile: run again when it ends
            with self._lock:
                self._pending = True
            return
        self.runs += 1

    @property
    def running(self) -> bool:
        """True while a run is in flight."""
        return self._running

    @property
    def busy(self) -> bool:
        """True while a run is scheduled, waiting or in flight."""
        return self._timer is not None or self._running or self._pending
