"""What both sandboxed children (the gate check and the training run) need from their parent's side:
memory readings, log tails, incremental JSONL reading and killing the child's process group."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any


def python_path(root: str) -> str:
  """A child's PYTHONPATH: the project root first, then the caller's own entries. Packages that reach the parent
  through PYTHONPATH (`pip install --target`, a cluster's module system, a side folder of wheels) must reach the
  child too, or it fails on its first import. Paths are not secrets; nothing else of the caller's environment
  is passed this way."""
  extra = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep)
           if p and os.path.abspath(p) != os.path.abspath(root)]
  return os.pathsep.join([root] + list(dict.fromkeys(extra)))


def rss_mb(pid: int) -> float:
  """Resident memory of a process in MiB, from /proc (0 when it is gone or unreadable)."""
  try:
    with open(f'/proc/{pid}/status', encoding='ascii') as f:
      for line in f:
        if line.startswith('VmRSS:'):
          return int(line.split()[1]) / 1024.0
  except (OSError, ValueError, IndexError):
    pass
  return 0.0


def file_tail(path: str, limit: int) -> str:
  """The last `limit` bytes of a file as text ('' when it cannot be read)."""
  try:
    with open(path, 'rb') as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - limit))
      return f.read().decode('utf-8', 'replace')
  except OSError:
    return ''


class JsonlTail:
  """Reads the complete JSON-object lines appended to a file since the last read (the file may not exist yet;
  a partly written last line waits for the next read; lines that are not JSON objects are skipped)."""

  def __init__(self, path: str):
    self.path, self.offset, self.buffer = path, 0, b''

  def read(self) -> list[dict[str, Any]]:
    try:
      with open(self.path, 'rb') as f:
        f.seek(self.offset)
        data = f.read()
    except OSError:
      return []
    self.offset += len(data)
    *lines, self.buffer = (self.buffer + data).split(b'\n')
    out = []
    for line in lines:
      try:
        value = json.loads(line)
      except ValueError:
        continue
      if isinstance(value, dict):
        out.append(value)
    return out


def kill_group(proc: subprocess.Popen) -> None:
  """SIGKILLs the child's whole process group (children start with start_new_session) and reaps it."""
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  proc.wait()
