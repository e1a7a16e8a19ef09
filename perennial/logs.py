"""Logs of every command: JSON lines where the output is not a terminal (a pod, a pipe, a file),
readable text at a terminal; ``log.format`` forces either for the logs.

Two streams, both set up here:

- **logs** (``logging``, on stderr), every logger named ``perennial.<part>`` (``perennial.learn``,
  ``perennial.serve``, ``perennial.join``, ``perennial.registry``, ``perennial.kafka``...; uvicorn's
  as ``perennial.serve.http``, see ``RENAMED``). As JSON
  (python-json-logger) each line is ``{"time", "level", "logger", "message", ...}`` with the
  traceback in ``exc_info``.
- **events** (``emit``, on stdout): what a command reports for programs to read (``pretrained``,
  ``gate``, ``evaluated``...), ``{"ts", "event", ...fields}`` as JSON; at a terminal, one readable
  line. Programs read them, so they follow the terminal only, whatever ``log.format`` says.

>>> import io
>>> out = io.StringIO()
>>> emit("gate", {"round": 3, "passed": True, "stream": "any field name"}, stream=out, json_lines=False)
>>> out.getvalue().split(" ", 1)[1]
'gate round=3 passed=True stream=any field name\\n'
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

NOISY = ("httpx", "kafka", "matplotlib")
"""Libraries whose INFO lines are noise in a service's log."""

RENAMED = {"uvicorn.access": "perennial.serve.access", "uvicorn": "perennial.serve.http"}
"""Loggers of libraries that speak for a perennial command, under the command's name (the first
matching prefix wins): uvicorn's ``uvicorn.error`` (invalid requests, "Exception in ASGI
application") is the server's HTTP layer."""


def _rename(record: logging.LogRecord) -> bool:
    for prefix, name in RENAMED.items():
        if record.name == prefix or record.name.startswith(prefix + "."):
            record.name = name
            break
    return True

def use_json(setting: str, stream: TextIO) -> bool:
    """JSON unless ``setting`` is "text", or "auto" and ``stream`` is a terminal."""
    if setting == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (isatty and isatty())
    return setting == "json"


def configure(fmt: str = "auto", level: str = "INFO") -> None:
    """Set up the root logger on stderr, once per process (again replaces)."""
    handler = logging.StreamHandler(sys.stderr)
    if use_json(fmt, sys.stderr):
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                                           json_ensure_ascii=False))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_rename)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


def emit(kind: str, fields: dict[str, Any], *, stream: TextIO | None = None, json_lines: bool | None = None) -> None:
    """One event on stdout: a JSON line, or a readable line at a terminal. (``fields`` is a dict, not
    keywords: an event may have a field of any name, ``stream`` included.)"""
    out = stream or sys.stdout
    as_json = json_lines if json_lines is not None else use_json("auto", out)
    if as_json:
        out.write(orjson.dumps({"ts": round(time.time(), 3), "event": kind, **fields}, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
    else:
        text = " ".join(f"{k}={_short(v)}" for k, v in fields.items())
        out.write(f"{time.strftime('%H:%M:%S')} {kind} {text}".rstrip() + "\n")
    out.flush()


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode() \
        if isinstance(value, (dict, list, tuple)) else str(value)
    return text if len(text) <= 200 else text[:197] + "..."
