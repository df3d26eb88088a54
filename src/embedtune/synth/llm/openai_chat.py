"""Backend `openai`: any OpenAI-compatible server (vLLM, TGI, llama.cpp, a hosted API).

Usage: `-S llm=openai_server` (or `-S llm.base_url=http://HOST:PORT/v1`), then `dvc exp run`;
`python -m embedtune.tools.llm_server` is one such server for a local model.

Requests go through the `openai` client: its timeouts, its retries with exponential backoff on
connection errors, timeouts, 408, 409, 429 and 5xx (honouring `Retry-After`), and its error
types. The API key is read from the environment variable that `llm.api_key_env` names, never
from a file.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Literal

from pydantic import Field

from embedtune.errors import EmbedtuneError
from embedtune.synth.llm.base import BACKENDS, ChatBackend, Failure, Generation, LLMConfig


class OpenAIConfig(LLMConfig):
    not_in_answer_key: ClassVar[frozenset[str]] = LLMConfig.not_in_answer_key | {
        "base_url",
        "api_key_env",
        "concurrency",
        "timeout_s",
        "max_retries",
    }

    backend: Literal["openai"]
    base_url: str  # the server's OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1
    api_key_env: str  # the NAME of the variable holding the key, never the key
    concurrency: int = Field(gt=0)  # requests in flight at most
    timeout_s: float = Field(gt=0)  # per request
    max_retries: int = Field(ge=0)  # the client's retries on timeouts, 429 and 5xx


def one_line(text: str, secret: str = "", limit: int = 200) -> str:
    """An error message as one short line, with the API key (if it shows up) masked."""
    text = re.sub(r"\s+", " ", text).strip()
    if secret:
        text = text.replace(secret, "***")
    return text[:limit] + ("..." if len(text) > limit else "")


def completion_of(response) -> Generation:
    """Text and completion-token count of a chat completion; ValueError if it is not one."""
    try:
        text = response.choices[0].message.content or ""
    except (AttributeError, IndexError, KeyError, TypeError):
        raise ValueError("no choices[0].message.content") from None
    usage = getattr(response, "usage", None)
    return Generation(str(text), int(getattr(usage, "completion_tokens", 0) or 0))


@BACKENDS.register("openai")
class OpenAIChat(ChatBackend):
    """User messages in, completions out, over HTTP, `llm.concurrency` requests at a time."""

    Config = OpenAIConfig
    cfg: OpenAIConfig

    def __init__(self, cfg: OpenAIConfig, seed: int):
        super().__init__(cfg, seed)
        self.client = None
        self.headers: dict = {}

    @property
    def secret(self) -> str:
        return os.environ.get(self.cfg.api_key_env, "")

    def load(self) -> OpenAIChat:
        """Make the client and check that the server answers `GET {base_url}/models`."""
        import openai

        cfg = self.cfg
        where = f"llm.base_url={cfg.base_url}"
        if not cfg.base_url.startswith(("http://", "https://")):
            raise EmbedtuneError(f"{where} must start with http:// or https://")
        # No key: send no Authorization header at all (a local server needs none). The client
        # accepts an omitted header only per request, not in its default headers.
        self.headers = {} if self.secret else {"Authorization": openai.Omit()}
        self.client = openai.OpenAI(
            base_url=cfg.base_url,
            api_key=self.secret or "unused",
            timeout=cfg.timeout_s,
            max_retries=cfg.max_retries,
        )
        try:
            self.client.with_options(max_retries=0).models.list(extra_headers=self.headers)
        except openai.APIConnectionError as err:
            raise EmbedtuneError(
                f"{where}: no server answers ({type(err).__name__}); start an OpenAI-compatible "
                "server there (e.g. `python -m embedtune.tools.llm_server --port 8000`) or fix "
                "llm.base_url"
            ) from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
            raise EmbedtuneError(
                f"{where}: GET /models answered HTTP {err.status_code}; put the server's API "
                f"key in the environment variable {cfg.api_key_env} (llm.api_key_env)"
            ) from None
        except openai.APIStatusError as err:
            raise EmbedtuneError(
                f"{where}: GET /models answered HTTP {err.status_code}; llm.base_url must be "
                "the API root of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
            ) from None
        return self

    def generate(self, messages: list[str]) -> list[Generation | Failure]:
        """Complete each message as a single user turn.

        A prompt the server refuses (a 4xx other than 401, 403 and 429, once the client's
        retries are spent) becomes a `Failure` for that prompt alone. Retries running out on a
        429, a 5xx or the connection means the server is unwell: that stops the batch (requests
        already in flight finish their own retries first; the client cannot cancel them).
        """
        if self.client is None:
            raise RuntimeError("OpenAIChat.load() must be called before generate()")
        if not messages:
            return []
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            return list(pool.map(self._complete, messages))

    def _complete(self, message: str) -> Generation | Failure:
        import openai

        cfg = self.cfg
        sampling = {"seed": self.seed} if cfg.temperature > 0 else {}
        try:
            response = self.client.chat.completions.create(
                model=cfg.model,
                messages=[{"role": "user", "content": message}],
                max_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                extra_headers=self.headers,
                **sampling,
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
            raise EmbedtuneError(
                f"{cfg.base_url}: HTTP {err.status_code} {self._detail(err)}; is the API key in "
                f"${cfg.api_key_env} (llm.api_key_env) right?"
            ) from None
        except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as e:
            status = getattr(e, "status_code", None)
            failure = f"HTTP {status}" if status else type(e).__name__
            if isinstance(e, openai.APITimeoutError):
                failure += f" after llm.timeout_s={cfg.timeout_s} s"
            raise EmbedtuneError(
                f"{cfg.base_url}: failed after {cfg.max_retries + 1} attempt(s): {failure} "
                f"{self._detail(e)}".rstrip()
            ) from None
        except openai.APIStatusError as err:
            # This prompt was refused (too long, say): the others go on.
            return Failure(f"generation_error: HTTP {err.status_code} {self._detail(err)}"[:200])
        except (ValueError, openai.APIResponseValidationError) as err:
            # A success status whose body does not parse (JSONDecodeError is a ValueError).
            reason = one_line(f"{type(err).__name__}: {err}", self.secret)
            return Failure(f"generation_error: HTTP 200 but not a completion: {reason}"[:200])
        try:
            return completion_of(response)
        except ValueError as err:
            return Failure(f"generation_error: HTTP 200 but not a completion: {err}"[:200])

    def _detail(self, err: Exception) -> str:
        body = getattr(err, "body", None)
        message = body.get("message") if isinstance(body, dict) else None
        detail = one_line(str(message or getattr(err, "message", "") or ""), self.secret)
        return f"({detail})" if detail else ""
