"""Run the ``aet`` command line in a subprocess, the way a user or a daemon manager would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.conftest import REPO


def aet_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a subprocess: offline hub, its own AET home, quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AET_") or k == "AET_SHARED_DATA"}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        AET_HOME=str(home),
        AET_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def aet_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "aet.pipeline.cli", *args]


def run_aet(args: Sequence[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(aet_cmd(*args), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def start_aet(args: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``aet ARGS`` in the background, its output going to ``log`` (the child keeps the file open)."""
    with open(log, "wb") as out:
        return subprocess.Popen(aet_cmd(*args), env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll an observable condition until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} while waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
