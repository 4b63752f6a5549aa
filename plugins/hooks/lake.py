"""Small reads and writes in the data lake (s3:// on AWS, file:// locally): manifests and run metadata."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from genomics_steps.names import check_uri

from hooks import aws_clients
from platform_settings import PlatformSettings


def write_text(settings: PlatformSettings, uri: str, text: str) -> None:
    parsed = urlparse(check_uri("lake URI", uri))
    if parsed.scheme == "s3":
        aws_clients.aws_client(settings, "s3").put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"),
                                                          Body=text.encode())
    elif parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)  # readers never see half a file
    else:
        raise ValueError(f"unsupported lake URI {uri!r}: use s3:// or file://")


def read_head(settings: PlatformSettings, uri: str, max_bytes: int = 65536) -> bytes:
    """The first ``max_bytes`` of a file (a header line), without reading the rest; FileNotFoundError if absent."""
    parsed = urlparse(check_uri("lake URI", uri))
    if parsed.scheme == "s3":
        try:
            obj = aws_clients.aws_client(settings, "s3").get_object(
                Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Range=f"bytes=0-{max_bytes - 1}")
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(uri) from None
            raise
        return obj["Body"].read()
    if parsed.scheme == "file":
        with open(unquote(parsed.path), "rb") as fh:
            return fh.read(max_bytes)
    raise ValueError(f"unsupported lake URI {uri!r}: use s3:// or file://")


def list_files(settings: PlatformSettings, prefix_uri: str) -> list[str]:
    """Paths (relative to ``prefix_uri``) of every file under a prefix: one paginated listing, no per-file checks.

    Names starting with ``.`` or ``_`` are left out, as Athena leaves them out of a table.
    """
    prefix_uri = prefix_uri.rstrip("/") + "/"
    parsed = urlparse(check_uri("lake prefix", prefix_uri))
    out: list[str] = []
    if parsed.scheme == "s3":
        paginator = aws_clients.aws_client(settings, "s3").get_paginator("list_objects_v2")
        key_prefix = parsed.path.lstrip("/")
        for page in paginator.paginate(Bucket=parsed.netloc, Prefix=key_prefix):
            out.extend(obj["Key"][len(key_prefix):] for obj in page.get("Contents", []))
    elif parsed.scheme == "file":
        root = Path(unquote(parsed.path))
        if root.is_dir():
            out.extend(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    else:
        raise ValueError(f"unsupported lake URI {prefix_uri!r}: use s3:// or file://")
    return sorted(p for p in out if not any(part.startswith((".", "_")) for part in p.split("/")))


def delete_prefix(settings: PlatformSettings, prefix_uri: str) -> int:
    """Delete every object under a prefix (a dropped table's data); returns how many were deleted."""
    prefix_uri = prefix_uri.rstrip("/") + "/"
    parsed = urlparse(check_uri("lake prefix", prefix_uri))
    if parsed.scheme == "s3":
        s3 = aws_clients.aws_client(settings, "s3")
        key_prefix = parsed.path.lstrip("/")
        deleted = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=parsed.netloc, Prefix=key_prefix):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:  # a listing page holds at most 1,000 keys, as many as DeleteObjects takes
                s3.delete_objects(Bucket=parsed.netloc, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
        return deleted
    if parsed.scheme == "file":
        import shutil

        root = Path(unquote(parsed.path))
        if not root.exists():
            return 0
        count = sum(1 for p in root.rglob("*") if p.is_file())
        shutil.rmtree(root)
        return count
    raise ValueError(f"unsupported lake URI {prefix_uri!r}: use s3:// or file://")
