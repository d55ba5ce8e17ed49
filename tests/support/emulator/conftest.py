"""Fixtures: start tests/support/aws-emulator on a free port, boto3 clients pointed at it.

Nothing here may reach real AWS: every client gets endpoint_url and fake credentials, and the
environment is scrubbed of profiles/metadata lookups before boto3 is imported.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
})
for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(var, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull

import boto3  # noqa: E402
import pytest  # noqa: E402
from botocore.config import Config  # noqa: E402

LAUNCHER = Path(__file__).resolve().parent.parent / "aws-emulator"

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # The emulator gets SIGTERM if pytest dies, even by SIGKILL: no stray server.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STARTED: list["Emulator"] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """On failure, show what the emulators logged (server-side tracebacks)."""
    if exitstatus == 0:
        return
    for e in STARTED:
        text = "".join(e.stderr)
        if "Traceback" in text or e.proc.returncode not in (0, None):
            terminalreporter.write_sep("-", f"emulator on port {e.port} stderr (tail)")
            terminalreporter.write_line(text[-6000:])


class Emulator:
    def __init__(self, *args: str, env: dict[str, str] | None = None):
        STARTED.append(self)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [str(LAUNCHER), "--port", str(self.port), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=full_env, preexec_fn=_die_with_parent, text=True,
        )
        self.stderr: list[str] = []
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.stderr.append(line)
                if line.startswith("ready on "):
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 180  # the first run may build the venv
        while not ready.wait(0.1):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("emulator not ready:\n" + "".join(self.stderr))
        if self.proc.poll() is not None:
            raise RuntimeError("emulator exited:\n" + "".join(self.stderr))

    def client(self, service: str, region: str = "us-east-1"):
        return boto3.client(
            service, region_name=region, endpoint_url=self.url,
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 1, "mode": "standard"},
                          read_timeout=30, connect_timeout=5),
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def emu():
    e = Emulator()
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture
def ec2(emu):
    return emu.client("ec2")


@pytest.fixture
def ebs(emu):
    return emu.client("ebs")
