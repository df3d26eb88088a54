"""The OpenAI-compatible backend: pure helpers, stdlib stub servers, and a real model server.

The real server is `python -m embedtune.serve` with SmolLM2-135M: `transformers serve` (5.24)
cannot load a local GGUF file (its config has no `architectures`).
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from embedtune.answers import Failure
from embedtune.config import LLMConfig
from embedtune.errors import EmbedtuneError
from embedtune.llm import Generation, TransformersChat, ensure_chat_template, make_chat
from embedtune.llm_http import (
    OpenAIChat,
    auth_headers,
    backoff_delay,
    chat_request,
    error_detail,
    parse_completion,
    retry_after_s,
)
from embedtune.serve import Job, RequestError, group_jobs, parse_chat_request

SRC = Path(__file__).resolve().parents[1] / "src"
KEY_ENV = "EMBEDTUNE_TEST_LLM_KEY"
KEY = "sk-test-not-a-real-key-1234"


def http_cfg(base_url: str, **overrides) -> LLMConfig:
    cfg = LLMConfig(
        backend="openai",
        model="smollm2",
        base_url=base_url,
        api_key_env=KEY_ENV,
        concurrency=2,
        timeout_s=10.0,
        max_retries=2,
        max_new_tokens=6,
    )
    return replace(cfg, **overrides)


def completion(text: str, tokens: int | None = 3) -> dict:
    usage = {"completion_tokens": tokens} if tokens is not None else None
    return {"choices": [{"message": {"role": "assistant", "content": text}}], "usage": usage}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- pure helpers -------------------------------------------------------------------------------


def test_auth_headers_only_from_the_named_variable():
    assert auth_headers({KEY_ENV: KEY}, KEY_ENV) == {"Authorization": f"Bearer {KEY}"}
    assert auth_headers({}, KEY_ENV) == {}
    assert auth_headers({KEY_ENV: ""}, KEY_ENV) == {}
    assert auth_headers({"OTHER": KEY}, KEY_ENV) == {}


def test_backoff_doubles_caps_and_jitters_reproducibly():
    delays = [backoff_delay(a, random.Random(0), base_s=1.0, cap_s=5.0) for a in range(5)]
    for attempt, delay in enumerate(delays):
        low = min(5.0, 2**attempt)
        assert low <= delay <= 1.25 * low
    assert delays == [backoff_delay(a, random.Random(0), 1.0, 5.0) for a in range(5)]
    assert backoff_delay(0, random.Random(1), 1.0) != backoff_delay(0, random.Random(2), 1.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2.0), ("0.5", 0.5), ("3600", 60.0), (None, None), ("-1", None), ("Wed, 1 Jan", None)],
)
def test_retry_after_s(value, expected):
    assert retry_after_s(value) == expected


def test_error_detail_is_one_short_line_without_the_key():
    body = json.dumps({"error": {"message": f"bad\nkey {KEY}\n  here"}})
    assert error_detail(body, KEY) == "bad key *** here"
    assert error_detail("plain\ttext", "") == "plain text"
    assert error_detail("x" * 500, "", limit=10) == "x" * 10 + "..."
    assert error_detail("", "") == ""


def test_chat_request_sends_seed_only_when_sampling():
    greedy = chat_request(http_cfg("http://x/v1"), 7, "hi")
    assert greedy == {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 6,
        "temperature": 0.0,
    }
    assert chat_request(http_cfg("http://x/v1", temperature=0.7), 7, "hi")["seed"] == 7


def test_parse_completion():
    assert parse_completion(completion("Why?", 4)) == Generation("Why?", 4)
    assert parse_completion(completion("Why?", None)) == Generation("Why?", 0)
    assert parse_completion({"choices": [{"message": {"content": None}}]}) == Generation("", 0)
    for bad in ({}, {"choices": []}, [], "text"):
        with pytest.raises(ValueError, match="choices"):
            parse_completion(bad)


def test_make_chat_picks_the_backend_without_loading():
    assert isinstance(make_chat(http_cfg("http://x/v1"), 0), OpenAIChat)
    assert isinstance(make_chat(LLMConfig(model="m"), 0), TransformersChat)


def test_chat_template_fallback():
    tokenizer = SimpleNamespace(chat_template=None)
    ensure_chat_template(tokenizer, LLMConfig(model="m", chat_template="{{ messages }}"))
    assert tokenizer.chat_template == "{{ messages }}"
    own = SimpleNamespace(chat_template="own")
    ensure_chat_template(own, LLMConfig(model="m", chat_template="other"))
    assert own.chat_template == "own"
    with pytest.raises(EmbedtuneError, match=r"llm.model=m: .* set llm.chat_template"):
        ensure_chat_template(SimpleNamespace(chat_template=None), LLMConfig(model="m"))


def test_serve_accepts_one_user_turn_only():
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0}
    job = parse_chat_request(body, 96, 0)
    assert (job.message, job.max_tokens, job.temperature, job.seed) == ("hi", 5, 0.0, 0)
    two_turns = {"messages": [{"role": "system", "content": "x"}] + body["messages"]}
    for bad in (two_turns, {**body, "stream": True}, {**body, "max_tokens": 0}, []):
        with pytest.raises(RequestError):
            parse_chat_request(bad, 96, 0)


def test_serve_groups_jobs_by_generation_settings():
    jobs = [Job("a", 8, 0.0, 0), Job("b", 16, 0.0, 0), Job("c", 8, 0.0, 0), Job("d", 8, 0.5, 0)]
    assert [[j.message for j in g] for g in group_jobs(jobs)] == [["a", "c"], ["b"], ["d"]]


# --- stub servers: real HTTP, scripted answers ---------------------------------------------------

# (hit number from 1, request body) -> (status, JSON-able body, seconds to wait first)
Script = Callable[[int, dict], tuple[int, object, float]]


class Stub:
    def __init__(self, script: Script):
        self.script = script
        self.hits = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.auth: list[str | None] = []
        self.lock = threading.Lock()


@contextmanager
def stub_server(script: Script) -> Iterator[tuple[Stub, str]]:
    stub = Stub(script)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            pass

        def _send(self, status: int, payload: object) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client timed out and left

        def do_GET(self):
            self._send(200, {"object": "list", "data": []})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with stub.lock:
                stub.hits += 1
                hit = stub.hits
                stub.auth.append(self.headers.get("Authorization"))
                stub.in_flight += 1
                stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
            status, payload, wait = stub.script(hit, body)
            time.sleep(wait)
            with stub.lock:
                stub.in_flight -= 1
            self._send(status, payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield stub, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def fast_chat(cfg: LLMConfig) -> OpenAIChat:
    return OpenAIChat(cfg, seed=0, backoff_base_s=0.01).load()


def test_retries_503_then_succeeds():
    def script(hit, body):
        return (503, {"error": {"message": "busy"}}, 0) if hit <= 2 else (200, completion("ok"), 0)

    with stub_server(script) as (stub, url):
        assert fast_chat(http_cfg(url)).generate(["q"]) == [Generation("ok", 3)]
    assert stub.hits == 3


def test_retries_a_timeout_then_succeeds():
    with stub_server(lambda hit, body: (200, completion("late"), 2.0 if hit == 1 else 0)) as (
        stub,
        url,
    ):
        assert fast_chat(http_cfg(url, timeout_s=0.3)).generate(["q"])[0].text == "late"
    assert stub.hits == 2


def test_gives_up_after_max_retries_with_one_line():
    with stub_server(lambda hit, body: (500, {"error": {"message": "boom\nline"}}, 0)) as (
        stub,
        url,
    ):
        with pytest.raises(EmbedtuneError, match="failed after 3 attempts: HTTP 500") as err:
            fast_chat(http_cfg(url, max_retries=2)).generate(["q"])
    assert stub.hits == 3
    assert f"POST {url}/chat/completions" in str(err.value)
    assert "\n" not in str(err.value)


def test_timeouts_count_as_failed_attempts():
    with stub_server(lambda hit, body: (200, completion("never"), 1.0)) as (stub, url):
        with pytest.raises(EmbedtuneError, match=r"2 attempts: ReadTimeout after llm.timeout_s"):
            fast_chat(http_cfg(url, timeout_s=0.2, max_retries=1)).generate(["q"])
    assert stub.hits == 2


def test_a_refused_prompt_fails_alone_and_is_not_retried():
    def script(hit, body):
        if body["messages"][0]["content"] == "too long":
            return 400, {"error": {"message": "context length exceeded"}}, 0
        return 200, completion("fine"), 0

    with stub_server(script) as (stub, url):
        out = fast_chat(http_cfg(url)).generate(["q1", "too long", "q3"])
    assert out[0] == out[2] == Generation("fine", 3)
    assert out[1] == Failure("generation_error: HTTP 400 (context length exceeded)")
    assert stub.hits == 3


def test_a_reply_that_is_not_a_completion_fails_that_prompt():
    def script(hit, body):
        return 200, {"choices": []} if hit == 1 else completion("fine"), 0

    with stub_server(script) as (stub, url):
        out = fast_chat(http_cfg(url, concurrency=1)).generate(["q1", "q2"])
    assert isinstance(out[0], Failure)
    assert out[0].reason.startswith("generation_error: HTTP 200 but not a completion")
    assert out[1] == Generation("fine", 3)


def test_order_is_kept_and_concurrency_bounded():
    rng = random.Random(0)
    delays = [rng.uniform(0.02, 0.15) for _ in range(9)]

    def script(hit, body):
        text = body["messages"][0]["content"]
        return 200, completion(text.upper()), delays[hit - 1]

    prompts = [f"prompt {i}" for i in range(9)]
    with stub_server(script) as (stub, url):
        out = fast_chat(http_cfg(url, concurrency=3)).generate(prompts)
    assert [g.text for g in out] == [p.upper() for p in prompts]
    assert 1 < stub.max_in_flight <= 3


def test_key_is_sent_as_bearer_only_when_set(monkeypatch):
    script = lambda hit, body: (200, completion("x"), 0)  # noqa: E731
    monkeypatch.setenv(KEY_ENV, KEY)
    with stub_server(script) as (stub, url):
        fast_chat(http_cfg(url)).generate(["q"])
    assert stub.auth == [f"Bearer {KEY}"]
    monkeypatch.delenv(KEY_ENV)
    with stub_server(script) as (stub, url):
        fast_chat(http_cfg(url)).generate(["q"])
    assert stub.auth == [None]


def test_unreachable_server_fails_load_with_one_line():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EmbedtuneError, match=rf"llm.base_url={url}: no server answers") as err:
        OpenAIChat(http_cfg(url), 0).load()
    assert "\n" not in str(err.value)
    with pytest.raises(EmbedtuneError, match="llm.base_url=127.0.0.1:8000/v1 must start with http"):
        OpenAIChat(http_cfg("127.0.0.1:8000/v1"), 0).load()


# --- a real server with a real model ------------------------------------------------------------


@pytest.fixture(scope="module")
def model_server(tmp_path_factory) -> Iterator[str]:
    """`python -m embedtune.serve` with SmolLM2-135M on a free port, requiring KEY."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = dict(os.environ, PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env[KEY_ENV] = KEY
    args = ["--port", str(port), "--device", "cpu", "--served-model-name", "smollm2"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "embedtune.serve", *args, "--api-key-env", KEY_ENV],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"embedtune.serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"embedtune.serve not ready in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_real_server_generates_in_input_order(model_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)  # the server refuses requests without it
    prompts = [
        "Name a colour.",
        "Text: Paris is the capital of France.\nWrite one question that this text answers.",
        "Say hello.",
    ]
    # A slow first generation on a busy machine is no reason to fail: a long timeout.
    chat = make_chat(http_cfg(model_server, concurrency=2, timeout_s=90), seed=0).load()
    together = chat.generate(prompts)
    assert all(g.text.strip() and 0 < g.new_tokens <= 6 for g in together)
    # Greedy decoding: each prompt alone gives the same answer, so the order is the input order.
    alone = [chat.generate([p])[0] for p in prompts]
    assert together == alone
    assert len(set(g.text for g in together)) == 3


def test_real_server_refuses_a_missing_key(model_server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(EmbedtuneError, match=f"HTTP 401; put the server's API key in .*{KEY_ENV}"):
        OpenAIChat(http_cfg(model_server), 0).load()
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    with pytest.raises(EmbedtuneError, match="HTTP 401") as err:
        OpenAIChat(http_cfg(model_server), 0).load()
    assert "wrong-key" not in str(err.value)


def test_key_never_reaches_the_error_message(monkeypatch):
    def echo_auth(hit, body):
        return 401, {"error": {"message": f"invalid key in header {KEY}"}}, 0

    monkeypatch.setenv(KEY_ENV, KEY)
    with stub_server(echo_auth) as (stub, url):
        with pytest.raises(EmbedtuneError, match=rf"HTTP 401 .*\${KEY_ENV}") as err:
            fast_chat(http_cfg(url)).generate(["q"])
    assert KEY not in str(err.value) and "***" in str(err.value)
    assert stub.hits == 1
