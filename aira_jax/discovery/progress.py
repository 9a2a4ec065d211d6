"""The live progress display of the discovery loop.

On a terminal one status line is redrawn in place (iteration, stage, best fitness, LLM cost, elapsed time) and
events scroll above it; when the output is not a TTY (a log file, CI) every stage change is one plain line.
"""
from __future__ import annotations

import dataclasses
import shutil
import sys
import threading
import time
from typing import TextIO


@dataclasses.dataclass
class State:
    iteration: int = 0
    max_iterations: int = 0
    stage: str = "starting"
    design: str = ""
    best_name: str = ""
    best_fitness: float | None = None
    trained: int = 0
    cost_usd: float = 0.0


class Progress:
    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, clock=time.monotonic):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.state = State()
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self._shown = False

    def _elapsed(self) -> str:
        s = int(self._clock() - self._start)
        return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"

    def line(self) -> str:
        st = self.state
        best = f"{st.best_fitness:.3f} ({st.best_name})" if st.best_fitness is not None else "-"
        it = f"{st.iteration}/{st.max_iterations}" if st.max_iterations else str(st.iteration)
        stage = st.stage + (f" {st.design}" if st.design else "")
        return (f"[{self._elapsed()}] iter {it} | {stage} | trained {st.trained} | best fitness {best} | "
                f"LLM ${st.cost_usd:.4f}")

    def update(self, **changes) -> None:
        """Changes fields of the state; redraws (TTY) or prints a line when the stage or design changed."""
        with self._lock:
            before = (self.state.stage, self.state.design, self.state.iteration)
            for k, v in changes.items():
                if not hasattr(self.state, k):
                    raise AttributeError(f"progress has no field {k!r}")
                setattr(self.state, k, v)
            changed = before != (self.state.stage, self.state.design, self.state.iteration)
            if self.tty:
                self._draw()
            elif changed:
                self.stream.write(self.line() + "\n")
                self.stream.flush()

    def event(self, text: str) -> None:
        """A permanent line (a result, a rejection) above the status line."""
        with self._lock:
            if self.tty:
                self._clear()
            self.stream.write(f"[{self._elapsed()}] {text}\n")
            if self.tty:
                self._draw()
            self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if self.tty and self._shown:
                self.stream.write("\n")
                self.stream.flush()
                self._shown = False

    def _clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[2K")

    def _draw(self) -> None:
        width = shutil.get_terminal_size((120, 20)).columns
        text = self.line()
        if len(text) >= width:
            text = text[: max(10, width - 2)] + "…"
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()
        self._shown = True
