"""The mounted image of ``scripts/image``: its files, its config, and commands run in it.

``podman image inspect`` gives the config (``User``, ``Env``, ``WorkingDir``, ``Entrypoint``,
``Cmd``, ``Healthcheck``); a command runs with ``chroot`` into the mount as the image's user
(uid and gid from the image's own ``/etc/passwd``), in its working directory, with the
image's environment only: what a runtime would do, minus namespaces and limits.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CHROOT", "CheckFailed", "ImageRoot"]

CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


class CheckFailed(Exception):
    """A check did not pass; the message says why."""


class ImageRoot:
    """The mounted image: its files under ``root`` and its config from ``podman inspect``."""

    def __init__(self, root: Path, config: Mapping[str, Any]) -> None:
        self.root = root
        cfg = config["Config"]
        self.user = str(cfg.get("User") or "root")
        self.env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
        self.entrypoint = list(cfg.get("Entrypoint") or [])
        self.cmd = list(cfg.get("Cmd") or [])
        self.workdir = str(cfg.get("WorkingDir") or "/")
        self.healthcheck = list((config.get("Healthcheck") or {}).get("Test") or [])
        self.uid, self.gid, self.home = self._ids(self.user)
        # A runtime creates the working directory when the image has none (buildah's
        # WORKDIR does not commit one), owned by root: the service must not need to write it.
        (root / self.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)

    def _ids(self, user: str) -> tuple[int, int, str]:
        """uid, gid and home of ``user`` (``name``, ``uid`` or either with ``:group``)."""
        name, _, group = user.partition(":")
        passwd = [ln.split(":") for ln in (self.root / "etc/passwd").read_text().splitlines()]
        row = next((r for r in passwd if name in (r[0], r[2])), None)
        if row is None:
            raise CheckFailed(f"USER {user!r} is not in the image's /etc/passwd")
        return int(row[2]), int(group or row[3]), row[5]

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` run in the image as its user, in its working directory."""
        spec = f"--userspec={self.uid}:{self.gid}"
        chdir = ["/usr/bin/env", "-C", self.workdir]
        return [CHROOT, spec, f"--groups={self.gid}", str(self.root), *chdir, *command]

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The image's Env (plus HOME, as a runtime sets it) and ``extra``; nothing else."""
        return {"HOME": self.home, **self.env, **(extra or {})}

    def run(
        self,
        command: Sequence[str],
        extra: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(command),
            env=self.environ(extra),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def healthcheck_argv(self) -> list[str]:
        kind, *rest = self.healthcheck or ["NONE"]
        if kind == "CMD-SHELL":
            return ["/bin/sh", "-c", rest[0]]
        if kind == "CMD":
            return rest
        raise CheckFailed(f"the image has no HEALTHCHECK command ({self.healthcheck})")
