#!/usr/bin/env python3
"""`make image-test`: build the CPU image with podman and run it for real, on a machine without a container runtime.

What it does, step by step (each step is timed; the first that fails stops the test and is named):

1. tools: podman and debootstrap (installed with apt-get when missing and this is root on Debian).
2. base: a local stand-in for `python:3.11-slim-bookworm` (no image registry is reachable here): Debian bookworm
   minbase by debootstrap plus Debian's python3.11 and venv, imported with `podman import`. Cached between runs as
   a podman image and as a tarball under the cache folder ($LANGADAPT_IMAGE_CACHE, default /var/tmp/langadapt-image).
3. wheels: the directories of pip's find-links setting ($PIP_FIND_LINKS, `pip config`) linked into one folder,
   given to the build as its `wheels` context (the torch CPU wheel index is unreachable here).
4. build: `podman build --isolation chroot` of the Dockerfile's default (CPU) target, unchanged, with the stand-in
   base (build arg PYTHON_IMAGE) and the wheels (`--build-context wheels=...`).
5. size: the image size, and the final stage checked for leftovers (compilers, pip caches, apt lists, sources).
6. mount: `podman image mount` gives the image's root file system, read-only; on it a private /proc, a /dev with
   the usual device nodes and a tmpfs /dev/shm, a tmpfs /tmp and a fresh writable volume at the adapter store.
7. start: the image's own ENTRYPOINT + CMD, environment, working directory and USER (from `podman image inspect`),
   run in a chroot as that user; only --host and --port are changed, to a free loopback port.
8. ready: /ready answers 200 within 120 s.
9. requests: one request per task in Yoruba, and one /v1/label with all three tasks.
10. metrics: /metrics counts those requests.
11. healthcheck: the image's HEALTHCHECK command, run in the chroot as the user (its port changed as in 7).
12. stop: SIGTERM to the server; it and its worker processes exit cleanly (exit code 0) within 60 s.

Needs root (chroot, mounts) and Linux on x86-64. Standard library only: it runs with any python3 >= 3.9.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("LANGADAPT_IMAGE_CACHE", "/var/tmp/langadapt-image"))  # noqa: S108 - a cache, kept
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
# What python:3.11-slim-bookworm has that the Dockerfile uses: python (3.11), venv with pip, CA certificates.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "netbase")
BASE_KEY = "bookworm-py311-1"  # bump when the recipe below changes: the cached tarball and image are keyed by it
BASE_IMAGE = f"localhost/langadapt-base:{BASE_KEY}"
IMAGE = "localhost/langadapt:cpu-test"
PYPI = "https://pypi.org/simple"
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's, in the base and on the host
READY_WITHIN = 120.0
STOP_WITHIN = 60.0
TEXTS = {
    "ner": "Olúṣẹ́gun Ọbásanjọ́ jẹ́ ààrẹ orílẹ̀-èdè Nàìjíríà, ó sì ń gbé ní ìlú Abẹ́òkúta.",
    "sentiment": "Mo nífẹ̀ẹ́ fíìmù yìí gan-an, ó dára púpọ̀.",
    "topic": "Ìjọba àpapọ̀ ti kéde ètò ìlera tuntun fún àwọn ọmọdé ní gbogbo ìpínlẹ̀.",
}
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


class StepError(Exception):
    """A step of the test broke; the message says how."""


def log(message: str) -> None:
    print(f"[image-test] {message}", flush=True)


def run(command: list[str], *, check: bool = True, capture: bool = True, **kwargs: Any) -> str:
    """Run a command; on failure raise StepError with its output's tail."""
    result = subprocess.run(command, text=True, capture_output=capture, check=False, **kwargs)
    if check and result.returncode != 0:
        output = ((result.stdout or "") + (result.stderr or "")).strip()
        raise StepError(f"`{shlex.join(command)}` exited {result.returncode}\n{tail(output)}")
    return (result.stdout or "").strip()


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


# ================================================================================================== steps


def step_tools() -> str:
    missing = [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        run(["apt-get", "update", "-qq"])
        run(
            ["apt-get", "install", "-y", "-qq", "podman", "debootstrap"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        missing = [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]
    if missing:
        raise StepError(f"not installed: {', '.join(missing)} (apt-get install podman debootstrap)")
    return run(["podman", "--version"])


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], check=False).returncode == 0


def step_base() -> str:
    """The stand-in base image: reused, else imported from the cached tarball, else made by debootstrap."""
    if image_exists(BASE_IMAGE):
        return f"{BASE_IMAGE} (cached image)"
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"base-{BASE_KEY}.tar"
    how = "cached tarball"
    if not tarball.is_file():
        how = "debootstrap"
        rootfs = CACHE / f"rootfs-{BASE_KEY}.tmp"
        shutil.rmtree(rootfs, ignore_errors=True)
        command = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs)]
        run(["nice", "-n", "10", *command, MIRROR])
        # Lean as the slim image: no package lists or downloaded .debs, no docs, man pages or translations.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info"):
            for path in (rootfs / junk).glob("*"):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.name != "lock":
                    path.unlink()
        for path in (rootfs / "usr/share/locale").glob("*"):
            if path.is_dir() and path.name not in ("locale.alias",):
                shutil.rmtree(path)
        # What the container runtime provides: host name and DNS are not baked in.
        (rootfs / "etc/hostname").write_text("localhost\n")
        (rootfs / "etc/resolv.conf").write_text("")
        partial = tarball.with_suffix(".tar.tmp")
        excluded = [f"--exclude=./{d}/*" for d in ("dev", "proc", "sys", "run", "tmp")]
        run(["tar", "-C", str(rootfs), "--numeric-owner", *excluded, "-cf", str(partial), "."])
        partial.replace(tarball)
        shutil.rmtree(rootfs)
    changes = [
        "ENV LANG=C.UTF-8",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        'CMD ["python3"]',
    ]
    run(["podman", "import", *(a for c in changes for a in ("--change", c)), str(tarball), BASE_IMAGE])
    return f"{BASE_IMAGE} ({how}, {human(tarball.stat().st_size)} tarball)"


def pip_setting(name: str) -> list[str]:
    """A setting of the host's pip: $PIP_<NAME>, then every scope of `pip config list` (values split on spaces)."""
    values = os.environ.get("PIP_" + name.upper().replace("-", "_"), "").split()
    for pip in ([sys.executable, "-m", "pip"], ["pip3"]):
        with contextlib.suppress(OSError):
            listed = subprocess.run([*pip, "config", "list"], capture_output=True, text=True, check=False).stdout
            for line in listed.splitlines():
                key, _, value = line.partition("=")
                if key.rpartition(".")[2] == name:
                    values += value.strip().strip("'\"").split()
            if listed:
                break
    return values


def find_links() -> list[Path]:
    """Local directories in pip's find-links setting."""
    dirs: list[Path] = []
    for value in pip_setting("find-links"):
        path = Path(value[len("file://") :] if value.startswith("file://") else value)
        if "://" not in str(path) and path.is_dir() and path not in dirs:
            dirs.append(path)
    return dirs


def step_wheels(state: dict[str, Any]) -> str:
    wheels = CACHE / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    sources = find_links()
    for source in sources:
        for wheel in sorted(source.glob("*.whl")):
            target = wheels / wheel.name
            if target.exists():
                continue
            try:
                os.link(wheel, target)
            except OSError:
                shutil.copy2(wheel, target)
    names = sorted(p.name for p in wheels.glob("*.whl"))
    state["wheels"] = wheels
    state["local_torch"] = any(re.match(r"torch-[^-]+\+cpu-", n) for n in names)
    where = ", ".join(map(str, sources)) or "no find-links directory"
    return f"{len(names)} wheel(s) from {where}: {', '.join(names) or '-'}"


def host_ca_bundle() -> Path | None:
    """The CA bundle the host's pip uses (its `cert` setting, else the system bundle), if any."""
    for candidate in [*pip_setting("cert"), SYSTEM_BUNDLE]:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def step_build(state: dict[str, Any]) -> str:
    # --format docker: the OCI image format has no HEALTHCHECK, and podman drops it from an OCI build.
    command = ["nice", "-n", "10", "podman", "build", "--isolation", "chroot", "--layers", "--format", "docker"]
    command += ["--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}", "--build-context", f"wheels={state['wheels']}"]
    bundle = host_ca_bundle()
    if bundle is not None:
        # This machine reaches PyPI through a proxy whose CA only the host's bundle has. Mounted over the base's
        # bundle (which Debian's pip reads) for the build's RUN steps only: nothing of it lands in a layer.
        command += ["--volume", f"{bundle}:{SYSTEM_BUNDLE}:ro"]
    if state["local_torch"]:
        # torch itself comes from the local wheel (2.13.0+cpu outranks PyPI's 2.13.0); its dependencies from PyPI,
        # as the unreachable torch CPU index would have served them.
        command += ["--build-arg", f"TORCH_CPU_INDEX_URL={PYPI}"]
    command += ["-f", str(REPO / "Dockerfile"), "-t", IMAGE, str(REPO)]
    log("  " + shlex.join(command))
    build_log = CACHE / "build.log"
    with build_log.open("w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        raise StepError(f"podman build exited {code}; {build_log}:\n{tail(build_log.read_text(errors='replace'))}")
    cached = build_log.read_text(errors="replace").count("Using cache")
    return f"{IMAGE} ({cached} cached steps; log {build_log})"


def inspect(image: str) -> dict[str, Any]:
    return json.loads(run(["podman", "image", "inspect", image]))[0]


def du(path: Path) -> int:
    out = run(["du", "-sxb", str(path)], check=False)
    return int(out.split()[0]) if out else 0


def step_size(state: dict[str, Any]) -> str:
    info = inspect(IMAGE)
    state["config"] = info["Config"]
    # podman's inspect shows the docker-format HEALTHCHECK beside Config, not in it
    state["healthcheck"] = info.get("Healthcheck") or info["Config"].get("Healthcheck") or {}
    if not state["healthcheck"].get("Test"):
        raise StepError("the image has no HEALTHCHECK (an OCI-format build drops it)")
    root = Path(run(["podman", "image", "mount", IMAGE]))
    state["root"] = root
    leftovers = [
        rel
        for rel in ("usr/bin/gcc", "usr/bin/cc", "usr/bin/g++", "usr/bin/make", "root/.cache/pip", "src", "wheels")
        if (root / rel).exists()
    ]
    site = next((root / "opt/venv/lib").glob("python3*/site-packages"), None)
    leftovers += [str(p.relative_to(root)) for p in (site / "torch/include", site / "torch/test") if p.exists()]
    leftovers += [str(p.relative_to(root)) for p in (root / "var/lib/apt/lists").glob("*_Packages*")]
    leftovers += [str(p.relative_to(root)) for p in (root / "var/cache/apt/archives").glob("*.deb")]
    if leftovers:
        raise StepError(f"the final stage carries build leftovers: {', '.join(leftovers)}")
    parts = {name: du(root / name) for name in ("opt/venv", "opt/langadapt-cache", "usr")}
    state["size"] = info["Size"]
    detail = ", ".join(f"/{k} {human(v)}" for k, v in parts.items())
    return f"image {human(info['Size'])} ({detail}); no compilers, caches or sources"


class Mounts:
    """Mounts made on the image's root file system, undone in reverse order."""

    def __init__(self) -> None:
        self.points: list[Path] = []

    def mount(self, args: list[str], target: Path) -> None:
        run(["mount", *args, str(target)])
        self.points.append(target)

    def undo(self) -> None:
        for target in reversed(self.points):
            if subprocess.run(["umount", str(target)], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)
        self.points.clear()


def step_mount(state: dict[str, Any], mounts: Mounts) -> str:
    root: Path = state["root"]
    config = state["config"]
    user = config.get("User") or "0"
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or not (gid or "0").isdigit():
        raise StepError(f"USER {user!r} is not numeric")
    state["uid"], state["gid"] = int(uid), int(gid or uid)
    if state["uid"] == 0:
        raise StepError("the image runs as root")
    mounts.mount(["-t", "proc", "-o", "nosuid,nodev,noexec", "proc"], root / "proc")
    mounts.mount(["-t", "tmpfs", "-o", "mode=755,nosuid,size=65536k", "tmpfs"], root / "dev")
    for name in DEVICES:
        (root / "dev" / name).touch()
        mounts.mount(["--bind", f"/dev/{name}"], root / "dev" / name)
    (root / "dev/shm").mkdir()
    mounts.mount(["-t", "tmpfs", "-o", "mode=1777,nosuid,nodev,size=1g", "tmpfs"], root / "dev/shm")
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        (root / "dev" / name).symlink_to(target)
    mounts.mount(["-t", "tmpfs", "-o", "mode=1777,nosuid,nodev,size=1g", "tmpfs"], root / "tmp")
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    store = env.get("LANGADAPT_STORE")
    if not store or not (root / store.lstrip("/")).is_dir():
        raise StepError(f"the image has no adapter store folder (LANGADAPT_STORE={store!r})")
    owner = (root / store.lstrip("/")).stat()
    if (owner.st_uid, owner.st_gid) != (state["uid"], state["gid"]):
        raise StepError(f"{store} is owned by {owner.st_uid}:{owner.st_gid}, not the image's user {user}")
    volume = Path(tempfile.mkdtemp(prefix="store-", dir=CACHE))
    os.chown(volume, state["uid"], state["gid"])
    state["volume"] = volume
    mounts.mount(["--bind", str(volume)], root / store.lstrip("/"))
    return f"{root} read-only; /proc, /dev (+ shm), /tmp, and a volume at {store}"


def passwd_home(root: Path, uid: int) -> str:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2] == str(uid):
            return fields[5]
    return "/"


def chroot_preexec(root: Path, workdir: str, uid: int, gid: int) -> Callable[[], None]:
    def enter() -> None:
        os.chroot(root)
        os.chdir(workdir)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return enter


def image_command(state: dict[str, Any], args: list[str]) -> tuple[str, dict[str, str]]:
    """The executable (absolute, inside the image) and environment of a command run in the image."""
    root: Path = state["root"]
    env = dict(item.split("=", 1) for item in state["config"].get("Env") or [])
    env.setdefault("HOME", passwd_home(root, state["uid"]))
    env.setdefault("HOSTNAME", "langadapt-image-test")
    program = args[0]
    if "/" not in program:
        for folder in env.get("PATH", "/usr/bin:/bin").split(":"):
            candidate = root / folder.lstrip("/") / program
            if candidate.is_file() and os.access(candidate, os.X_OK):
                program = f"{folder}/{program}"
                break
        else:
            raise StepError(f"{args[0]!r} is not on the image's PATH")
    return program, env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def step_start(state: dict[str, Any]) -> str:
    config = state["config"]
    entrypoint, cmd = list(config.get("Entrypoint") or []), list(config.get("Cmd") or [])
    if entrypoint != ["langadapt"] or cmd[:1] != ["serve"]:
        raise StepError(f"unexpected ENTRYPOINT {entrypoint} CMD {cmd}")
    port = free_port()
    image_port = cmd[cmd.index("--port") + 1]
    cmd[cmd.index("--port") + 1] = str(port)
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    argv = entrypoint + cmd
    program, env = image_command(state, argv)
    workdir = config.get("WorkingDir") or "/"
    server_log = CACHE / "server.log"
    handle = server_log.open("w")
    log(f"  chroot {state['root']} as {state['uid']}:{state['gid']} in {workdir}: {shlex.join(argv)}")
    state["server"] = subprocess.Popen(
        [program, *argv[1:]],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=subprocess.STDOUT,
        preexec_fn=chroot_preexec(state["root"], workdir, state["uid"], state["gid"]),
        start_new_session=True,
    )
    handle.close()
    state.update(port=port, image_port=image_port, base_url=f"http://127.0.0.1:{port}", log=server_log)
    return f"pid {state['server'].pid} on 127.0.0.1:{port}"


def http(state: dict[str, Any], method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(state["base_url"] + path, data=data, method=method)  # noqa: S310 - http
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http to loopback
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def alive(state: dict[str, Any]) -> None:
    code = state["server"].poll()
    if code is not None:
        raise StepError(f"the server exited with code {code}")


def step_ready(state: dict[str, Any], started: float) -> str:
    deadline = started + READY_WITHIN
    last = "no answer"
    health_at = None
    while time.monotonic() < deadline:
        alive(state)
        try:
            if health_at is None and http(state, "GET", "/health", timeout=2)[0] == 200:
                health_at = time.monotonic() - started
            code, body = http(state, "GET", "/ready", timeout=2)
            if code == 200:
                health = f"/health at {health_at:.1f} s, " if health_at is not None else ""
                return f"{health}/ready at {time.monotonic() - started:.1f} s after start"
            last = f"{code} {body[:200]!r}"
        except (OSError, urllib.error.URLError) as error:
            last = str(error)
        time.sleep(0.5)
    raise StepError(f"/ready did not answer 200 within {READY_WITHIN:.0f} s (last: {last})")


def post(state: dict[str, Any], path: str, body: dict[str, Any]) -> dict[str, Any]:
    alive(state)
    code, raw = http(state, "POST", path, body)
    if code != 200:
        raise StepError(f"POST {path} answered {code}: {raw[:500]!r}")
    return json.loads(raw)


def step_requests(state: dict[str, Any]) -> str:
    answers = []
    for task, text in TEXTS.items():
        t0 = time.monotonic()
        out = post(state, f"/v1/{task}", {"lang": "yo", "texts": [text]})
        [result] = out["results"]
        if out["language"] != "yor_Latn" or result["stack"]["task_adapter"]["id"] != f"yor_Latn-{task}":
            raise StepError(f"/v1/{task} did not use the Yoruba adapter: {json.dumps(out)[:500]}")
        if task == "ner":
            said = ",".join(f"{e['type']}:{e['text']}" for e in result["entities"]) or "no entities"
        else:
            said = f"{result['label']} {result['score']:.2f}"
        answers.append(f"{task} {said} ({time.monotonic() - t0:.2f} s)")
    t0 = time.monotonic()
    out = post(state, "/v1/label", {"lang": "yo", "texts": list(TEXTS.values()), "tasks": list(TEXTS)})
    if out["tasks"] != list(TEXTS) or len(out["results"]) != len(TEXTS) or out.get("unavailable"):
        raise StepError(f"/v1/label answered {json.dumps(out)[:500]}")
    for result in out["results"]:
        missing = [task for task in TEXTS if not result.get(task)]
        if missing:
            raise StepError(f"/v1/label left out {missing}: {json.dumps(result)[:300]}")
    answers.append(f"label 3 texts x 3 tasks ({time.monotonic() - t0:.2f} s)")
    return "; ".join(answers)


def step_metrics(state: dict[str, Any]) -> str:
    alive(state)
    code, raw = http(state, "GET", "/metrics")
    text = raw.decode()
    if code != 200:
        raise StepError(f"/metrics answered {code}")
    counted = [
        line
        for line in text.splitlines()
        if line.startswith("langadapt_requests_total{") and 'language="yor_Latn"' in line and 'status="200"' in line
    ]
    if not counted:
        raise StepError("/metrics has no langadapt_requests_total for yor_Latn with status 200")
    total = sum(float(line.rsplit(" ", 1)[1]) for line in counted)
    return f"{len(text.splitlines())} lines; langadapt_requests_total for yor_Latn, status 200: {total:.0f}"


def step_healthcheck(state: dict[str, Any]) -> str:
    health = state["healthcheck"]
    test = list(health.get("Test") or [])
    if test[:1] != ["CMD"] or len(test) < 2:
        raise StepError(f"HEALTHCHECK is not an exec-form CMD: {test}")
    argv = [a.replace(f":{state['image_port']}/", f":{state['port']}/") for a in test[1:]]
    program, env = image_command(state, argv)
    timeout = (health.get("Timeout") or 5_000_000_000) / 1e9
    result = subprocess.run(
        [program, *argv[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout + 5,
        preexec_fn=chroot_preexec(state["root"], "/", state["uid"], state["gid"]),
        check=False,
    )
    if result.returncode != 0:
        raise StepError(f"HEALTHCHECK exited {result.returncode}: {(result.stdout + result.stderr)[-500:]}")
    return f"exit 0 (timeout {timeout:.0f} s): {shlex.join(argv)}"


def children(pid: int) -> set[int]:
    """The process's descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    return "?"


def step_stop(state: dict[str, Any]) -> str:
    server: subprocess.Popen[bytes] = state["server"]
    alive(state)
    workers = children(server.pid)
    commands = {p: command_line(p) for p in workers}
    t0 = time.monotonic()
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=STOP_WITHIN)
    except subprocess.TimeoutExpired:
        raise StepError(f"the server did not exit within {STOP_WITHIN:.0f} s of SIGTERM") from None
    took = time.monotonic() - t0
    if code != 0:
        raise StepError(f"the server exited {code} on SIGTERM")
    left = sorted(workers)
    while left and time.monotonic() - t0 < STOP_WITHIN:
        time.sleep(0.2)
        left = [p for p in left if Path(f"/proc/{p}").exists()]
    if left:
        raise StepError(f"processes left {STOP_WITHIN:.0f} s after SIGTERM: {[commands[p] for p in left]}")
    took_all = time.monotonic() - t0
    text = state["log"].read_text(errors="replace")
    for sign in ("Traceback", "Read-only file system", "Permission denied"):
        found = [line for line in text.splitlines() if sign in line]
        if found:
            raise StepError(f"the server's log has {sign!r}: {found[0][:300]}")
    names = ", ".join(sorted(set(commands.values())))
    return f"exit 0 in {took:.1f} s; its {len(workers)} child process(es) gone by {took_all:.1f} s ({names})"


# ================================================================================================== driver


@contextlib.contextmanager
def cleanup(state: dict[str, Any], mounts: Mounts) -> Iterator[None]:
    try:
        yield
    finally:
        server = state.get("server")
        if server is not None and server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        mounts.undo()
        if "root" in state:
            subprocess.run(["podman", "image", "unmount", IMAGE], capture_output=True, check=False)
        if "volume" in state:
            shutil.rmtree(state["volume"], ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    if os.geteuid() != 0:
        log("FAILED: needs root (chroot, mounts, podman's rootful storage)")
        return 1
    state: dict[str, Any] = {}
    mounts = Mounts()
    times: list[tuple[str, float]] = []
    began = time.monotonic()
    steps: list[tuple[str, Callable[[], str]]] = [
        ("tools", step_tools),
        ("base", step_base),
        ("wheels", lambda: step_wheels(state)),
        ("build", lambda: step_build(state)),
        ("size", lambda: step_size(state)),
        ("mount", lambda: step_mount(state, mounts)),
        ("start", lambda: step_start(state)),
        ("ready", lambda: step_ready(state, started)),
        ("requests", lambda: step_requests(state)),
        ("metrics", lambda: step_metrics(state)),
        ("healthcheck", lambda: step_healthcheck(state)),
        ("stop", lambda: step_stop(state)),
    ]
    started = 0.0
    with cleanup(state, mounts):
        for name, step in steps:
            t0 = time.monotonic()
            if name == "start":
                started = t0
            log(f"{name} ...")
            try:
                said = step()
            except (StepError, OSError, subprocess.SubprocessError, KeyError, ValueError) as error:
                log(f"FAILED at step '{name}' after {time.monotonic() - t0:.1f} s: {error}")
                if "log" in state and Path(state["log"]).is_file():
                    log(f"server log ({state['log']}), last lines:\n{tail(state['log'].read_text(errors='replace'))}")
                return 1
            times.append((name, time.monotonic() - t0))
            log(f"{name} ok ({times[-1][1]:.1f} s): {said}")
    log("passed. image size: " + human(state["size"]))
    for name, seconds in times:
        log(f"  {name:<12} {seconds:7.1f} s")
    log(f"  {'total':<12} {time.monotonic() - began:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
