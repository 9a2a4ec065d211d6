"""On-disk cache of backend replies, so that a rerun of the loop reproduces every LLM exchange without the network.

The key is the sha256 of the canonical JSON of what determines a reply: backend, model, messages (tool turns
included), tool specs, schema, temperature, seed and output limit. One file per key (`ab/abcdef....json`) written
atomically, so several workers can share a directory. Only completed replies are cached; errors never are.
Two samples of the same prompt need different seeds (or `cache=False`), or the second returns the first.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from absl import logging

from aira_jax.discovery.llm.types import BackendRequest, BackendResponse, LLMError


def cache_key(backend: str, request: BackendRequest) -> str:
    material = json.dumps(request.key_material(backend), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          default=_reject)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _reject(obj: Any) -> Any:
    raise LLMError(f"request holds a value that is not JSON-serialisable: {type(obj).__name__}")


class ResponseCache:
    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LLMError(f"cannot create the LLM cache directory {self.directory}: {e}") from None

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> BackendResponse | None:
        path = self._path(key)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            return BackendResponse.from_dict(payload["response"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            # A torn or foreign file is a miss, not a crash; the next put overwrites it.
            logging.warning("ignoring unreadable LLM cache entry %s: %s", path, e)
            return None

    def put(self, key: str, request_material: dict[str, Any], response: BackendResponse) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"key": key, "request": request_material, "response": response.to_dict()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(payload, f, ensure_ascii=False, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("??/*.json"))
