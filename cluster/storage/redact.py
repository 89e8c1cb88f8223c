"""One redactor for every text qtrust shows or stores: secrets inside URIs are masked, the rest stays readable.

:func:`redact` takes free text (an error message, a command line, a stored spec, a single URI) and
masks, in every ``scheme://`` URI it holds:

* the password of the user-info: ``http://user:pw@host`` -> ``http://user:***@host``
  (``redis://:pw@host`` -> ``redis://:***@host``);
* a lone name before ``@``, which is a token: ``https://ghp_abc@host`` -> ``https://***@host``;
* the value of every query (or fragment) parameter whose name looks like a secret: it holds
  ``token``, ``key``, ``secret``, ``password``, ``passwd``, ``pwd``, ``sig``/``signature``,
  ``auth``, ``credential`` or ``session`` (:data:`SECRET_WORDS`: ``api_key``, ``access_token``,
  ``X-Amz-Signature``, ``X-Amz-Credential``, ``sas_token``, ``client_secret``...):
  ``?api_key=abc&x=1`` -> ``?api_key=***&x=1`` (except the names in :data:`NOT_SECRET`).

Everything else (scheme, host, port, path, other parameters, the surrounding text) is kept as it
was, byte for byte. Redacting twice changes nothing. Over-masking is preferred to a leak: a name
that merely contains ``key`` (``?monkey=1``) is masked too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

#: What replaces a secret: ``http://user:***@host``, ``?token=***``.
MASK = "***"

#: Words that make a query parameter name secret-looking wherever they appear in it (case-insensitive):
#: ``api_key``, ``access_token``, ``X-Amz-Signature``, ``X-Amz-Credential``, ``sas_token``, ``client_secret``,
#: ``sig``, ``jsessionid``...
SECRET_WORDS = ("token", "key", "secret", "password", "passwd", "pwd", "sig", "auth", "credential", "session")
#: Parameter names that hold such a word but no secret, kept readable (and allowed in storage locations):
#: ``session_name`` names the session of an S3 assume-role (``?role_arn=...&session_name=...``);
#: ``viewStateShareKey`` names a shared view of the MLflow UI (the URL qtrust prints to open a sweep's runs).
NOT_SECRET = frozenset({"session_name", "viewStateShareKey"})

#: ``scheme://userinfo@``; the user-info runs to the last ``@`` before the path, query, fragment or a space.
USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)([^/?#\s]*)@")
_WORDS = "|".join(re.escape(word) for word in SECRET_WORDS)
_KEPT = "|".join(re.escape(name) for name in sorted(NOT_SECRET))
#: Where a parameter's value ends: at ``&``, ``#``, a space, a quote or the end, less prose punctuation before it
#: (``?token=abc, then`` keeps its comma).
_END = r"""[,.;:!?)\]>]*(?:[&#\s'"]|$)"""
#: ``name=value`` after ``?``, ``&``, ``;`` or ``#`` whose name looks like a secret; group 1 keeps ``?name=``.
_SECRET_PARAM = re.compile(
    rf"([?&;#](?!(?:{_KEPT})=)[\w.-]*?(?:{_WORDS})[\w.-]*=)([^&#\s'\"]+?)(?={_END})",
    re.IGNORECASE,
)


def _mask_userinfo(found: re.Match[str]) -> str:
    user, colon, _secret = found.group(2).partition(":")
    kept = f"{user}:{MASK}" if colon else MASK  # a lone name before "@" is a token (https://TOKEN@host)
    return f"{found.group(1)}{kept}@"


def redact(text: str | Path) -> str:
    """``text`` with the secrets of every URI in it masked (see the module docstring); ``str(text)`` otherwise."""
    value = str(text)
    if "@" not in value and "=" not in value:  # nothing that could hold a secret: the common case, kept cheap
        return value
    return _SECRET_PARAM.sub(rf"\1{MASK}", USERINFO.sub(_mask_userinfo, value))


def redact_data(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, tuples, strings, numbers) with :func:`redact` applied to every string
    in it, keys included; other values are returned as they are. Used where structured data is stored (the
    manifest) rather than text, so an escaping serializer (``\\/`` in JSON) never hides a URI from the redactor."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_data(key): redact_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item) for item in value]  # a tuple becomes a list, as JSON writes it
    return value


def is_secret_param(name: str) -> bool:
    """Whether a query parameter called ``name`` looks like it carries a secret (its value is masked)."""
    lowered = name.lower()
    return lowered not in NOT_SECRET and any(word in lowered for word in SECRET_WORDS)


def strip_userinfo(text: str) -> str:
    """``text`` with the user-info of every URI removed (``http://u:p@host`` -> ``http://host``)."""
    return USERINFO.sub(r"\1", text)


def is_redacted(text: str) -> bool:
    """True when ``text`` is a redacted copy: a secret in it was replaced by :data:`MASK`."""
    return MASK in text and MASK in redact(text.replace(MASK, "x"))
