"""The OpenAI-compatible backend against stdlib stub servers on 127.0.0.1: real HTTP through the
real `openai` client, scripted answers. The real model server
(`python -m embedtune.tools.llm_server`) is exercised in tests/tools/test_llm_server.py.

The client backs off 0.5 s, 1 s, ... between retries unless the server sends `Retry-After`: the
stubs send a short one where a test retries, and max_retries stays small.
"""

from __future__ import annotations

import random
import socket
import time

import pytest
from openai.types.chat import ChatCompletion

from embedtune.errors import EmbedtuneError
from embedtune.synth.llm.base import Failure, Generation
from embedtune.synth.llm.openai_chat import OpenAIChat, OpenAIConfig, completion_of, one_line
from tests.helpers import cfg
from tests.helpers.openai_stub import Reply, completion, prompt_of, stub_server

KEY_ENV = "EMBEDTUNE_TEST_LLM_KEY"
KEY = "sk-test-not-a-real-key-1234"
SOON = {"Retry-After": "0.05"}  # retry at once instead of after the client's 0.5 s backoff


def http_cfg(base_url: str, **updates) -> OpenAIConfig:
    base = dict(base_url=base_url, api_key_env=KEY_ENV, max_retries=1, timeout_s=5.0)
    return cfg("llm", "llm=openai_server", **{**base, "max_new_tokens": 6, **updates})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    """Every test starts without the key (a test that needs it sets it)."""
    monkeypatch.delenv(KEY_ENV, raising=False)


# --- pure helpers -------------------------------------------------------------------------------


def test_one_line_is_short_and_masks_the_key():
    assert one_line(f"bad\nkey {KEY}\n  here", KEY) == "bad key *** here"
    assert one_line("plain\ttext") == "plain text"
    assert one_line("x" * 500, limit=10) == "x" * 10 + "..."
    assert one_line("") == ""


def test_completion_of():
    parse = lambda body: completion_of(ChatCompletion.construct(**body))  # noqa: E731
    assert parse(completion("Why?", 4)) == Generation("Why?", 4)
    assert parse(completion("Why?", None)) == Generation("Why?", 0)
    assert parse({"choices": [{"message": {"content": None}}]}) == Generation("", 0)
    for bad in ({}, {"choices": []}, {"choices": [{}]}):
        with pytest.raises(ValueError, match="choices"):
            parse(bad)
    with pytest.raises(ValueError, match="choices"):
        completion_of("text")


# --- stub servers (tests/helpers/openai_stub.py): real HTTP, scripted answers ---------------------


def loaded(cfg: OpenAIConfig) -> OpenAIChat:
    return OpenAIChat(cfg, seed=0).load()


# --- load(): GET /models -------------------------------------------------------------------------


def test_load_checks_the_server_and_generate_needs_it():
    with stub_server() as (stub, url):
        chat = OpenAIChat(http_cfg(url), seed=0)
        with pytest.raises(RuntimeError, match="load"):
            chat.generate(["q"])
        assert stub.requests == []  # constructing does nothing
        assert chat.load() is chat
        assert stub.requests == [("GET", "/v1/models", None)]
        assert chat.generate([]) == []
        assert chat.generate(["q"]) == [Generation("ok", 3)]


def test_unreachable_server_fails_load_with_one_line():
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.perf_counter()
    with pytest.raises(EmbedtuneError, match=rf"llm.base_url={url}: no server answers") as err:
        loaded(http_cfg(url, max_retries=3))
    assert time.perf_counter() - started < 2  # load() checks once, without retries
    assert "\n" not in str(err.value)
    assert "python -m embedtune.tools.llm_server" in str(err.value)
    with pytest.raises(EmbedtuneError, match="llm.base_url=127.0.0.1:8000/v1 must start with http"):
        loaded(http_cfg("127.0.0.1:8000/v1"))


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_at_load_names_the_variable(status, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    refusal = Reply(status, {"error": {"message": f"invalid key {KEY}"}})
    with stub_server(models=refusal) as (stub, url):
        with pytest.raises(EmbedtuneError) as err:
            loaded(http_cfg(url))
    message = str(err.value)
    assert message == (
        f"llm.base_url={url}: GET /models answered HTTP {status}; put the server's API key in "
        f"the environment variable {KEY_ENV} (llm.api_key_env)"
    )
    assert KEY not in message
    assert stub.requests == [("GET", "/v1/models", f"Bearer {KEY}")]


@pytest.mark.parametrize("status", [404, 500])
def test_another_status_at_load_says_what_base_url_must_be(status):
    with stub_server(models=Reply(status, {"error": {"message": "no"}})) as (stub, url):
        with pytest.raises(EmbedtuneError, match=rf"GET /models answered HTTP {status}; ") as err:
            loaded(http_cfg(url, max_retries=2))
    assert "llm.base_url must be the API root" in str(err.value)
    assert "\n" not in str(err.value)
    assert len(stub.requests) == 1  # not retried


def test_key_is_sent_as_bearer_only_when_the_named_variable_is_set(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-some-other-key")  # never read: only llm.api_key_env
    with stub_server() as (stub, url):
        loaded(http_cfg(url)).generate(["q"])
    assert [auth for _, _, auth in stub.requests] == [None, None]
    monkeypatch.setenv(KEY_ENV, "")  # set but empty: no key either
    with stub_server() as (stub, url):
        loaded(http_cfg(url)).generate(["q"])
    assert [auth for _, _, auth in stub.requests] == [None, None]
    monkeypatch.setenv(KEY_ENV, KEY)
    with stub_server() as (stub, url):
        loaded(http_cfg(url)).generate(["q"])
    assert stub.requests == [
        ("GET", "/v1/models", f"Bearer {KEY}"),
        ("POST", "/v1/chat/completions", f"Bearer {KEY}"),
    ]


# --- generate(): POST /chat/completions ----------------------------------------------------------


def test_request_is_one_user_turn_with_the_seed_only_when_sampling():
    with stub_server() as (stub, url):
        loaded(http_cfg(url, model="smollm2")).generate(["hi"])
        OpenAIChat(http_cfg(url, temperature=0.7), seed=7).load().generate(["hi"])
    greedy, sampled = stub.bodies
    assert greedy == {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 6,
        "temperature": 0.0,
    }
    assert (sampled["seed"], sampled["temperature"]) == (7, 0.7)


def test_retries_503_and_429_then_succeeds():
    def script(hit, body):
        if hit == 1:
            return Reply(503, {"error": {"message": "busy"}}, headers=SOON)
        if hit == 2:
            return Reply(429, {"error": {"message": "slow down"}}, headers=SOON)
        return Reply(body=completion("ok"))

    started = time.perf_counter()
    with stub_server(script) as (stub, url):
        assert loaded(http_cfg(url, max_retries=2)).generate(["q"]) == [Generation("ok", 3)]
    assert stub.hits == 3
    # Retry-After is honoured: the client's own backoff would wait 0.5 s + 1 s (less jitter).
    assert time.perf_counter() - started < 1.0


def test_retries_a_timeout_then_succeeds():
    def script(hit, body):
        return Reply(body=completion("late"), wait=2.0 if hit == 1 else 0)

    with stub_server(script) as (stub, url):
        assert loaded(http_cfg(url, timeout_s=0.3)).generate(["q"]) == [Generation("late", 3)]
    assert stub.hits == 2


def test_gives_up_after_max_retries_with_one_line():
    def script(hit, body):
        return Reply(500, {"error": {"message": "boom\nline"}}, headers=SOON)

    with stub_server(script) as (stub, url):
        with pytest.raises(EmbedtuneError) as err:
            loaded(http_cfg(url, max_retries=2)).generate(["q"])
    assert str(err.value) == f"{url}: failed after 3 attempt(s): HTTP 500 (boom line)"
    assert stub.hits == 3


def test_timeouts_count_as_failed_attempts():
    with stub_server(lambda hit, body: Reply(body=completion("never"), wait=1.5)) as (stub, url):
        with pytest.raises(EmbedtuneError) as err:
            loaded(http_cfg(url, timeout_s=0.2, max_retries=1)).generate(["q"])
    assert str(err.value).startswith(
        f"{url}: failed after 2 attempt(s): APITimeoutError after llm.timeout_s=0.2 s"
    )
    assert "\n" not in str(err.value)
    assert stub.hits == 2


def test_an_exhausted_prompt_stops_the_prompts_not_yet_sent():
    with stub_server(lambda hit, body: Reply(502, {"error": {"message": "down"}})) as (stub, url):
        with pytest.raises(EmbedtuneError, match=r"failed after 1 attempt\(s\): HTTP 502"):
            loaded(http_cfg(url, max_retries=0, concurrency=1)).generate(["a", "b", "c", "d"])
    # The queued prompts are cancelled (one may already have started as the first failed).
    assert stub.hits <= 2


@pytest.mark.parametrize("status", [400, 404, 422])
def test_a_refused_prompt_fails_alone_and_is_not_retried(status):
    def script(hit, body):
        if prompt_of(body) == "too long":
            return Reply(status, {"error": {"message": "context length\nexceeded"}}, headers=SOON)
        return Reply(body=completion("fine"))

    with stub_server(script) as (stub, url):
        out = loaded(http_cfg(url, max_retries=2)).generate(["q1", "too long", "q3"])
    assert out[0] == out[2] == Generation("fine", 3)
    assert out[1] == Failure(f"generation_error: HTTP {status} (context length exceeded)")
    assert stub.hits == 3


@pytest.mark.parametrize(
    "reply",
    [
        {"choices": []},
        {"choices": [{}]},
        {"object": "list", "data": []},
        [],
        None,
        b"not json at all",
    ],
    ids=["no-choices", "no-message", "other-object", "list", "null", "text"],
)
def test_a_200_that_is_not_a_completion_fails_that_prompt(reply):
    def script(hit, body):
        return Reply(body=reply if prompt_of(body) == "q1" else completion("fine"))

    with stub_server(script) as (stub, url):
        out = loaded(http_cfg(url, concurrency=1)).generate(["q1", "q2"])
    assert isinstance(out[0], Failure)
    assert out[0].reason.startswith("generation_error: HTTP 200 but not a completion")
    assert "\n" not in out[0].reason
    assert out[1] == Generation("fine", 3)
    assert stub.hits == 2  # a malformed success is not retried


def test_a_200_whose_json_is_cut_short_is_not_a_completion():
    def script(hit, body):
        return Reply(body=b'{"choices": [{"message": ', content_type="application/json")

    with stub_server(script) as (stub, url):
        (out,) = loaded(http_cfg(url)).generate(["q"])
    assert isinstance(out, Failure)
    assert out.reason.startswith("generation_error: HTTP 200 but not a completion")


def test_order_is_kept_and_concurrency_bounded():
    rng = random.Random(0)
    delays = [rng.uniform(0.02, 0.15) for _ in range(9)]

    def script(hit, body):
        return Reply(body=completion(prompt_of(body).upper()), wait=delays[hit - 1])

    prompts = [f"prompt {i}" for i in range(9)]
    with stub_server(script) as (stub, url):
        out = loaded(http_cfg(url, concurrency=3)).generate(prompts)
    assert [g.text for g in out] == [p.upper() for p in prompts]
    assert 1 < stub.max_in_flight <= 3


def test_the_key_never_appears_in_an_error_message(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    echo = {"error": {"message": f"invalid key in header Bearer {KEY}"}}
    messages = []

    # 401 on a completion: the stage stops, naming the variable, never its value.
    with stub_server(lambda hit, body: Reply(401, echo)) as (stub, url):
        with pytest.raises(
            EmbedtuneError, match=rf"HTTP 401 .*\${KEY_ENV} \(llm.api_key_env\)"
        ) as e:
            loaded(http_cfg(url)).generate(["q"])
    messages.append(str(e.value))
    assert stub.hits == 1  # not retried

    # Retries spent on a 5xx.
    with stub_server(lambda hit, body: Reply(503, echo, headers=SOON)) as (stub, url):
        with pytest.raises(EmbedtuneError, match=r"failed after 2 attempt\(s\)") as e:
            loaded(http_cfg(url)).generate(["q"])
    messages.append(str(e.value))

    # A refused prompt: its reason is written to data/qa/failures.json.
    with stub_server(lambda hit, body: Reply(400, echo)) as (stub, url):
        (failure,) = loaded(http_cfg(url)).generate(["q"])
    messages.append(failure.reason)

    # A 200 whose body is not even JSON and repeats the key.
    def plain(hit, body):
        return Reply(body=f"oops {KEY}".encode(), content_type="application/json")

    with stub_server(plain) as (stub, url):
        (failure,) = loaded(http_cfg(url)).generate(["q"])
    messages.append(failure.reason)

    for message in messages:
        assert KEY not in message
        assert "\n" not in message
    assert all("***" in m for m in messages[:3])
