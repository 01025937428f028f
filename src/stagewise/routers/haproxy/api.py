"""HAProxy's Runtime API over its admin socket: commands in, text out, errors translated.

The Runtime API (the "stats socket" of `level admin`, and the master CLI of a
master-worker HAProxy) speaks lines of text. A batch of commands shares one
connection in interactive mode (`prompt`), so applying a route table costs one
connect however many servers and map entries it touches. Every failure —
socket gone, timeout, an answer that is an error message — becomes a
`RouterError`, so the driver above never sees an `OSError`.

This module knows the protocol, not stagewise's route tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stagewise.errors import HaproxyCommandError, RouterError

TIMEOUT = 5.0
"""Seconds one batch of commands may take."""
_PROMPT = b"\n> "
_FAILURES = (
    "unknown command",
    "no such",
    "unknown",
    "require",
    "invalid",
    "failed",
    "cannot",
    "not found",
    "error",
    "expects",
    "permission denied",
    "already exists",
    "is not",
    "unable",
    "must be",
    "only supported",
)


@dataclass(frozen=True)
class ServerStat:
    """One server row of `show stat`: what a backend's server has served, and serves now."""

    backend: str
    name: str
    status: str
    """UP, DOWN, MAINT, DRAIN, NOLB, ..."""
    current: int
    """Sessions now, plus requests queued for the server."""
    responses: int
    """hrsp_1xx..hrsp_5xx plus hrsp_other: responses that left the server (req_tot is not per server)."""
    errors: int
    """hrsp_5xx: the server's 5xx and the 502/503/504 HAProxy answered on its behalf."""
    weight: int
    address: str


class RuntimeApi:
    """Talks to one HAProxy socket (a worker's admin socket, or the master CLI)."""

    def __init__(self, path: Path, *, timeout: float = TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    async def run(self, commands: Iterable[str], *, check: bool = True) -> list[str]:
        """Send `commands` in order on one connection; their answers. An error answer raises (check)."""
        commands = list(commands)
        if not commands:
            return []
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_unix_connection(str(self.path), limit=16 * 1024 * 1024)
                try:
                    writer.write(b"prompt\n")
                    await reader.readuntil(b"> ")
                    answers = []
                    for command in commands:
                        writer.write(command.encode() + b"\n")
                        await writer.drain()
                        data = await reader.readuntil(_PROMPT)
                        answers.append(data[: -len(_PROMPT)].decode(errors="replace").strip("\n"))
                    writer.write(b"quit\n")
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            raise RouterError(f"HAProxy at {self.path} did not answer: {exc!r}", delay=1.0) from exc
        if check:
            for command, answer in zip(commands, answers, strict=True):
                if is_failure(answer):
                    raise HaproxyCommandError(f"HAProxy refused {command!r}: {answer.strip()}", delay=5.0)
        return answers

    async def one(self, command: str, *, check: bool = True) -> str:
        return (await self.run([command], check=check))[0]

    async def info(self) -> dict[str, str]:
        """`show info` as a dict (Pid, Start_time_sec, Uptime_sec, ...)."""
        text = await self.one("show info", check=False)
        out: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        if "Pid" not in out:
            raise RouterError(f"HAProxy at {self.path} answered show info with {text[:200]!r}")
        return out

    async def servers(self) -> list[ServerStat]:
        """Every server of every backend, from `show stat`."""
        text = await self.one("show stat", check=False)
        if not text.startswith("# "):
            raise RouterError(f"HAProxy at {self.path} answered show stat with {text[:200]!r}")
        rows = csv.DictReader(io.StringIO(text[2:]))
        out = []
        for row in rows:
            name = row.get("svname") or ""
            if name in ("FRONTEND", "BACKEND") or not name:
                continue
            responses = sum(_int(row.get(f"hrsp_{k}")) for k in ("1xx", "2xx", "3xx", "4xx", "5xx", "other"))
            out.append(ServerStat(
                backend=row.get("pxname") or "",
                name=name,
                status=(row.get("status") or "").split(" ")[0],
                current=_int(row.get("scur")) + _int(row.get("qcur")),
                responses=responses,
                errors=_int(row.get("hrsp_5xx")),
                weight=_int(row.get("weight")),
                address=row.get("addr") or "",
            ))
        return out

    async def map_entries(self, map_path: str) -> dict[str, str]:
        """The visible entries of a map (key → value)."""
        text = await self.one(f"show map {map_path}", check=False)
        out = {}
        for line in text.splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3:
                out[parts[1]] = parts[2]
        return out

    async def replace_map(self, map_path: str, entries: dict[str, str]) -> None:
        """Replace a map's entries atomically: prepare a version, fill it, commit it."""
        answer = await self.one(f"prepare map {map_path}")
        version = answer.rsplit(":", 1)[-1].strip()
        if not version.isdigit():
            raise HaproxyCommandError(f"HAProxy answered prepare map {map_path} with {answer!r}", delay=5.0)
        commands = [f"add map @{version} {map_path} {key} {value}" for key, value in entries.items()]
        commands.append(f"commit map @{version} {map_path}")
        await self.run(commands)


def is_failure(answer: str) -> bool:
    """Whether a command's answer is an error message (success is silent or says so)."""
    text = answer.strip().lower()
    if not text or text.startswith(("new server registered", "done", "new version created", "server deleted")):
        return False
    return any(word in text for word in _FAILURES)


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
