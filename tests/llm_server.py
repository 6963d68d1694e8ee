"""A scripted fake LLM server for tests: OpenAI chat completions and Ollama's chat API on 127.0.0.1.

It speaks just enough of both wire protocols for the real ``openai`` and ``ollama`` clients:
``POST /v1/chat/completions`` (OpenAI) and ``POST /api/chat``, ``GET /api/tags`` (Ollama).
Each test scripts replies per class: ``fake.script("tiger", Reply(500), Reply(content="- stripes"))``;
a class with no script left gets ``fake.default(class_name)``. Every request is recorded.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_CLASS = re.compile(r"distinguishing a (.+?) in a photo\?")


@dataclass
class Reply:
    """One scripted response: HTTP status, the answer text (or raw body), extra headers, a delay."""

    status: int = 200
    content: str | None = None  # the assistant's text (status 200)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to sleep before answering (for client timeouts)
    body: dict | None = None  # raw JSON body instead of the API's usual shape
    raw: bytes | None = None  # raw bytes instead of any JSON (an HTML error page, binary garbage)
    content_type: str = "text/html"  # of ``raw``


@dataclass
class Request:
    api: str  # "openai" or "ollama"
    path: str
    headers: dict[str, str]
    body: dict
    cls: str | None  # the class named in the query, if any


def default_answer(cls: str) -> str:
    return f"- distinctive {cls} shape\n- typical {cls} colour\n- fine texture"


class FakeLLM:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.models = {"llama3.2"}  # what Ollama "has"; others give 404
        self.default = lambda cls: Reply(content=default_answer(cls))
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> FakeLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def script(self, cls: str, *replies: Reply) -> None:
        """Queue replies for queries about ``cls``, used in order before ``default``."""
        with self._lock:
            self._scripts[cls].extend(replies)

    def asked(self, cls: str | None = None, api: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if cls in (None, r.cls) and api in (None, r.api)]

    def _next(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            queued = self._scripts.get(request.cls or "")
            if queued:
                return queued.popleft()
        return self.default(request.cls or "")

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _send(self, status: int, obj: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            def _send_raw(self, status: int, data: bytes, content_type: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            def do_GET(self) -> None:
                if self.path == "/api/tags":
                    models = [{"name": m, "model": m, "size": 1, "digest": "x"} for m in sorted(fake.models)]
                    self._send(200, {"models": models})
                elif self.path == "/api/version":
                    self._send(200, {"version": "0.6.0"})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/v1/chat/completions":
                    api = "openai"
                elif self.path == "/api/chat":
                    api = "ollama"
                else:
                    self._send(404, {"error": f"no route {self.path}"})
                    return
                text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
                match = _CLASS.search(text)
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = Request(api, self.path, headers, body, match.group(1) if match else None)
                if api == "ollama" and body.get("model") not in fake.models:
                    fake._next(request)  # recorded, reply unused
                    self._send(404, {"error": f"model '{body.get('model')}' not found, try pulling it first"})
                    return
                reply = fake._next(request)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.raw is not None:
                    self._send_raw(reply.status, reply.raw, reply.content_type)
                elif reply.body is not None:
                    self._send(reply.status, reply.body, reply.headers)
                elif reply.status != 200:
                    message = f"scripted error {reply.status}"
                    error = {"message": message, "type": "server_error"} if api == "openai" else message
                    self._send(reply.status, {"error": error}, reply.headers)
                elif api == "openai":
                    self._send(200, _openai_body(body, reply.content or ""), reply.headers)
                else:
                    self._send(200, _ollama_body(body, reply.content or ""), reply.headers)

        return Handler


def _openai_body(request: dict, content: str) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fake"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50},
    }


def _ollama_body(request: dict, content: str) -> dict:
    return {
        "model": request.get("model", "fake"),
        "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "stop",
        "total_duration": 1000,
        "eval_count": 20,
    }
