"""Credentials never leave the process: URLs are redacted wherever they are stored or shown (answers, errors)."""

from __future__ import annotations

import os
import re
import urllib.parse

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_SECRET_PARAM = re.compile(r"(key|token|secret|password|passwd|pwd|auth|sig|signature|credential)", re.IGNORECASE)
REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` without a password (``user:***@``) and with secret-looking query values replaced by ***."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{hostport}" if ":" in userinfo else f"{REDACTED}@{hostport}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{k}={REDACTED if _SECRET_PARAM.search(k) else v}" for k, v in pairs)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`) and the OpenAI key, if set, replaced."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    key = os.environ.get("OPENAI_API_KEY")
    return text.replace(key, REDACTED) if key and len(key) >= 8 else text
