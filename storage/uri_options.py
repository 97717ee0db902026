"""The fsspec options each URI of a job gets: S3 calls bounded in time and attempts, the
command line's --storage-options / --s3-endpoint / --s3-profile, never a secret from the
command line. Options rule: fsspec options apply to URIs only; a local path gets none
(`options_for`). Each URI of a job (SRC, DST, --rtm, --checkpoint) gets them from the same
command line (`cli_options`), so an `--rtm s3://...` with a local SRC still gets the endpoint."""
from __future__ import annotations

import json

# Every S3 call is bounded: botocore waits at most S3_CONNECT_TIMEOUT seconds per connection
# attempt and makes at most S3_ATTEMPTS attempts (its "standard" retry mode: dropped
# connections, timeouts, throttling, with backoff); s3fs adds no retries of its own on top.
# A run checks each bucket with one call first, so a wrong endpoint costs at most
# S3_ATTEMPTS x S3_CONNECT_TIMEOUT seconds (about 15 s; a refused connection, under 2 s).
S3_CONNECT_TIMEOUT = 5
S3_READ_TIMEOUT = 60
S3_ATTEMPTS = 3

# fsspec option names that carry secrets: refused on the command line, never logged
SECRET_OPTIONS = {"key", "secret", "token", "password", "username", "aws_access_key_id",
                  "aws_secret_access_key", "aws_session_token"}


def s3_options(options: dict) -> dict:
    """fsspec options for S3 with this job's bounded timeouts and retries filled in (the
    caller's own `config_kwargs` win)."""
    out = dict(options)
    cfg = dict(out.get("config_kwargs") or {})
    cfg.setdefault("connect_timeout", S3_CONNECT_TIMEOUT)
    cfg.setdefault("read_timeout", S3_READ_TIMEOUT)
    cfg.setdefault("retries", {"total_max_attempts": S3_ATTEMPTS, "mode": "standard"})
    out["config_kwargs"] = cfg
    return out


def parse_storage_options(text: str) -> dict:
    """--storage-options JSON: a JSON object without secrets (credentials come from the
    environment or a profile, never from the command line, where `ps` and shell history see
    them)."""
    try:
        opts = json.loads(text)
    except ValueError as e:
        raise ValueError(f"--storage-options is not JSON: {e}") from None
    if not isinstance(opts, dict):
        raise ValueError("--storage-options must be a JSON object")
    secret = sorted(k for k in opts if k.lower() in SECRET_OPTIONS)
    if secret:
        raise ValueError(f"--storage-options must not carry credentials ({', '.join(secret)}): "
                         "use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or --s3-profile")
    return opts


def options_for(uri: str, options: dict) -> dict:
    """The fsspec options a URI gets: all of them for a URI, none for a local path."""
    return dict(options) if "://" in uri else {}


def cli_options(storage_options: dict | None = None, s3_endpoint: str | None = None,
                s3_profile: str | None = None) -> dict:
    """fsspec options from the command line's --storage-options, --s3-endpoint, --s3-profile."""
    so = dict(storage_options or {})
    if s3_endpoint:
        so.setdefault("client_kwargs", {})["endpoint_url"] = s3_endpoint
    if s3_profile:
        so["profile"] = s3_profile
    return so
