"""A pod template → a stagewise release: version, `run` and `readiness`.

A container names an image; stagewise runs a program on a host. The image's
tag becomes the release's version; the container's `command` and `args` become
`run.command` when the pod says them (with `$(VAR)` expanded as Kubernetes
does, and a variable holding the container's port read as `{port}`, the port
stagewise gives each instance). When the pod only names an image there is no
host command to derive: the spec gets a placeholder that says so and cannot be
mistaken for a program. Probes become readiness: `httpGet.path` → `http`,
`tcpSocket` → `tcp`, a `startupProbe`'s patience → `timeout`.

Pure: reads the documents it is given.
"""

from __future__ import annotations

from typing import Any

from stagewise.convert.kube import expand, image_version
from stagewise.convert.ledger import Ledger
from stagewise.core.durations import format_duration
from stagewise.spec.yamltree import Path

PLACEHOLDER_VERSION = "REPLACE-ME"
KUBE_ONLY = "Kubernetes-only: stagewise runs programs on hosts, without pods"
PORT_VARIABLE = "STAGEWISE_PORT"
"""The variable `--to argo` defines for `{port}` when the release's own env has none holding it."""


def placeholder_command(image: str | None) -> list[str]:
    what = f"image {image}" if image else "this service"
    return [f"REPLACE-ME: the command that runs {what} on a host, listening on port {{port}}"]


def release_from_pod(led: Ledger, pod: Path) -> dict[str, Any]:
    """The release of the pod template at `pod` (its metadata and spec): the first container is the service."""
    containers = led.get((*pod, "spec", "containers"))
    led.mapped((*pod, "spec", "containers"))
    if led.get((*pod, "metadata")) is not None:
        led.dropped((*pod, "metadata"), "Kubernetes-only: labels and annotations of pods")
    spec = led.get((*pod, "spec"))
    for key in spec if isinstance(spec, dict) else ():
        if key != "containers":
            led.dropped((*pod, "spec", key), KUBE_ONLY)
    if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
        led.dropped((*pod, "spec", "containers"), "no container: the release runs a placeholder command")
        return {"version": PLACEHOLDER_VERSION, "run": {"command": placeholder_command(None)}}
    for i in range(1, len(containers)):
        led.dropped((*pod, "spec", "containers", i), "a second container (a sidecar) does not run: "
                                                       "a stagewise release is one program per instance")
    return release_from_container(led, (*pod, "spec", "containers", 0))


def release_from_container(led: Ledger, at: Path) -> dict[str, Any]:
    c: dict[str, Any] = led.get(at)
    image = c.get("image") if isinstance(c.get("image"), str) else None
    version = image_version(image) if image else None
    if version is None:
        version = PLACEHOLDER_VERSION
        led.dropped((*at, "image"), f"no version can be read from image {image!r} (no tag): "
                                    "the release's version is a placeholder")
    else:
        led.mapped((*at, "image"))
        led.caveat((*at, "image"), f"the tag is the release's version ({version}); stagewise runs a program on a "
                                   "host, not the image")
    led.mapped((*at, "name"))
    port = _container_port(led, at)
    variables = _env_values(c)
    port_names = {name for name, value in variables.items() if port is not None and value == str(port)}
    resolve = {name: "{port}" for name in port_names}
    run: dict[str, Any] = {}
    argv = [expand(str(a), resolve) for key in ("command", "args") for a in (c.get(key) or [])]
    if argv:
        run["command"] = argv
        led.mapped((*at, "command"), (*at, "args"))
    else:
        run["command"] = placeholder_command(image)
        led.caveat(at, "the pod runs its image's own entrypoint, which no host command can be derived from: "
                       "run.command is a placeholder to replace")
    env = _env(led, at, c, resolve, port_names)
    if env:
        run["env"] = env
    release: dict[str, Any] = {"version": version, "run": run}
    readiness = _readiness(led, at, c)
    if readiness:
        release["readiness"] = readiness
    for key in c:
        if key not in ("name", "image", "command", "args", "ports", "env", "readinessProbe", "startupProbe"):
            led.dropped((*at, key), KUBE_ONLY)
    return release


def _container_port(led: Ledger, at: Path) -> int | None:
    ports = led.get((*at, "ports"))
    if not isinstance(ports, list) or not ports:
        return None
    led.mapped((*at, "ports"))
    led.caveat((*at, "ports"), "stagewise gives each instance its own port, {port}; the container's port is "
                               "how the pod's command names it")
    first = ports[0]
    port = first.get("containerPort") if isinstance(first, dict) else None
    return port if isinstance(port, int) and not isinstance(port, bool) else None


def _env_values(c: dict[str, Any]) -> dict[str, str]:
    env = c.get("env")
    return {e["name"]: str(e["value"]) for e in env if isinstance(e, dict) and "name" in e and "value" in e} \
        if isinstance(env, list) else {}


def _env(led: Ledger, at: Path, c: dict[str, Any], resolve: dict[str, str], port_names: set[str]) -> dict[str, str]:
    env = c.get("env")
    out: dict[str, str] = {}
    if not isinstance(env, list):
        return out
    for i, item in enumerate(env):
        if not isinstance(item, dict) or "name" not in item:
            led.dropped((*at, "env", i), "expected {name, value}")
            continue
        name = str(item["name"])
        if "value" not in item:
            led.dropped((*at, "env", i), "a value from Kubernetes (a secret, a config map, a field) is not known "
                                         "outside the cluster: give the value in run.env")
            continue
        led.mapped((*at, "env", i))
        if name == PORT_VARIABLE and name in port_names:
            continue  # written by `--to argo` only to carry {port}
        out[name] = "{port}" if name in port_names else expand(str(item["value"]), resolve)
    return out


def _readiness(led: Ledger, at: Path, c: dict[str, Any]) -> dict[str, Any]:
    readiness: dict[str, Any] = {}
    probe = c.get("readinessProbe")
    if isinstance(probe, dict):
        p: Path = (*at, "readinessProbe")
        if isinstance(probe.get("httpGet"), dict) and isinstance(probe["httpGet"].get("path"), str):
            readiness["http"] = probe["httpGet"]["path"]
            led.mapped((*p, "httpGet"))
        elif isinstance(probe.get("tcpSocket"), dict):
            readiness["tcp"] = True
            led.mapped((*p, "tcpSocket"))
        for key in probe:
            if key not in ("httpGet", "tcpSocket"):
                led.dropped((*p, key), "stagewise probes an instance until it is ready, then the router's counts "
                                       "watch it; a probe's schedule has no field here")
    startup = c.get("startupProbe")
    if isinstance(startup, dict):
        s: Path = (*at, "startupProbe")
        period, threshold = startup.get("periodSeconds", 10), startup.get("failureThreshold", 3)
        if isinstance(period, int) and isinstance(threshold, int) and period > 0 and threshold > 0:
            readiness["timeout"] = format_duration(period * threshold)
            led.mapped(s)
            led.caveat(s, "an instance not started within periodSeconds × failureThreshold has failed: "
                          "readiness.timeout")
        else:
            led.dropped(s, "expected whole periodSeconds and failureThreshold")
    return readiness


__all__ = ["KUBE_ONLY", "PLACEHOLDER_VERSION", "PORT_VARIABLE", "placeholder_command", "release_from_pod"]
