"""Worker processes that train the queue when the loop runs with --workers=N > 1, and Ctrl-C handling.

Each worker is `python -m aira_jax.discovery.worker --config=FILE --worker_id=ID` on the same store ($AIRA_STORE_URL)
(the Engineer's claim queue makes them safe to run side by side). The loop writes its fully resolved config to
the workdir (`resolved_config.py`), so workers train exactly what the loop was configured with, command-line
overrides included. A worker that exits (idle queue, crash) is restarted while work is queued. On a GPU machine
each worker gets its own share of the GPUs (discovery.devices).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from absl import logging

from aira_jax.discovery import devices
from aira_jax.discovery.store import STORE_URL_ENV

_RESOLVED = '''"""The resolved discovery config of this run, written by `python -m aira_jax.discover` for its workers."""
import json

import ml_collections


def get_config():
  return ml_collections.ConfigDict(json.loads(r"""{payload}"""))
'''


def write_resolved_config(cfg: Any, path: str) -> str:
    """A config file whose get_config() returns `cfg` (JSON-safe values; tuples become lists)."""
    payload = json.dumps(cfg.to_dict(), indent=1, default=str)
    if '"""' in payload:
        raise ValueError("the config contains a triple quote and cannot be written as a config file")
    with open(path, "w", encoding="utf-8") as f:
        f.write(_RESOLVED.format(payload=payload))
    return path


class WorkerPool:
    def __init__(self, n: int, *, store_url: str, config_path: str, log_dir: str, prefix: str = "worker",
                 extra_args: tuple[str, ...] = (), python: str = sys.executable):
        self.n, self.store_url, self.config_path, self.log_dir = n, store_url, config_path, log_dir
        self.prefix, self.extra_args, self.python = prefix, extra_args, python
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts = 0
        os.makedirs(log_dir, exist_ok=True)
        gpus = devices.visible_gpus()
        self.device_env = {f"{prefix}-{i}": devices.worker_env(i, n, gpus) for i in range(n)}
        logging.info("training workers: %s", devices.describe(self.device_env, gpus))

    def command(self, worker_id: str) -> list[str]:
        # The store URL travels in the environment ($AIRA_STORE_URL), not argv, so a password stays off `ps`.
        return [self.python, "-m", "aira_jax.discovery.worker", f"--config={self.config_path}",
                f"--worker_id={worker_id}", *self.extra_args]

    def ensure(self) -> None:
        """Starts the workers that are not running (first start, or after one exited)."""
        for i in range(self.n):
            wid = f"{self.prefix}-{i}"
            proc = self.procs.get(wid)
            if proc is not None and proc.poll() is None:
                continue
            if proc is not None:
                self.restarts += 1
                logging.info("worker %s exited with status %s; restarting it", wid, proc.returncode)
            log = open(os.path.join(self.log_dir, f"{wid}.log"), "ab")
            env = {**os.environ, STORE_URL_ENV: self.store_url, **self.device_env[wid]}
            self.procs[wid] = subprocess.Popen(self.command(wid), stdout=log, stderr=subprocess.STDOUT, env=env,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()

    def alive(self) -> int:
        return sum(p.poll() is None for p in self.procs.values())

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGINT (workers finish or release their claim), then SIGKILL after `timeout_s`."""
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout_s
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()


class StopControl:
    """Ctrl-C: the first press asks the loop to stop after the current step; the second abandons the step (the
    training child is stopped and its claim released; elsewhere the step is interrupted, store writes are
    transactional); a third interrupts whatever runs. SIGTERM abandons at once."""

    def __init__(self, notify: Callable[[str], None] = lambda text: None):
        self.requested = False
        self.abandon = threading.Event()
        self.in_training = False
        self.presses = 0
        self._notify = notify
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopControl":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def request_stop(self) -> None:
        self.requested = True

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.presses += 1
        if signum == signal.SIGTERM:
            self.presses = max(self.presses, 2)
        if self.presses == 1:
            self.requested = True
            self._notify("stop requested: finishing the current step (Ctrl-C again to abandon it)")
            return
        self.requested = True
        self.abandon.set()
        if self.presses == 2 and self.in_training:
            self._notify("abandoning the training step: its claim is released and it is retrained on resume")
            return
        self._notify("interrupted")
        raise KeyboardInterrupt
