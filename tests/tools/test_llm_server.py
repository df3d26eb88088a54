"""`python -m embedtune.tools.llm_server`: its pure helpers, and the real server with
SmolLM2-135M on 127.0.0.1, driven by our OpenAI backend and by raw HTTP.

The server exists because `transformers serve` (5.24) cannot load a local GGUF file (its config
has no `architectures`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from embedtune.errors import EmbedtuneError
from embedtune.synth.llm.base import Generation, make_chat
from embedtune.synth.llm.openai_chat import OpenAIChat
from embedtune.tools.llm_server import (
    Job,
    RequestError,
    completion_body,
    group_jobs,
    parse_chat_request,
)
from tests.helpers import ROOT, cfg

SRC = ROOT / "src"
KEY_ENV = "EMBEDTUNE_TEST_LLM_KEY"
KEY = "sk-test-not-a-real-key-1234"
USER = [{"role": "user", "content": "hi"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return {**env, **extra}


# --- pure helpers -------------------------------------------------------------------------------


def test_a_chat_request_becomes_a_job():
    job = parse_chat_request({"messages": USER, "max_tokens": 5, "temperature": 0}, 96, 0)
    assert (job.message, job.max_tokens, job.temperature, job.seed) == ("hi", 5, 0.0, 0)
    job = parse_chat_request({"messages": USER}, 96, 3)  # the server's defaults
    assert (job.max_tokens, job.temperature, job.seed) == (96, 0.0, 3)
    job = parse_chat_request(
        {"messages": USER, "max_completion_tokens": 7, "max_tokens": 5, "seed": 9}, 96, 0
    )
    assert (job.max_tokens, job.seed) == (7, 9)  # the newer name wins


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], "JSON object"),
        ({"messages": [{"role": "system", "content": "x"}, *USER]}, "exactly one user message"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "exactly one user message"),
        ({"messages": [{"role": "user", "content": ["parts"]}]}, "string content"),
        ({"messages": "hi"}, "exactly one user message"),
        ({"messages": USER, "stream": True}, "stream"),
        ({"messages": USER, "n": 2}, "n=1"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"messages": USER, "max_tokens": True}, "max_tokens"),
        ({"messages": USER, "temperature": "hot"}, "temperature must be a number"),
        ({"messages": USER, "temperature": -0.1}, "temperature must be >= 0"),
        ({"messages": USER, "seed": 1.5}, "seed"),
    ],
)
def test_a_request_the_server_cannot_answer_is_refused(body, problem):
    with pytest.raises(RequestError, match=problem):
        parse_chat_request(body, 96, 0)


def test_jobs_are_grouped_by_generation_settings():
    jobs = [Job("a", 8, 0.0, 0), Job("b", 16, 0.0, 0), Job("c", 8, 0.0, 0), Job("d", 8, 0.5, 0)]
    jobs.append(Job("e", 8, 0.0, 1))
    groups = [[j.message for j in g] for g in group_jobs(jobs)]
    assert groups == [["a", "c"], ["b"], ["d"], ["e"]]


def test_completion_body_is_an_openai_chat_completion():
    from openai.types.chat import ChatCompletion

    body = completion_body("smollm2", Generation("Why?", 4), prompt_tokens=10, max_tokens=4)
    parsed = ChatCompletion.model_validate(body)  # what the openai client expects
    assert parsed.choices[0].message.content == "Why?"
    assert parsed.choices[0].finish_reason == "length"
    assert (parsed.usage.prompt_tokens, parsed.usage.total_tokens) == (10, 14)
    stopped = completion_body("smollm2", Generation("Why?", 2), 10, max_tokens=4)
    assert stopped["choices"][0]["finish_reason"] == "stop"


def test_a_named_key_variable_that_is_unset_fails_at_once():
    env = server_env()
    env.pop(KEY_ENV, None)
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedtune.tools.llm_server",
            "--api-key-env",
            KEY_ENV,
            "--port",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"embedtune serve: error: --api-key-env {KEY_ENV}: that variable is not set"
    )
    assert time.perf_counter() - started < 60  # no model was loaded


# --- a real server with a real model ------------------------------------------------------------


@pytest.fixture(scope="module")
def model_server(tmp_path_factory) -> Iterator[str]:
    """`python -m embedtune.tools.llm_server` with SmolLM2-135M on a free port, requiring KEY."""
    port = free_port()
    log: Path = tmp_path_factory.mktemp("serve") / "serve.log"
    args = ["--port", str(port), "--device", "cpu", "--served-model-name", "smollm2"]
    args += ["--api-key-env", KEY_ENV, "--batch-size", "4"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "embedtune.tools.llm_server", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=server_env(**{KEY_ENV: KEY}),
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve not ready in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_cfg(base_url: str, **updates):
    base = dict(base_url=base_url, api_key_env=KEY_ENV, max_retries=1, timeout_s=90.0)
    # A slow first generation on a busy machine is no reason to fail: a long timeout.
    return cfg(
        "llm", "llm=openai_server", **{**base, "model": "smollm2", "max_new_tokens": 6, **updates}
    )


def test_real_server_generates_in_input_order(model_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)  # the server refuses requests without it
    prompts = [
        "Name a colour.",
        "Text: Paris is the capital of France.\nWrite one question that this text answers.",
        "Say hello.",
    ]
    chat = make_chat(server_cfg(model_server, concurrency=2), seed=0).load()
    assert isinstance(chat, OpenAIChat)
    together = chat.generate(prompts)
    assert all(g.text.strip() and 0 < g.new_tokens <= 6 for g in together)
    # Greedy decoding: each prompt alone gives the same answer, so the order is the input order.
    alone = [chat.generate([p])[0] for p in prompts]
    assert together == alone
    assert len(set(g.text for g in together)) == 3


def test_real_server_refuses_a_missing_or_wrong_key(model_server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(EmbedtuneError, match=f"HTTP 401; put the server's API key in .*{KEY_ENV}"):
        OpenAIChat(server_cfg(model_server), 0).load()
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    with pytest.raises(EmbedtuneError, match="HTTP 401") as err:
        OpenAIChat(server_cfg(model_server), 0).load()
    assert "wrong-key" not in str(err.value)


def test_real_server_answers_bad_requests_with_openai_errors(model_server):
    root = model_server.removesuffix("/v1")
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=root, timeout=30) as http:
        assert http.get("/health").json() == {"status": "ok"}  # no key needed
        models = http.get("/v1/models", headers=auth).json()
        assert [m["id"] for m in models["data"]] == ["smollm2"]
        chat = "/v1/chat/completions"
        two_turns = {"messages": [{"role": "system", "content": "x"}, *USER]}
        refused = http.post(chat, json=two_turns, headers=auth)
        assert refused.status_code == 400
        assert refused.json()["error"]["type"] == "invalid_request_error"
        assert http.post(chat, content=b"{not json", headers=auth).status_code == 400
        assert http.post(chat, json={"messages": USER}).status_code == 401
        assert http.get("/v1/nowhere", headers=auth).status_code == 404
        assert http.post("/v1/completions", json={}, headers=auth).status_code == 404
        answer = http.post(chat, json={"messages": USER, "max_tokens": 3}, headers=auth).json()
        assert 0 < answer["usage"]["completion_tokens"] <= 3
        assert answer["usage"]["prompt_tokens"] > 0


def test_real_server_refuses_a_huge_body_unread_and_closes(model_server):
    port = int(model_server.removesuffix("/v1").rsplit(":", 1)[1])
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Length: {64 * 1024 * 1024}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())  # and no body: the server must answer without reading it
        reply = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            reply += chunk
    status, _, rest = reply.partition(b"\r\n")
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    assert b"\r\nConnection: close\r\n" in rest
    assert b"request body too large" in rest
