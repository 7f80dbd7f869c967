"""``python -m bench.image ROOT CONFIG``: run a built image from its own files and check it.

``./scripts/image`` builds the image, mounts a container of it (``podman create`` +
``podman mount``, with ``/proc`` and ``/dev`` mounted inside as a runtime would) and hands
the mount point ``ROOT`` and the image's config (``podman image inspect``, JSON) to this
module, which runs everything with ``chroot`` into ``ROOT`` as the image's ``USER``, in its
``WorkingDir``, with its ``Env`` (``podman run`` cannot work in this sandbox; a chroot shares
the host's network, so the servers below are reached on loopback):

* ``user``: ``USER`` resolves in the image's ``/etc/passwd`` to a uid other than 0;
* ``python``: the image's ``python`` has the minor version of the Dockerfile's ``FROM``;
* ``files``: no ``.venv`` or second ``pyvenv.cfg``, no ``.env``, no ``/src``, no ``tests``/``bench``
  package, no dev-only distribution (pytest, moto ...) and no copy of a file of this
  repository's ``tests/`` or ``bench/`` (by content) anywhere in the image;
* ``help``: ``ENTRYPOINT --help`` exits 0 and lists the commands;
* ``check-redis``: against a private ``redis-server``: exit 0 and ``stock:test`` has a TTL;
* ``service``: ``ENTRYPOINT CMD`` against the simulator (run from the host's venv) and
  the private Redis: ``/healthz`` answers 200, the process's ``/proc/<pid>/status`` shows
  the image's uid and gid and its root is ``ROOT``, keys of all four families are written,
  the ``HEALTHCHECK`` command exits 0 (and non-zero against a port nobody listens on),
  and after SIGTERM the service exits 0 and its output never showed the API key.

Prints one line per check; exit code 1 when any failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

from bench.image_root import CheckFailed, ImageRoot
from bench.procs import ROOT as REPO
from bench.procs import Child, start_child
from polygon_testing.local_redis import RedisServerProcess, free_port

__all__ = ["CHECKS", "main"]

API_KEY = "image-check-key-5f1c"
SYMBOLS = ("AAPL", "MSFT", "NVDA", "BRK.B")
FAMILIES = ("agg1m", "fmv", "trade", "quote")
DEV_ONLY = ("pytest", "hypothesis", "moto", "mypy", "ruff", "duckdb", "upstash_redis")


def check_user(image: ImageRoot, _: argparse.Namespace) -> str:
    if image.uid == 0:
        raise CheckFailed(f"USER {image.user!r} is root (uid 0)")
    return f"USER {image.user} = uid {image.uid}, gid {image.gid}"


def check_python(image: ImageRoot, args: argparse.Namespace) -> str:
    out = image.run(["python", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
    version = out.stdout.strip()
    if out.returncode == 0 and version and not args.python_minor:
        return f"python {version} (the FROM tag names no version)"
    if out.returncode != 0 or not version.startswith(args.python_minor + "."):
        raise CheckFailed(f"python in the image: {version or out.stderr.strip()!r}")
    return f"python {version} (FROM wants {args.python_minor})"


def _repo_digests(min_bytes: int = 200) -> dict[str, dict[str, str]]:
    """basename -> {sha256: repo path} for the files of tests/ and bench/."""
    found: dict[str, dict[str, str]] = {}
    for top in ("tests", "bench"):
        for path in (REPO / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                if path.stat().st_size >= min_bytes:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    found.setdefault(path.name, {})[digest] = str(path.relative_to(REPO))
    return found


def check_files(image: ImageRoot, _: argparse.Namespace) -> str:
    problems: list[str] = []
    digests = _repo_digests()
    venvs, copies, count = [], [], 0
    for dirpath, dirnames, filenames in os.walk(image.root):
        rel = "/" + os.path.relpath(dirpath, image.root).removeprefix(".").lstrip("/")
        if rel.startswith(("/proc", "/dev", "/sys")):
            dirnames[:] = []
            continue
        venvs += [f"{rel}/.venv" for d in dirnames if d == ".venv"]
        for name in filenames:
            count += 1
            if name == "pyvenv.cfg" and rel != "/opt/venv":
                venvs.append(f"{rel}/{name}")
            if name == ".env":
                problems.append(f"{rel}/.env is in the image")
            if name in digests:
                data = (Path(dirpath) / name).read_bytes()
                if (repo := digests[name].get(hashlib.sha256(data).hexdigest())) is not None:
                    copies.append(f"{rel}/{name} (= {repo})")
    problems += [f"virtualenv files: {venvs}"] if venvs else []
    problems += [f"copies of repository files: {copies[:5]}"] if copies else []
    problems += ["/src is in the image"] if (image.root / "src").exists() else []
    site = [p for p in (image.root / "opt/venv/lib").glob("python*/site-packages")]
    for packages in site:
        names = {p.name.split("-")[0].lower() for p in packages.iterdir()}
        if stray := sorted(names & {"tests", "bench"}):
            problems.append(f"{packages.relative_to(image.root)} holds {stray}")
        if dev := sorted(names & set(DEV_ONLY)):
            problems.append(f"dev-only distributions in the image: {dev}")
    if not site:
        problems.append("no /opt/venv/lib/python*/site-packages")
    if problems:
        raise CheckFailed("; ".join(problems))
    return f"{count} files: no .venv, .env, /src, tests or bench files, no dev-only distributions"


def check_help(image: ImageRoot, _: argparse.Namespace) -> str:
    out = image.run([*image.entrypoint, "--help"])
    if out.returncode != 0 or "check-redis" not in out.stdout or "run" not in out.stdout:
        raise CheckFailed(f"exit {out.returncode}: {(out.stdout + out.stderr)[-500:]}")
    return f"{' '.join(image.entrypoint)} --help: exit 0"


def check_redis_command(image: ImageRoot, args: argparse.Namespace) -> str:
    out = image.run([*image.entrypoint, "check-redis"], {"REDIS_URL": args.redis_url})
    ttl = redis.Redis.from_url(args.redis_url).ttl("stock:test")
    if out.returncode != 0 or not 0 < int(ttl) <= 60:
        raise CheckFailed(f"exit {out.returncode}, TTL {ttl}: {(out.stdout + out.stderr)[-500:]}")
    return f"exit 0 against {args.redis_url}, stock:test TTL {ttl} s"


def _healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def _until(what: str, condition: Callable[[], bool], child: Child, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if child.proc.poll() is not None:
            raise CheckFailed(f"the service exited ({child.proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise CheckFailed(f"no {what} within {timeout_s:.0f} s")
        time.sleep(0.1)


def _status_ids(pid: int) -> tuple[list[int], list[int]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    field = {ln.split(":")[0]: ln.split()[1:] for ln in lines if ":" in ln}
    return [int(v) for v in field["Uid"]], [int(v) for v in field["Gid"]]


def check_service(image: ImageRoot, args: argparse.Namespace) -> str:
    port = free_port()
    env = image.environ(
        {
            "POLYGON_API_KEY": API_KEY,
            "POLYGON_WS_SYMBOLS": ",".join(SYMBOLS),
            "POLYGON_WS_HOST_REALTIME": args.realtime_url,
            "POLYGON_WS_HOST_DELAYED": args.delayed_url,
            "POLYGON_DISCOVER_TICKERS": "false",
            "REDIS_URL": args.redis_url,
            "HEALTH_PORT": str(port),
            "SHUTDOWN_TIMEOUT_SEC": "20",
        }
    )
    with tempfile.TemporaryDirectory(prefix="image-check-") as tmp:
        log = Path(tmp) / "service.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                image.argv([*image.entrypoint, *image.cmd]), env=env, stdout=out, stderr=out
            )
        child = Child("service", proc, log)
        problems: list[str] = []
        summary = ""
        try:
            summary = _service_checks(image, args, child, port)
        except CheckFailed as err:
            problems.append(str(err))
        finally:
            code = child.stop(timeout_s=30)
        if API_KEY in child.log_tail(10**7):
            problems.append("the API key appeared in the service's output")
        if code != 0:
            problems.append(f"exit {code} after SIGTERM:\n{child.log_tail()}")
        if problems:
            raise CheckFailed("; ".join(problems))
        return summary


def _service_checks(image: ImageRoot, args: argparse.Namespace, child: Child, port: int) -> str:
    _until("/healthz 200", lambda: _healthz(port) == 200, child, 30)
    uids, gids = _status_ids(child.pid)
    if set(uids) != {image.uid} or set(gids) != {image.gid}:
        raise CheckFailed(f"/proc/{child.pid}/status: Uid {uids} Gid {gids}")
    if Path(os.readlink(f"/proc/{child.pid}/root")) != image.root:
        raise CheckFailed(f"/proc/{child.pid}/root is not {image.root}")
    client = redis.Redis.from_url(args.redis_url)

    def families() -> set[str]:
        keys = client.keys("stock:*")
        return {k.decode().split(":")[1] for k in keys} & set(FAMILIES)  # type: ignore[union-attr]

    _until("keys of all four families", lambda: families() == set(FAMILIES), child, 30)
    health = image.healthcheck_argv()
    ok = image.run(health, {"HEALTH_PORT": str(port)}, timeout_s=10)
    bad = image.run(health, {"HEALTH_PORT": str(free_port())}, timeout_s=10)
    if ok.returncode != 0 or bad.returncode == 0:
        raise CheckFailed(f"HEALTHCHECK: exit {ok.returncode} (up), {bad.returncode} (nobody)")
    time.sleep(args.run_seconds)
    keys = len(client.keys("stock:*"))
    return (
        f"pid {child.pid}: uid/gid {image.uid}/{image.gid}, root = the image; "
        f"/healthz 200; {keys} keys ({', '.join(FAMILIES)}); HEALTHCHECK exit 0 "
        f"(exit {bad.returncode} with nothing listening); SIGTERM -> exit 0"
    )


CHECKS = {
    "user": check_user,
    "python": check_python,
    "files": check_files,
    "help": check_help,
    "check-redis": check_redis_command,
    "service": check_service,
}


def _urls(sim: Child, timeout_s: float = 30.0) -> tuple[str, str]:
    """The simulator's two ws:// base URLs, read from its first lines."""
    assert sim.proc.stdout is not None
    urls: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    for raw in sim.proc.stdout:
        line = raw.decode(errors="replace")
        if match := re.match(r"(realtime|delayed)\b.*?(ws://\S+?)(/stocks)?\s*$", line):
            urls[match.group(1)] = match.group(2)
        if line.startswith("serving") or time.monotonic() > deadline:
            break
    if set(urls) != {"realtime", "delayed"}:
        raise RuntimeError(f"the simulator did not start:\n{sim.log_tail()}")
    return urls["realtime"], urls["delayed"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.image", description=__doc__)
    p.add_argument("root", type=Path, help="the mounted image (podman mount)")
    p.add_argument("config", type=Path, help="podman image inspect output (JSON)")
    p.add_argument("--python-minor", default="", help="e.g. 3.11, from the FROM tag")
    p.add_argument("--run-seconds", type=float, default=3.0)
    args = p.parse_args(argv)
    config = json.loads(args.config.read_text())
    try:
        image = ImageRoot(args.root.resolve(), config[0] if isinstance(config, list) else config)
    except CheckFailed as err:
        print(f"image: FAIL {'user':<12} {err}", flush=True)
        return 1
    failed = 0
    with tempfile.TemporaryDirectory(prefix="image-check-") as tmp, RedisServerProcess() as rs:
        sim_argv = [sys.executable, "-m", "polygon_runner", "simulate", "--no-rest", "--market"]
        sim_argv += ["flat"]
        sim_argv += ["--symbols", ",".join(SYMBOLS), "--rate", "500", "--stats-interval", "0"]
        sim = start_child(
            "sim", sim_argv, Path(tmp), {"SIMULATOR_API_KEY": API_KEY}, capture_stdout=True
        )
        try:
            args.realtime_url, args.delayed_url = _urls(sim)
            args.redis_url = rs.url
            for name, check in CHECKS.items():
                try:
                    print(f"image: ok   {name:<12} {check(image, args)}", flush=True)
                except (CheckFailed, OSError, subprocess.SubprocessError) as err:
                    failed += 1
                    print(f"image: FAIL {name:<12} {err}", flush=True)
        finally:
            sim.stop()
    print(f"image: {len(CHECKS) - failed} of {len(CHECKS)} checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
