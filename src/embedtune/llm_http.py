"""Question generation through an OpenAI-compatible server (`llm.backend: openai`).

Usage: set `llm=openai_server` (or `-S llm.backend=openai -S llm.base_url=http://HOST:PORT/v1`),
then `dvc exp run`; `python -m embedtune.serve` is one such server for a local model.

The API key is read from the environment variable that `llm.api_key_env` names, never from a file.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import httpx

from embedtune.answers import Failure
from embedtune.config import LLMConfig
from embedtune.errors import EmbedtuneError
from embedtune.llm import Generation

# Worth another try: the server is busy, failing for a while, or rate limiting us.
RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
# Transport errors worth another try; a bad URL scheme (UnsupportedProtocol) is not one.
RETRY_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def auth_headers(env: Mapping[str, str], var: str) -> dict[str, str]:
    """A Bearer header from the variable named `var`, or none when it is unset or empty."""
    key = env.get(var, "")
    return {"Authorization": f"Bearer {key}"} if key else {}


def backoff_delay(
    attempt: int, rng: random.Random, base_s: float = 0.5, cap_s: float = 30.0
) -> float:
    """Seconds before retry number `attempt` (0-based): doubling, capped, plus up to 25% jitter."""
    return min(cap_s, base_s * 2**attempt) * (1 + 0.25 * rng.random())


def retry_after_s(value: str | None, cap_s: float = 60.0) -> float | None:
    """The server's `Retry-After` in seconds when it is a number (capped), else None."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare, and the backoff is a fine substitute
    return None if seconds is None or seconds < 0 else min(seconds, cap_s)


def error_detail(body: str, secret: str = "", limit: int = 200) -> str:
    """One short line from an error response body: its `error.message` when it is JSON."""
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        text = err.get("message", body) if isinstance(err, dict) else str(err)
    except ValueError:
        text = body
    text = re.sub(r"\s+", " ", str(text)).strip()
    if secret:
        text = text.replace(secret, "***")
    return text[:limit] + ("..." if len(text) > limit else "")


def chat_request(cfg: LLMConfig, seed: int, message: str) -> dict:
    """The chat-completions body for one user turn."""
    body = {
        "model": cfg.model,
        "messages": [{"role": "user", "content": message}],
        "max_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
    }
    if cfg.temperature > 0:
        body["seed"] = seed
    return body


def parse_completion(data: object) -> Generation:
    """Text and completion-token count of a chat-completions response; ValueError if not one."""
    try:
        text = data["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise ValueError("no choices[0].message.content") from None
    usage = data.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return Generation(str(text), int(tokens or 0))


class OpenAIChat:
    """User messages in, completions out, over HTTP. Construct cheaply; `load()` connects."""

    def __init__(
        self, cfg: LLMConfig, seed: int, *, backoff_base_s: float = 0.5, backoff_cap_s: float = 30.0
    ):
        self.cfg = cfg
        self.seed = seed
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.base_url = (cfg.base_url or "").rstrip("/")
        self.client: httpx.Client | None = None

    def load(self) -> OpenAIChat:
        """Open the connection pool and check that the server answers `GET {base_url}/models`."""
        cfg = self.cfg
        where = f"llm.base_url={cfg.base_url}"
        if not self.base_url.startswith(("http://", "https://")):
            raise EmbedtuneError(f"{where} must start with http:// or https://")
        self.close()
        self.client = httpx.Client(
            headers=auth_headers(os.environ, cfg.api_key_env),
            timeout=httpx.Timeout(cfg.timeout_s),
            limits=httpx.Limits(max_connections=cfg.concurrency),
        )
        try:
            response = self.client.get(f"{self.base_url}/models")
        except (httpx.HTTPError, httpx.InvalidURL) as err:
            self.close()
            raise EmbedtuneError(
                f"{where}: no server answers ({type(err).__name__}); start an OpenAI-compatible "
                "server there (e.g. `python -m embedtune.serve --port 8000`) or fix llm.base_url"
            ) from None
        if response.status_code in (401, 403):
            self.close()
            raise EmbedtuneError(
                f"{where}: GET /models answered HTTP {response.status_code}; put the server's API "
                f"key in the environment variable {cfg.api_key_env} (llm.api_key_env)"
            )
        if response.status_code != 200:
            self.close()
            raise EmbedtuneError(
                f"{where}: GET /models answered HTTP {response.status_code}; llm.base_url must be "
                "the API root of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
            )
        return self

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def generate(self, messages: list[str]) -> list[Generation | Failure]:
        """Complete each message as a single user turn, `llm.concurrency` requests at a time.

        A prompt the server refuses (a 4xx other than 401, 403 and 429) becomes a `Failure` for
        that prompt alone; retries running out means the server is unwell, and fails them all."""
        if self.client is None:
            raise RuntimeError("OpenAIChat.load() must be called before generate()")
        if not messages:
            return []
        stop = threading.Event()  # after one request failed for good, the others stop retrying
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            futures = [pool.submit(self._complete, i, m, stop) for i, m in enumerate(messages)]
            try:
                return [f.result() for f in futures]
            except BaseException:
                stop.set()
                for f in futures:
                    f.cancel()
                raise

    def _complete(self, index: int, message: str, stop: threading.Event) -> Generation | Failure:
        cfg = self.cfg
        url = f"{self.base_url}/chat/completions"
        body = chat_request(cfg, self.seed, message)
        # One RNG per message: the jitter does not depend on how threads interleave.
        rng = random.Random(f"{self.seed}:{index}")
        attempts = cfg.max_retries + 1
        for attempt in range(attempts):
            wait = None
            try:
                response = self.client.post(url, json=body)
            except RETRY_ERRORS as err:
                failure = type(err).__name__
                if isinstance(err, httpx.TimeoutException):
                    failure += f" after llm.timeout_s={cfg.timeout_s} s"
            else:
                if response.status_code == 200:
                    try:
                        return parse_completion(response.json())
                    except ValueError as err:
                        return Failure(f"generation_error: HTTP 200 but not a completion: {err}")
                failure = f"HTTP {response.status_code} {self._detail(response)}".rstrip()
                if response.status_code in (401, 403):
                    failure += f"; is the API key in ${cfg.api_key_env} (llm.api_key_env) right?"
                    raise EmbedtuneError(f"POST {url} failed: {failure}")
                if response.status_code not in RETRY_STATUSES:
                    # This prompt was refused (too long, say): the others go on.
                    return Failure(f"generation_error: {failure}"[:200])
                wait = retry_after_s(response.headers.get("retry-after"))
            if attempt + 1 == attempts or stop.is_set():
                break
            delay = backoff_delay(attempt, rng, self.backoff_base_s, self.backoff_cap_s)
            if stop.wait(max(delay, wait or 0.0)):
                break
        raise EmbedtuneError(f"POST {url} failed after {attempt + 1} attempts: {failure}")

    def _detail(self, response: httpx.Response) -> str:
        detail = error_detail(response.text, os.environ.get(self.cfg.api_key_env, ""))
        return f"({detail})" if detail else ""
