"""`stagewise server --print-systemd-unit`: a hardened systemd unit that runs the server as a service.

Why each setting is what it is, the unit says itself in its comments, since
the admin who installs it reads the unit, not this module. The choices that
follow from stagewise's design rather than from habit:

- `KillMode=process`: the routers and instances the server starts run in the
  unit's control group but outlive the controller by design (a controller
  restart drops no request), so stopping or restarting the unit ends the
  server only;
- a named system user rather than `DynamicUser=`: a dynamic user id is
  released when the unit stops and may be handed to another unit while the
  data plane still runs under it; for the same reason no `PrivateTmp=` or
  `RemoveIPC=` (their files and IPC objects go when the unit stops);
- `OOMPolicy=continue`: an instance killed for memory is the platform's to
  report, not a reason to stop the controller;
- `CAP_NET_BIND_SERVICE`, and only it, when a router or the server must
  listen below port 1024 (`--low-ports`, or a `--listen` port below 1024).

Pure: it renders text from its arguments, and touches nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

STATE_ROOT = PurePosixPath("/var/lib")
"""Where systemd's `StateDirectory=` lives (`%S`)."""
DEFAULT_SETTINGS = "%E/stagewise/server.toml"
"""The settings file in the unit: /etc/stagewise/server.toml, in the unit's `ConfigurationDirectory=`."""

_HEADER = """\
# {name}.service: stagewise server, the controller of progressive deliveries (API, dashboard, reconcile loop).
# Written by `stagewise server --print-systemd-unit`; check it with `systemd-analyze verify`.
#
# Install:
#   useradd --system --user-group --home-dir {home} --shell /usr/sbin/nologin {user}
#   stagewise server --print-systemd-unit > /etc/systemd/system/{name}.service
#   systemctl daemon-reload && systemctl enable --now {name}
# Settings: {settings_shown} (TOML: log-level, log-format, tick, listen); `systemctl reload {name}`
# re-reads log-level, log-format and tick. The CLI on this host: stagewise status --state {state_shown}
# (members of group {user} may read; mutating verbs need the token: sudo -u {user} stagewise ...).
"""

_BODY = """\
[Unit]
Description=stagewise progressive delivery controller
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
User={user}
Group={user}
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2s
TimeoutStopSec=30s
# Routers and instances outlive the controller by design (a controller restart drops no request):
# stop and restart end the server only. `stagewise delete SERVICE` ends a service's processes.
KillMode=process
# An instance killed for its memory is the platform's to report, not a reason to stop the controller.
OOMPolicy=continue
Environment=PYTHONUNBUFFERED=1
{state_lines}
ConfigurationDirectory=stagewise
UMask=0027
# Every router proxies many connections; the limit is inherited by routers and instances.
LimitNOFILE=65536

# Hardening. Routers and instances are started by the server and live under all of it too.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateMounts=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
{capability_lines}
# Left out on purpose: DynamicUser=, PrivateTmp= and RemoveIPC= tie the user id, temporary files and IPC
# objects to one run of the unit, and the data plane outlives it; MemoryDenyWriteExecute= would break the
# JIT of many release programs (Java, Node.js). Relax or add settings with `systemctl edit {name}`.

[Install]
WantedBy=multi-user.target
"""


def systemd_quote(arg: str) -> str:
    """`arg` as one word of an `ExecStart=` line: `%` and `$` taken literally, quoted if it needs to be.

    Words meant as specifiers (`%S/stagewise`) are made by the caller, around a quoted part.
    """
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _state(state: Path) -> tuple[str, str]:
    """The state directory's word on the command line, and the unit's lines that make it writable."""
    path = PurePosixPath(state)
    if not path.is_absolute():
        path = STATE_ROOT / "stagewise"
    if path.is_relative_to(STATE_ROOT) and path != STATE_ROOT:
        relative = path.relative_to(STATE_ROOT)
        return f"%S/{systemd_quote(str(relative))}", (
            f"StateDirectory={systemd_quote(str(relative))}\nStateDirectoryMode=0750\n"
            f"WorkingDirectory=%S/{systemd_quote(str(relative))}")
    word = systemd_quote(str(path))
    return word, (f"# {path} must exist and belong to the service's user: systemd creates only /var/lib/...\n"
                  f"ReadWritePaths={word}\nWorkingDirectory={word}")


def _capabilities(low_ports: bool) -> str:
    if not low_ports:
        return "CapabilityBoundingSet=\nAmbientCapabilities="
    return ("# Routers (and the server) may listen below port 1024; instances inherit this one capability.\n"
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\nAmbientCapabilities=CAP_NET_BIND_SERVICE")


def systemd_unit(*, command: Sequence[str], state: Path, listen: str, settings: str | None = None,
                 user: str = "stagewise", low_ports: bool = False, extra_args: Sequence[str] = (),
                 name: str = "stagewise") -> str:
    """The unit that runs `command server ...` (the stagewise program) as `user`.

    `state`: the state directory (a relative one, as by default, becomes /var/lib/stagewise); `settings`: the
    settings file (default /etc/stagewise/server.toml); `low_ports`: routers may listen below 1024 (also
    granted when the server's `listen` is such a port); `extra_args`: more options of `stagewise server`.
    """
    state_word, state_lines = _state(state)
    settings_word = systemd_quote(settings) if settings is not None else DEFAULT_SETTINGS
    port = int(listen.rsplit(":", 1)[1])
    words = [*(systemd_quote(c) for c in command), "server", "--state", state_word, "--settings", settings_word,
             *(systemd_quote(a) for a in extra_args)]
    shown_state = state_word.replace("%S", str(STATE_ROOT))
    header = _HEADER.format(name=name, user=user, home=shown_state,
                            settings_shown=settings_word.replace("%E", "/etc").replace("%%", "%"),
                            state_shown=shown_state.replace("%%", "%"))
    return header + "\n" + _BODY.format(
        name=name, user=user, exec_start=" ".join(words), state_lines=state_lines,
        capability_lines=_capabilities(low_ports or 0 < port < 1024))
