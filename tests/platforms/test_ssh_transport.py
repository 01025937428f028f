"""The ssh platform's transport without a host: the options every call carries, the masters' socket paths,
and what an OpenSSH failure is taken for."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagewise.core.platform_spec import HostSpec, SshSpec
from stagewise.errors import HostKeyError, HostUnreachableError, PlatformRefusedError
from stagewise.platforms._ssh_transport import Connection, control_dir


def connection(target: str = "deploy@10.0.0.1:2222", **options: object) -> Connection:
    return Connection(HostSpec(target=target), SshSpec.model_validate(options), Path("/tmp/cm"))


def test_every_call_is_batch_mode_with_strict_host_keys() -> None:
    argv = connection(knownHosts="/etc/kh", identity="/etc/id", jump="bastion", config="/etc/cfg").argv()
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert "BatchMode=yes" in options and "StrictHostKeyChecking=yes" in options
    assert "PasswordAuthentication=no" in options and "KbdInteractiveAuthentication=no" in options
    assert "UserKnownHostsFile=/etc/kh" in options and "ControlPath=/tmp/cm/%C" in options
    assert argv[argv.index("-J") + 1] == "bastion" and argv[argv.index("-F") + 1] == "/etc/cfg"
    assert argv[-3:] == ["2222", "--", "deploy@10.0.0.1"], "the port apart, and the destination never an option"


@pytest.mark.parametrize("length", range(10, 120, 7))
def test_the_masters_sockets_fit_a_unix_socket_path_however_deep_the_state(length: int) -> None:
    # ssh binds `<dir>/<%C: 40 hex digits>.<16 random characters>` and renames it: 58 characters past the
    # directory, in at most 107 bytes (a Unix socket's path, with its NUL, fits in 108)
    state = Path("/") / ("d" * (length - 1))
    assert len(str(control_dir(state))) + 58 <= 107
    assert control_dir(Path("/srv/s")) == Path("/srv/s/ssh/cm")


@pytest.mark.parametrize(("stderr", "kind", "words"), [
    ("No ED25519 host key is known for 10.0.0.1 and you have requested strict checking.\n"
     "Host key verification failed.", HostKeyError, "ssh-keyscan -p 2222 10.0.0.1 >> /etc/kh"),
    ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.", HostKeyError,
     "has CHANGED"),
    ("deploy@10.0.0.1: Permission denied (publickey).", PlatformRefusedError, "login refused"),
    ("ssh: connect to host 10.0.0.1 port 2222: Connection timed out", HostUnreachableError, "unreachable"),
])
def test_openssh_failures_are_told_apart(stderr: str, kind: type[Exception], words: str) -> None:
    error = connection(knownHosts="/etc/kh").failure(stderr)
    assert type(error) is kind and words in str(error) and "deploy@10.0.0.1:2222" in str(error)
