"""Loopback ports and host:port addresses.

A free port is one nobody listens on *now*: another process may take it
before the caller binds it. It suits what binds it at once (a test's server,
an instance spawned right after), never a promise that the port stays free.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Collection

ATTEMPTS = 20
"""How many ports the kernel is asked for before giving up on finding one not in `avoid`."""


def free_port(host: str = "127.0.0.1", *, avoid: Collection[int] = ()) -> int:
    """A TCP port on `host` that nothing listens on now, and not one of `avoid` (ports handed out but not bound yet).

    Raises OSError when the kernel has none to give, or only ones in `avoid`.
    """
    for _ in range(ATTEMPTS):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in avoid:
            return port
    raise OSError(errno.EADDRNOTAVAIL, f"no free port on {host} after {ATTEMPTS} tries")


def split_host_port(address: str, *, zero_ok: bool = False) -> tuple[str, int]:
    """'host:port' or '[v6]:port' → (host, port); ':port' means every interface (host ''). ValueError if malformed.

    `zero_ok`: port 0 (a port the kernel picks when binding) is accepted.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not (0 if zero_ok else 1) <= int(port) < 65536:
        raise ValueError(f"address {address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)
