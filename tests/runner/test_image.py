"""The container image: built from the real Dockerfile and run from its own files.

``scripts/image`` needs root, podman and mmdebstrap. Under ``CI=true`` missing tools are
installed with apt-get (a failure to do so fails the test); elsewhere the test is skipped,
saying why. The checker's own checks are also run here against small hand-made trees, so
each can be seen to fail.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from bench.image import CHECKS, check_files, check_user
from bench.image_root import CheckFailed, ImageRoot

from tests.helpers import IN_CI, missing_server

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts/image"
TOOLS = ("podman", "mmdebstrap")


def _tools_ready() -> None:
    if os.geteuid() != 0:
        missing_server("scripts/image needs root (podman mount, chroot)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        return
    if not IN_CI:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install {' '.join(TOOLS)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *TOOLS]]
    for argv in steps:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(argv)} failed under CI=true:\n{done.stderr[-2000:]}")
    if still := [tool for tool in TOOLS if shutil.which(tool) is None]:
        pytest.fail(f"{', '.join(still)} missing after apt-get install")


def _run_image(*args: str, timeout_s: float = 900.0) -> tuple[int, str, int]:
    """Run scripts/image; on a timeout SIGTERM its process group (traps clean up) and fail."""
    proc = subprocess.Popen(
        [str(SCRIPT), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout stops all of it
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        pytest.fail(f"scripts/image took over {timeout_s:.0f} s:\n{out[-3000:]}")
    return proc.returncode, out, proc.pid


def _exists(kind: str, name: str) -> bool:
    done = subprocess.run(["podman", kind, "exists", name], capture_output=True, check=False)
    return done.returncode == 0


def _assert_cleaned_up(out: str, pid: int, tag: str) -> None:
    assert not _exists("container", f"polygon-sink-image-check-{pid}"), out
    assert not _exists("image", tag), out
    (mnt,) = re.findall(r"mounted at (\S+)", out)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f" {mnt} " not in mounts and f" {mnt}/" not in mounts, out


@pytest.mark.integration
def test_the_image_builds_and_runs_from_its_own_files() -> None:
    _tools_ready()
    tag = f"localhost/polygon-sink-test:{os.getpid()}"
    code, out, pid = _run_image("--tag", tag, "--remove")
    assert code == 0, out[-4000:]
    for name in CHECKS:
        assert re.search(rf"^image: ok   {re.escape(name)} ", out, flags=re.M), out[-4000:]
    assert "FAIL" not in out
    assert f"image: {len(CHECKS)} of {len(CHECKS)} checks passed" in out
    assert re.search(rf"^image: {re.escape(tag)}: [\d.]+ MB \(base ", out, flags=re.M), out
    _assert_cleaned_up(out, pid, tag)


@pytest.mark.integration
def test_a_failing_check_fails_the_script_and_everything_is_cleaned_up(tmp_path) -> None:
    _tools_ready()
    text = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER .*$", text, flags=re.M)
    assert user is not None
    dockerfile = tmp_path / "Dockerfile.root"
    dockerfile.write_text(text.replace(user.group(0), "USER root"))
    tag = f"localhost/polygon-sink-test-root:{os.getpid()}"
    code, out, pid = _run_image("--tag", tag, "--remove", "--file", str(dockerfile))
    assert code == 1, out[-4000:]
    assert re.search(r"^image: FAIL user .*root", out, flags=re.M), out[-4000:]
    assert re.search(r"^image: ok   help ", out, flags=re.M), out[-4000:]  # the rest still ran
    assert f"image: {len(CHECKS) - 1} of {len(CHECKS)} checks passed" in out
    _assert_cleaned_up(out, pid, tag)


def _tree(root: Path, user: str = "10001:10001") -> ImageRoot:
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nsink:x:10001:10001::/app:/x\n")
    site = root / "opt/venv/lib/python3.11/site-packages"
    (site / "polygon_core").mkdir(parents=True)
    (site / "polygon_core/__init__.py").write_text("")
    (root / "opt/venv/pyvenv.cfg").write_text("home = /usr/bin\n")
    config = {"Config": {"User": user, "Env": ["PATH=/opt/venv/bin"], "WorkingDir": "/app"}}
    return ImageRoot(root, config)


def test_the_file_check_passes_a_clean_tree_and_names_each_stray_file(tmp_path) -> None:
    args = argparse.Namespace()
    image = _tree(tmp_path / "clean")
    assert "no .venv" in check_files(image, args)
    assert (image.root / "app").is_dir()  # the working directory, as a runtime makes it
    strays = {
        "copies of repository files": ("app/helpers.py", (ROOT / "tests/helpers.py").read_text()),
        "virtualenv files": ("app/.venv/pyvenv.cfg", "home = /x\n"),
        "dev-only distributions": ("opt/venv/lib/python3.11/site-packages/pytest/x.py", ""),
        "holds ['tests']": ("opt/venv/lib/python3.11/site-packages/tests/x.py", ""),
        "/src is in the image": ("src/x.py", ""),
        "/app/.env is in the image": ("app/.env", "POLYGON_API_KEY=x\n"),
    }
    for i, (problem, (path, content)) in enumerate(strays.items()):
        image = _tree(tmp_path / str(i))
        (image.root / path).parent.mkdir(parents=True, exist_ok=True)
        (image.root / path).write_text(content)
        with pytest.raises(CheckFailed, match=re.escape(problem)):
            check_files(image, args)


def test_the_user_check_refuses_root_and_unknown_users(tmp_path) -> None:
    args = argparse.Namespace()
    assert "uid 10001" in check_user(_tree(tmp_path / "a", "sink"), args)
    with pytest.raises(CheckFailed, match="uid 0"):
        check_user(_tree(tmp_path / "b", "root"), args)
    with pytest.raises(CheckFailed, match="not in the image"):
        _tree(tmp_path / "c", "nobody")
    image = _tree(tmp_path / "d")
    with pytest.raises(CheckFailed, match="no HEALTHCHECK"):
        image.healthcheck_argv()
