"""Small reads and writes in the data lake (s3:// on AWS, file:// locally): manifests and run metadata."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from platform_settings import PlatformSettings


def write_text(settings: PlatformSettings, uri: str, text: str) -> None:
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        from hooks.backend import aws_client

        aws_client(settings, "s3").put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=text.encode())
    elif parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)  # readers never see half a file
    else:
        raise ValueError(f"unsupported lake URI {uri!r}: use s3:// or file://")
