"""A stdlib stub of an OpenAI-compatible server on 127.0.0.1: real HTTP, scripted answers to
POST /chat/completions, every request recorded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(text: str, tokens: int | None = 3) -> dict:
    usage = {"completion_tokens": tokens} if tokens is not None else None
    return {"choices": [{"message": {"role": "assistant", "content": text}}], "usage": usage}


@dataclass
class Reply:
    status: int = 200
    body: object = None  # JSON-able, or bytes sent as they are
    wait: float = 0.0  # seconds before answering
    headers: dict = field(default_factory=dict)
    content_type: str = ""  # default: text/plain for bytes, else application/json


# (hit number from 1, request body) -> the reply to POST /chat/completions
Script = Callable[[int, dict], Reply]


class Stub:
    def __init__(self, script: Script, models: Reply):
        self.script = script
        self.models = models
        self.hits = 0  # POST requests
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.bodies: list[dict] = []
        self.lock = threading.Lock()


@contextmanager
def stub_server(
    script: Script = lambda hit, body: Reply(body=completion("ok")),
    models: Reply | None = None,
) -> Iterator[tuple[Stub, str]]:
    stub = Stub(script, models or Reply(body={"object": "list", "data": []}))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
            pass

        def _send(self, reply: Reply) -> None:
            raw = isinstance(reply.body, bytes)
            data = reply.body if raw else json.dumps(reply.body).encode()
            kind = reply.content_type or ("text/plain" if raw else "application/json")
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client timed out and left

        def _log(self) -> None:
            with stub.lock:
                stub.requests.append((self.command, self.path, self.headers.get("Authorization")))

        def do_GET(self):  # noqa: N802 - the stdlib's name
            self._log()
            self._send(stub.models)

        def do_POST(self):  # noqa: N802 - the stdlib's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._log()
            with stub.lock:
                stub.hits += 1
                hit = stub.hits
                stub.bodies.append(body)
                stub.in_flight += 1
                stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
            reply = stub.script(hit, body)
            time.sleep(reply.wait)
            with stub.lock:
                stub.in_flight -= 1
            self._send(reply)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield stub, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def prompt_of(body: dict) -> str:
    return body["messages"][0]["content"]
