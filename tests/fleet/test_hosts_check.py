"""`stagewise hosts check` and the README's spec: the spec loads as written, and with the fleet's hosts in
place of the README's it passes every check; a host whose key is unknown fails, by name."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from stagewise.cli import demo_hosts
from stagewise.spec import load_specs
from stagewise.strategies import compile_plan
from stagewise.testing.hosts import Fleet
from tests.fleet.conftest import need_hosts

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

README = Path(__file__).parents[2] / "README.md"


def readme_spec() -> str:
    text = README.read_text()
    section = text[text.index("## Deliver to hosts"):]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_spec_loads_and_its_waves_count_hosts(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(readme_spec())
    (spec,) = load_specs(path)
    platform = spec.spec.platform
    assert platform.kind == "ssh" and len(platform.hosts) == 4 and spec.spec.replicas == 8
    assert platform.hosts[3].address == "10.0.1.14"
    plan = compile_plan(spec, spec.spec.release.model_copy(update={"version": "v1"}))
    assert plan.steps[0].title.startswith("wave 1/3: v2 on 1/4 host(s)")


def fleet_spec(fleet: Fleet, tmp_path: Path, known_hosts: Path) -> Path:
    doc = yaml.safe_load(readme_spec())
    doc["spec"]["platform"]["hosts"] = [h.target for h in fleet.hosts]
    doc["spec"]["platform"]["ssh"] = {"identity": str(fleet.identity), "knownHosts": str(known_hosts),
                                      "connectTimeout": "2s"}
    artifact = tmp_path / "shop-v2"
    artifact.mkdir()
    (artifact / "app.py").write_text("print('hello')\n")
    doc["spec"]["release"]["artifact"] = str(artifact)
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def hosts_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stagewise", "hosts", "check", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_hosts_check_passes_on_the_fleet_and_fails_a_host_with_an_unknown_key(fleet: Fleet, tmp_path: Path) -> None:
    good = hosts_check(fleet_spec(fleet, tmp_path, fleet.known_hosts))
    assert good.returncode == 0, good.stdout + good.stderr
    assert all(h.target in good.stdout for h in fleet.hosts) and "FAIL" not in good.stdout
    strange = fleet.hosts[0]
    partial = tmp_path / "known_hosts"
    partial.write_text("".join(line + "\n" for line in fleet.known_hosts.read_text().splitlines()
                               if not line.startswith(strange.address + " ")))
    (tmp_path / "bad").mkdir()
    bad = hosts_check(fleet_spec(fleet, tmp_path / "bad", partial))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"{strange.target}: host key:" in bad.stdout and "ssh-keyscan" in bad.stdout, bad.stdout
    assert "password" not in (bad.stdout + bad.stderr).lower()


def test_demo_with_hosts_says_it_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_hosts, "unavailable_reason", lambda: "namespace hosts need root (ip netns, useradd, sshd)")
    out = io.StringIO()
    assert demo_hosts.run_hosts_demo(count=4, as_json=False, console=Console(file=out), router="builtin") == 2
    assert "need root" in out.getvalue()


async def test_an_ssh_config_alias_is_reached_and_routed_to_as_openssh_reads_it(fleet: Fleet, tmp_path: Path) -> None:
    from stagewise.core.spec import PlatformSpec, ReleaseSpec
    from stagewise.platforms.ssh import SshPlatform

    host = fleet.hosts[0]
    config = tmp_path / "ssh_config"
    config.write_text(f"Host web1\n  HostName {host.address}\n  User {host.user}\n"
                      f"  IdentityFile {fleet.identity}\n  UserKnownHostsFile {fleet.known_hosts}\n")
    spec = PlatformSpec.model_validate({"kind": "ssh", "hosts": ["web1"], "root": "~/.alias-test",
                                        "ssh": {"config": str(config), "connectTimeout": "2s"}})
    release = ReleaseSpec.model_validate({"version": "v1", "run": {"command": ["sleep", "30"]}})
    platform = SshPlatform(tmp_path / "state", spec)
    try:
        assert await platform.preflight(service="alias", release=release) == []
        (started,) = await platform.start(service="alias", release=release, count=1)
        assert started.host == "web1" and started.address.startswith(host.address + ":")
        view = await platform.observe(service="alias", releases={"v1": release})
        assert [i.id for i in view.instances] == [started.id]
        await platform.stop(service="alias", ids=[started.id], grace=1)
    finally:
        await platform.close()


def test_a_fleet_left_by_a_killed_run_is_swept_by_the_next(tmp_path: Path) -> None:
    need_hosts()
    script = ("import sys, time; from stagewise.testing.hosts import Fleet; f = Fleet(1); f.create(); "
              "print(f.prefix, flush=True); time.sleep(60)")
    crashed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert crashed.stdout is not None
    prefix = crashed.stdout.readline().strip()
    crashed.kill()
    crashed.wait(10)
    crashed.stdout.close()
    assert f"{prefix}-h1" in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    with Fleet(1):
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"{prefix}-h1" not in left, "the killed run's namespace is still there"
        assert subprocess.run(["id", f"{prefix}h1"], capture_output=True).returncode != 0, "its user is still there"
