"""Scripted local HTTP servers that speak the Gemini and OpenAI chat-completions wire formats, for tests.

A `ScriptedServer` binds 127.0.0.1 on a random port and answers each POST with the next `Scripted` step
(status, JSON body, headers, delay), recording every request. The real google-genai and openai clients talk to
it through their base-URL options, so the tests exercise the real SDKs without any outside network.
A `Dialect` builds reply bodies in one wire format, so one scenario can be scripted for both backends.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence


@dataclasses.dataclass
class Scripted:
    body: Any = None                 # dict -> JSON; str/bytes sent as is
    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay_s: float = 0.0             # sleep before answering (longer than the client timeout = a timeout)


@dataclasses.dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    json: Any


class ScriptedServer:
    def __init__(self, script: Sequence[Scripted] = ()):
        self.script = list(script)
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    payload = json.loads(raw) if raw else None
                except ValueError:
                    payload = raw.decode("utf-8", "replace")
                with server._lock:
                    server.requests.append(RecordedRequest(self.path, dict(self.headers), payload))
                    step = server.script.pop(0) if server.script else Scripted(
                        {"error": {"code": 500, "message": "test script exhausted", "status": "INTERNAL"}}, 500)
                if step.delay_s:
                    time.sleep(step.delay_s)
                body = step.body
                data = body if isinstance(body, bytes) else (
                    body.encode() if isinstance(body, str) else json.dumps(body).encode())
                try:
                    self.send_response(step.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in step.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass   # the client gave up (timeout) and closed the connection

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, *steps: Scripted) -> None:
        with self._lock:
            self.script.extend(steps)

    def __enter__(self) -> "ScriptedServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def closed_port_url() -> str:
    """A URL on which nothing listens (connection refused)."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = srv.server_address[1]
    srv.server_close()
    return f"http://127.0.0.1:{port}"


# ------------------------------------------------------------------------------------------------- dialects
class OpenAIDialect:
    name = "openai"

    @staticmethod
    def text(text: str, *, input_tokens: int = 10, output_tokens: int = 5, finish: str = "stop") -> Scripted:
        return Scripted({"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test",
                         "choices": [{"index": 0, "finish_reason": finish,
                                      "message": {"role": "assistant", "content": text, "refusal": None}}],
                         "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                                   "total_tokens": input_tokens + output_tokens}})

    @staticmethod
    def tool_calls(calls: Sequence[tuple[str, str, Any]], *, input_tokens: int = 10,
                   output_tokens: int = 5) -> Scripted:
        """calls: (id, name, arguments as a dict, or a raw string for malformed arguments)."""
        tcs = [{"id": cid, "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
               for cid, name, args in calls]
        return Scripted({"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test",
                         "choices": [{"index": 0, "finish_reason": "tool_calls",
                                      "message": {"role": "assistant", "content": None, "tool_calls": tcs}}],
                         "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                                   "total_tokens": input_tokens + output_tokens}})

    @staticmethod
    def refusal(text: str = "I can't help with that.") -> Scripted:
        return Scripted({"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test",
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": None, "refusal": text}}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

    @staticmethod
    def error(status: int, message: str = "error", headers: dict[str, str] | None = None) -> Scripted:
        return Scripted({"error": {"message": message, "type": "test_error", "code": None}}, status, headers or {})

    # what the client sent back
    @staticmethod
    def sent_messages(req: RecordedRequest) -> list[dict]:
        return req.json["messages"]

    @staticmethod
    def sent_text(req: RecordedRequest) -> str:
        return "\n".join(m.get("content") or "" for m in req.json["messages"] if isinstance(m.get("content"), str))

    @staticmethod
    def tool_results(req: RecordedRequest) -> list[tuple[str, str]]:
        """(call id, content) of the tool results in the request."""
        return [(m["tool_call_id"], m["content"]) for m in req.json["messages"] if m["role"] == "tool"]


class GeminiDialect:
    name = "gemini"

    @staticmethod
    def _reply(parts: list[dict], *, finish: str = "STOP", input_tokens: int = 10, output_tokens: int = 5,
               thoughts: int = 0) -> Scripted:
        usage = {"promptTokenCount": input_tokens, "candidatesTokenCount": output_tokens,
                 "totalTokenCount": input_tokens + output_tokens + thoughts}
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return Scripted({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish,
                                         "index": 0}], "usageMetadata": usage, "modelVersion": "test"})

    @classmethod
    def text(cls, text: str, *, input_tokens: int = 10, output_tokens: int = 5, finish: str = "STOP",
             thoughts: int = 0) -> Scripted:
        return cls._reply([{"text": text}], finish=finish, input_tokens=input_tokens, output_tokens=output_tokens,
                          thoughts=thoughts)

    @classmethod
    def tool_calls(cls, calls: Sequence[tuple[str, str, Any]], *, input_tokens: int = 10,
                   output_tokens: int = 5) -> Scripted:
        """calls: (id, name, arguments dict). The first part carries a thought signature, as Gemini 3 sends."""
        parts = [{"functionCall": {"id": cid, "name": name, "args": args}} for cid, name, args in calls]
        if parts:
            parts[0]["thoughtSignature"] = "c2lnbmF0dXJl"   # base64 of b'signature'
        return cls._reply(parts, input_tokens=input_tokens, output_tokens=output_tokens)

    @staticmethod
    def refusal(text: str = "") -> Scripted:
        return Scripted({"candidates": [{"finishReason": "SAFETY", "index": 0}],
                         "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}})

    @staticmethod
    def blocked_prompt() -> Scripted:
        return Scripted({"promptFeedback": {"blockReason": "SAFETY"},
                         "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}})

    @staticmethod
    def error(status: int, message: str = "error", headers: dict[str, str] | None = None) -> Scripted:
        statuses = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 400: "INVALID_ARGUMENT"}
        return Scripted({"error": {"code": status, "message": message, "status": statuses.get(status, "UNKNOWN")}},
                        status, headers or {})

    @staticmethod
    def sent_messages(req: RecordedRequest) -> list[dict]:
        return req.json["contents"]

    @staticmethod
    def sent_text(req: RecordedRequest) -> str:
        texts = [p.get("text", "") for c in req.json["contents"] for p in c.get("parts", [])]
        texts += [p.get("text", "") for p in (req.json.get("systemInstruction") or {}).get("parts", [])]
        return "\n".join(t for t in texts if t)

    @staticmethod
    def tool_results(req: RecordedRequest) -> list[tuple[str, str]]:
        out = []
        for c in req.json["contents"]:
            for p in c.get("parts", []):
                fr = p.get("functionResponse")
                if fr:
                    out.append((fr.get("id"), fr["response"]["result"]))
        return out
