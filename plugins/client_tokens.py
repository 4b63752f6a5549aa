"""Idempotency tokens for AWS requests that take one (Athena's and FSx's ClientRequestToken): the same request
parts always give the same token, so a retried call is recognised as the one already made."""

from __future__ import annotations

import hashlib
import json
from typing import Any

ATHENA_TOKEN_LENGTH = 64  # Athena: 32 to 128 characters
FSX_TOKEN_LENGTH = 48  # FSx: at most 63 characters


def client_token(*parts: Any, length: int = ATHENA_TOKEN_LENGTH) -> str:
    """A hex token fixed by ``parts`` (anything JSON can write, others by their str())."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:length]
