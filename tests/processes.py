"""
Subprocesses for the tests that run real programs (twistd, the example
scripts): their output goes to files, they are waited on by polling the
reactor, and the L{start} fixture kills and reaps every one at the end.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import WAIT, sleep, within

ROOT = Path(__file__).resolve().parent.parent


def subprocess_env(*paths: Path) -> dict[str, str]:
    """This environment, with C{paths} and the repository first on PYTHONPATH."""
    extra = [str(p) for p in (*paths, ROOT)]
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(extra + inherited))


def twistd_command() -> list[str]:
    """How to run the twistd of this Python."""
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; run()"]


class Process:
    """A subprocess whose stdout and stderr go to files; waited on by polling."""

    def __init__(
        self, args: list[str], directory: Path, env: dict[str, str] | None = None
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.out_path = directory / "stdout.txt"
        self.err_path = directory / "stderr.txt"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(
                args,
                cwd=directory,
                env=env or subprocess_env(),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                # A shell starts a background job with SIGINT ignored, which
                # the child would inherit (and Twisted then leaves ignored):
                # the process gets the signals a foreground one would.
                preexec_fn=_default_signals,
            )

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def output(self) -> str:
        return self.stdout + self.err_path.read_text(errors="replace")

    async def wait_for(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """Wait (bounded) for C{pattern} to appear in the output."""

        async def poll() -> re.Match[str]:
            while (match := pattern.search(self.output())) is None:
                if self.popen.poll() is not None:
                    raise AssertionError(
                        f"{self.args} exited with {self.popen.returncode}:\n{self.output()}"
                    )
                await sleep(0.05)
            return match

        return await within(poll())  # type: ignore[no-any-return]

    async def exited(self, seconds: float = WAIT) -> int:
        """Wait (bounded) for the process to end; return its status."""

        async def poll() -> int:
            while self.popen.poll() is None:
                await sleep(0.02)
            return self.popen.returncode

        return await within(poll(), seconds)  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Kill the process if it still runs, and reap it."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=WAIT)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start subprocesses in directories of tmp_path; kill and reap them all at the end."""
    processes: list[Process] = []

    def start(*args: str | Path, env: dict[str, str] | None = None) -> Process:
        directory = tmp_path / f"process-{len(processes)}"
        process = Process([str(a) for a in args], directory, env)
        processes.append(process)
        return process

    try:
        yield start
    finally:
        for process in processes:
            process.stop()


def _default_signals() -> None:
    """In the child, before it runs: SIGINT as a process started from a terminal has it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
