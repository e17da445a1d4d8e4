"""Logging for the service: text or JSON lines on stderr, with secrets scrubbed."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone

# Things that look like credentials never reach the log, whatever code logged them.
_SECRET_PATTERNS = (
    re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]+"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    re.compile(r"(?i)(secret_access_key|password|session_token|aws_secret_access_key)(['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+"),
)


def scrub(text: str) -> str:
    """Replace anything that looks like a secret with ``***``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) + m.group(2) + "***") if m.lastindex else "***", text)
    return text


class _ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (scrubbed), exception."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        if record.exc_info:
            data["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(data, sort_keys=True)


def setup_logging(fmt: str, verbose: bool = False) -> None:
    """Configure the root logger for the service (replacing earlier handlers)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_ScrubbingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("apscheduler", "botocore", "urllib3", "boto3", "docker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
