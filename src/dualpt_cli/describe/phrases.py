"""Short phrases from free text: an LLM's answer (``describe``) or a phrases file (``phrasefile``).

A JSON answer gives its list of strings; any other text is read as a bulleted, numbered or prose list.
Bullets, numbering, markup, preambles, refusals and lines that only restate the class name are dropped;
long prose is split at sentence ends, semicolons and list commas (docs/describe.md, "The query").
"""

from __future__ import annotations

import json
import re

from ..data.descriptions import merge_phrases

MAX_WORDS = 12  # a longer line is prose, not a short phrase (split at commas, else dropped)
MAX_CHARS = 100

_BULLET = re.compile(r"^\s*(?:[-*+•·●▪◦‣–—>]+|\(?\d{1,3}[.)\]:]|\(?[a-zA-Z][.)](?=\s)|#+)\s*")
_REFUSAL = re.compile(
    r"\b(?:i['’]?m sorry|i am sorry|i apologi[sz]e|i can(?:['’]|no)?t|i am unable|i['’]?m unable|"
    r"i['’]?m not able|as an ai|language model|i do not have|i don['’]?t have)\b",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(r"^(?:here (?:are|is)|sure|certainly|of course|answer\b|q:)", re.IGNORECASE)
_CLOSING = re.compile(
    r"^(?:these (?:features|characteristics|traits|details)|i hope|hope this|let me know|"
    r"overall|in summary|in conclusion)\b",
    re.IGNORECASE,
)  # a remark after the list
_NON_ANSWERS = {"no", "yes", "none", "n/a", "na", "unknown", "nothing", "null", "ok", "okay"}
_FILLER = {"a", "an", "the", "of", "in", "photo", "picture", "image", "this", "is", "it", "its", "s"}


def _strip_json_fence(text: str) -> str:
    match = re.fullmatch(r"\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*", text, re.DOTALL)
    return match.group(1) if match else text


def _json_items(text: str) -> list[str] | None:
    """The phrases of a JSON answer (``{"phrases": [...]}``, any list of strings), else None."""
    text = _strip_json_fence(text).strip()
    if not text or text[0] not in "[{":
        return None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = data.get("phrases", lists[0] if lists else None)
    if not isinstance(data, list):
        return None
    return [item for item in data if isinstance(item, str)]


def _lead_in(name: str) -> re.Pattern:
    """``A tiger has ...`` / ``They have ...`` at the start of a prose phrase."""
    subject = rf"(?:(?:a|an|the)\s+)?(?:{re.escape(name)}(?:e?s)?|it|they)"
    verb = r"(?:(?:usually|typically|often|generally|commonly)\s+)?(?:has|have|is|are|features?|shows?)"
    return re.compile(rf"^{subject}\s+{verb}\s+", re.IGNORECASE)


def _clean(line: str) -> str:
    line = _BULLET.sub("", line)
    line = line.replace("**", "").replace("__", "").strip()
    line = line.strip("\"'`“”‘’ ")
    return line.rstrip(".;,:!").strip()


_SENTENCE = re.compile(r"(?<=[a-z0-9)])\.\s+|\s+and\s+(?=(?:a|an|the)\s)")  # in prose lines only
_COMMA = re.compile(r"(?:,(?=\s)|,$)\s*(?:and\s+|or\s+)?")  # "1,000 spots" is no list


def _pieces(line: str, lead_in: re.Pattern) -> list[str]:
    """A line becomes its phrases: split at semicolons and commas, prose also at sentence ends and 'and a'."""
    line = _clean(line)
    prose = len(line.split()) > MAX_WORDS or len(line) > MAX_CHARS
    parts = [part for sentence in (_SENTENCE.split(line) if prose else [line]) for part in sentence.split(";")]
    return [lead_in.sub("", _clean(p)) for part in parts for p in _comma_phrases(part)]


def _comma_phrases(text: str) -> list[str]:
    """Split at commas, except after a lone adjective: "large, rounded ears" stays one phrase."""
    parts = [part.strip() for part in _COMMA.split(text)]
    phrases: list[str] = []
    for i, part in enumerate(parts):
        if phrases and phrases[-1].endswith(","):
            part = f"{phrases.pop()} {part}"
        nxt = parts[i + 1] if i + 1 < len(parts) else ""
        if _lone_adjective(part) and _content_words(nxt) > 1 and not _ARTICLE.match(nxt):
            part += ","  # "large," before "rounded ears"
        phrases.append(part)
    return phrases


_ARTICLE = re.compile(r"(?:a|an|the)\s", re.IGNORECASE)


def _lone_adjective(text: str) -> bool:
    """One content word that is not a plural noun ("whiskers"): likely an adjective before a list comma."""
    words = text.split()
    word = words[-1].casefold() if words else ""
    plural = word.endswith("s") and not word.endswith(("ss", "ous", "less"))
    return _content_words(text) == 1 and len(words) <= 2 and not plural


def _content_words(text: str) -> int:
    return len(set(re.findall(r"\w+", text.casefold())) - _FILLER)


def _restates_class(phrase: str, name: str) -> bool:
    words = set(re.findall(r"\w+", phrase.casefold())) - _FILLER
    name_words = set(re.findall(r"\w+", name.casefold()))
    plural = {w + "s" for w in name_words} | {w + "es" for w in name_words}
    return not (words - name_words - plural)


def parse_phrases(text: str, name: str) -> list[str]:
    """Short phrases from one answer: JSON if it is JSON, else a bulleted, numbered or prose list.

    Bullets and numbering are stripped; empty and overlong lines, lines that only restate the class
    name, preambles and refusals are dropped; duplicates (ignoring case) are removed.
    """
    lead_in = _lead_in(name)
    items = _json_items(text)
    lines = items if items is not None else text.splitlines()
    phrases: list[str] = []
    for line in lines:
        line = line.strip()
        if not line or _REFUSAL.search(line) or (_PREAMBLE.match(line) and line.rstrip().endswith(":")):
            continue
        if _CLOSING.match(_clean(line)):
            continue
        if ":" in line and _PREAMBLE.match(line):  # "Here are some features: a, b, c"
            line = line.split(":", 1)[1]
        for phrase in _pieces(line, lead_in):
            phrase = " ".join(phrase.split())
            if not phrase or len(phrase.split()) > MAX_WORDS or len(phrase) > MAX_CHARS:
                continue
            if not re.search(r"\w", phrase) or phrase.casefold() in _NON_ANSWERS or not is_phrase(phrase):
                continue
            if _restates_class(phrase, name):
                continue
            phrases.append(phrase)
    return merge_phrases(phrases)


_MARKUP = re.compile(r"<[^<>]*>|[<>{}\\]|&[a-z]+;|&#\d+;|\[\[|\]\]")


def is_phrase(phrase: str) -> bool:
    """Printable text of mostly letters, no markup (``<html>``, ``{{``), no replacement characters."""
    if not phrase.isprintable() or "\ufffd" in phrase or _MARKUP.search(phrase):
        return False
    letters = sum(ch.isalpha() or ch.isspace() for ch in phrase)
    return letters >= 0.6 * len(phrase)
