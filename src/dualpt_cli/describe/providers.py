"""LLM providers for ``dualpt describe``: one small interface, three implementations, a plain dict registry.

A provider answers one query with one text (:meth:`Provider.complete`). It sorts every failure into one of
three kinds so that ``describe`` can apply a single retry policy:

* :class:`TransientError` - worth retrying (429, 5xx, timeouts, lost connections), with the server's
  ``Retry-After`` when it sent one;
* :class:`RequestRejected` - this request will not succeed as sent (other 4xx); the class fails;
* :class:`~dualpt_cli.errors.ProviderError` - nothing will succeed (bad key, missing model); the run stops.

The client libraries' own retries are switched off (``max_retries=0``) so that ours is the only policy.
API keys are read from the environment by the provider and never leave it.
"""

from __future__ import annotations

import email.utils
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.vocab import PROVIDERS as PROVIDER_CHOICES  # noqa: E402,F401
from ..errors import ProviderError
from .redact import redact, redact_url

DEFAULT_MODELS = {"openai": "gpt-4o-mini", "ollama": "llama3.2"}
PROBE_TIMEOUT = 1.5  # seconds to wait for an Ollama server when --provider auto looks for one

# Structured output asked of providers that support it; plain list parsing remains the fallback.
PHRASES_SCHEMA = {
    "type": "object",
    "properties": {"phrases": {"type": "array", "items": {"type": "string"}}},
    "required": ["phrases"],
    "additionalProperties": False,
}


class TransientError(Exception):
    """A failure worth retrying; ``retry_after`` is the server's requested wait in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestRejected(Exception):
    """The server refused this request as sent (a 4xx other than 408/409/429); retrying will not help."""


@dataclass(frozen=True)
class ProviderSettings:
    """What the user chose; each provider fills in its own defaults."""

    model: str | None = None  # model name; None = the provider's default
    base_url: str | None = None  # OpenAI-compatible server (else $OPENAI_BASE_URL, else api.openai.com)
    host: str | None = None  # Ollama server (else $OLLAMA_HOST, else http://127.0.0.1:11434)
    timeout: float = 60.0  # seconds per request
    structured: bool = True  # ask for JSON-schema output where the provider supports it


class Provider(Protocol):
    @property
    def name(self) -> str:
        """Registry key, recorded in provenance."""
        ...

    @property
    def model(self) -> str | None:
        """Resolved model name, recorded in provenance."""
        ...

    def complete(self, query: str, temperature: float) -> str:
        """Send one user message, return the answer's text (raises the errors listed in the module doc)."""
        ...


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); None if absent or bad."""
    if headers is None:
        return None
    try:
        value = headers.get("retry-after-ms")
        if value is not None:
            return max(0.0, float(value) / 1000)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _short(text: object, limit: int = 160) -> str:
    """One printable line of at most ``limit`` characters, with credentials in URLs redacted."""
    text = "".join(ch if ch.isprintable() else " " for ch in redact(str(text)))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refused(exc: BaseException | None) -> bool:
    """True if ``exc`` (or an exception it was raised from) is a failed connect: refused, unknown host."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (ConnectionRefusedError, socket.gaierror)) or (
            type(exc).__name__ == "ConnectError" and type(exc).__module__.startswith(("httpx", "httpcore"))
        ):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class BadAnswer(RequestRejected):
    """The server answered 200 with a body that is not the API's answer (HTML, garbage)."""


# ---------------------------------------------------------------------------------------------------------
# OpenAI and OpenAI-compatible servers


class OpenAIProvider:
    """Chat completions through the ``openai`` client; any OpenAI-compatible server via ``base_url``."""

    name = "openai"

    def __init__(self, settings: ProviderSettings) -> None:
        import openai

        self._openai = openai
        base_url = settings.base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = os.environ.get("OPENAI_API_KEY") or None
        if key is None and base_url is None:
            raise ProviderError(
                "OPENAI_API_KEY is not set; export it, pass --base-url URL for a local OpenAI-compatible "
                "server, or choose --provider ollama or --provider none"
            )
        self.model = settings.model or DEFAULT_MODELS["openai"]
        self.base_url = base_url
        self.where = redact_url(base_url) if base_url else "api.openai.com"  # shown and stored: no credentials
        self._structured = settings.structured
        # local servers (vLLM, llama.cpp, LM Studio) take any key; the client insists on one
        self._client = openai.OpenAI(
            api_key=key or "no-key", base_url=base_url, timeout=settings.timeout, max_retries=0
        )

    def complete(self, query: str, temperature: float) -> str:
        openai = self._openai
        kwargs: dict[str, Any] = {}
        structured = self._structured
        if structured:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "phrases", "strict": True, "schema": PHRASES_SCHEMA},
            }
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": query}],
                temperature=temperature,
                **kwargs,
            )
        except openai.APITimeoutError:  # a subclass of APIConnectionError: test it first
            raise TransientError("request timed out") from None
        except openai.APIConnectionError as exc:
            if _refused(exc):  # nothing listens there: retrying every class for minutes helps nobody
                raise ProviderError(
                    f"cannot connect to {self.where} (connection refused or unknown host); "
                    "check --base-url / OPENAI_BASE_URL and that the server runs"
                ) from None
            raise TransientError(f"connection failed: {_short(exc)}") from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            if structured and status in (400, 422):
                # a server without JSON-schema support: ask plainly from now on, and parse the list
                self._structured = False
                return self.complete(query, temperature)
            raise self._classify(status, exc) from None
        try:
            if not response.choices:
                return ""
            content = response.choices[0].message.content or ""
        except (AttributeError, TypeError, IndexError, KeyError):
            raise BadAnswer(
                f"{self.where} answered with a body that is not a chat completion: {_short(response, 80)!r}"
            ) from None
        if not isinstance(content, str):
            raise BadAnswer(f"{self.where} answered with a message that is not text")
        return content

    def _classify(self, status: int, exc: Any) -> Exception:
        where = self.where
        if status == 429 or status >= 500 or status in (408, 409):
            return TransientError(f"HTTP {status} from {where}", parse_retry_after(exc.response.headers))
        if status == 401:
            return ProviderError(
                f"{where} rejected the API key (HTTP 401); check OPENAI_API_KEY (the key is never printed)"
            )
        if status == 403:
            return ProviderError(f"{where} refused access to model {self.model!r} (HTTP 403): {_short(exc)}")
        if status == 404:
            return ProviderError(
                f"{where} has no model {self.model!r} (HTTP 404); pass --model NAME with a model it serves"
            )
        return RequestRejected(f"HTTP {status} from {where}: {_short(exc)}")


# ---------------------------------------------------------------------------------------------------------
# Ollama


def _ollama_host(host: str | None) -> str:
    return host or os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434"


class OllamaProvider:
    """A local or remote Ollama server through the ``ollama`` client (which never retries by itself)."""

    name = "ollama"

    def __init__(self, settings: ProviderSettings) -> None:
        import ollama

        self._ollama = ollama
        self.model = settings.model or DEFAULT_MODELS["ollama"]
        self.host = redact_url(_ollama_host(settings.host))  # shown and stored: no credentials
        self._structured = settings.structured
        self._client = ollama.Client(host=_ollama_host(settings.host), timeout=settings.timeout)

    def complete(self, query: str, temperature: float) -> str:
        import httpx

        ollama = self._ollama
        structured = self._structured
        try:
            response = self._client.chat(
                model=self.model,
                messages=[{"role": "user", "content": query}],
                options={"temperature": temperature},
                format=PHRASES_SCHEMA if structured else None,
            )
        except httpx.TimeoutException:
            raise TransientError("request timed out") from None
        except (ConnectionError, httpx.ConnectError):  # the client's word for a refused connect or unknown host
            raise ProviderError(
                f"cannot connect to Ollama at {self.host} (connection refused or unknown host); "
                "start `ollama serve`, or pass --host / set OLLAMA_HOST"
            ) from None
        except httpx.TransportError as exc:
            raise TransientError(f"cannot reach Ollama at {self.host}: {_short(exc)}") from None
        except ValueError as exc:  # a 200 whose body is not JSON, or not a chat answer
            raise BadAnswer(
                f"Ollama at {self.host} answered with a body that is not a chat answer ({type(exc).__name__})"
            ) from None
        except ollama.ResponseError as exc:
            status = exc.status_code
            if status == 404:
                raise ProviderError(
                    f"Ollama at {self.host} has no model {self.model!r}; run `ollama pull {self.model}` "
                    "or pass --model NAME"
                ) from None
            if structured and status in (400, 422) and "format" in str(exc.error).lower():
                self._structured = False  # an old server without JSON-schema output
                return self.complete(query, temperature)
            if status == 429 or status >= 500 or status in (408, 409, -1):
                raise TransientError(f"HTTP {status} from Ollama: {_short(exc.error)}") from None
            raise RequestRejected(f"HTTP {status} from Ollama: {_short(exc.error)}") from None
        content = getattr(getattr(response, "message", None), "content", None) or ""
        if not isinstance(content, str):
            raise BadAnswer(f"Ollama at {self.host} answered with a message that is not text")
        return content


def ollama_answers(host: str | None, timeout: float = PROBE_TIMEOUT) -> bool:
    """True if an Ollama server answers at ``host`` within ``timeout`` seconds."""
    import ollama

    try:
        ollama.Client(host=_ollama_host(host), timeout=timeout).list()
    except Exception:  # noqa: BLE001 - any failure means "not there"
        return False
    return True


# ---------------------------------------------------------------------------------------------------------
# no LLM


class NoProvider:
    """No LLM: ``describe`` writes the class list without phrases (the paper's "None" context, beta = 0)."""

    name = "none"
    model = None

    def __init__(self, settings: ProviderSettings) -> None:
        pass

    def complete(self, query: str, temperature: float) -> str:
        return ""


PROVIDERS: dict[str, Callable[[ProviderSettings], Provider]] = {
    "openai": OpenAIProvider,
    "ollama": OllamaProvider,
    "none": NoProvider,
}


def make_provider(name: str, settings: ProviderSettings) -> Provider:
    """Build the named provider; ``auto`` picks openai, then a running Ollama, else says what to choose."""
    name = name.strip().lower()
    if name == "auto":
        name = _auto_choice(settings)
    if name not in PROVIDERS:
        raise ProviderError(f"unknown provider {name!r}; choose one of: {', '.join(PROVIDER_CHOICES)}")
    return PROVIDERS[name](settings)


def _auto_choice(settings: ProviderSettings) -> str:
    if os.environ.get("OPENAI_API_KEY") or settings.base_url or os.environ.get("OPENAI_BASE_URL"):
        return "openai"
    if ollama_answers(settings.host):
        return "ollama"
    raise ProviderError(
        "no LLM provider found: OPENAI_API_KEY is not set and no Ollama server answers at "
        f"{redact_url(_ollama_host(settings.host))}; choose --provider openai (set OPENAI_API_KEY or --base-url), "
        "--provider ollama (start `ollama serve`, or set OLLAMA_HOST / --host), "
        "or --provider none (train without LLM descriptions)"
    )
