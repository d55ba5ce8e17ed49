"""Entry point of bakery's AWS emulator: moto's server, patched, on 127.0.0.1 only.

Started by tests/support/aws-emulator (which owns the venv); not meant to be run by hand
with another interpreter. Applies the patches in patches/ (unless BAKERY_EMULATOR_NO_PATCHES=1)
and wraps the WSGI app with an optional per-call latency for benchmarks.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

HOST = "127.0.0.1"  # never anything else: the emulator must not be reachable from outside

# EBS direct is a REST API: the action is in the method and path, not in an Action parameter.
EBS_ROUTES = [
    ("POST", re.compile(r"^/snapshots/completion/[^/]+/?$"), "CompleteSnapshot"),
    ("POST", re.compile(r"^/snapshots/?$"), "StartSnapshot"),
    ("PUT", re.compile(r"^/snapshots/[^/]+/blocks/\d+/?$"), "PutSnapshotBlock"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks/\d+/?$"), "GetSnapshotBlock"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks/?$"), "ListSnapshotBlocks"),
    ("GET", re.compile(r"^/snapshots/[^/]+/changedblocks/?$"), "ListChangedBlocks"),
]


def parse_delay_for(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            action, sep, ms = part.partition("=")
            if not sep or not action.strip() or not ms.strip().isdigit():
                raise SystemExit(f"aws-emulator: bad --delay-ms-for {part!r} (want ACTION=MS)")
            out[action.strip()] = int(ms)
    return out


def action_of(environ: dict) -> tuple[str | None, bytes | None]:
    """The API action of a request, and the body if it had to be read to find it."""
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "")
    for m, rx, name in EBS_ROUTES:
        if method == m and rx.match(path):
            return name, None
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" in qs:
        return qs["Action"][0], None
    ctype = environ.get("CONTENT_TYPE", "")
    if method == "POST" and ctype.startswith("application/x-www-form-urlencoded"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        form = parse_qs(body.decode("utf-8", "replace"))
        return (form["Action"][0] if "Action" in form else None), body
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.rsplit(".", 1)[-1], None
    return None, None


class DelayMiddleware:
    """Sleeps before each API call: `default_ms` for all, or the per-action value."""

    def __init__(self, app, default_ms: int, per_action: dict[str, int]):
        self.app = app
        self.default_ms = default_ms
        self.per_action = per_action

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            return self.app(environ, start_response)
        action, body = action_of(environ)
        if body is not None:
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        ms = self.per_action.get(action or "", self.default_ms)
        if ms > 0:
            time.sleep(ms / 1000.0)
        return self.app(environ, start_response)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="aws-emulator")
    p.add_argument("--port", type=int, default=int(os.environ.get("BAKERY_EMULATOR_PORT", 5055)))
    p.add_argument("--delay-ms", type=int,
                   default=int(os.environ.get("BAKERY_EMULATOR_DELAY_MS") or 0))
    p.add_argument("--delay-ms-for", action="append", default=[], metavar="ACTION=MS")
    a = p.parse_args(argv)
    per_action = parse_delay_for(
        [os.environ.get("BAKERY_EMULATOR_DELAY_MS_FOR", "")] + a.delay_ms_for)

    os.environ.setdefault("MOTO_PORT", str(a.port))
    # Tests must not depend on the hundreds of public AMIs moto preloads per region.
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

    import logging

    from werkzeug.serving import make_server

    # One log line per request is noise in CI; BAKERY_EMULATOR_LOG=1 brings it back.
    if os.environ.get("BAKERY_EMULATOR_LOG") != "1":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    if os.environ.get("BAKERY_EMULATOR_NO_PATCHES") == "1":
        print("aws-emulator: BAKERY_EMULATOR_NO_PATCHES=1: serving unpatched moto", file=sys.stderr)
    else:
        import patches

        applied = patches.apply_all()
        print(f"aws-emulator: {len(applied)} patches applied: {', '.join(applied)}",
              file=sys.stderr)

    app = DomainDispatcherApplication(create_backend_app)
    if a.delay_ms or per_action:
        app = DelayMiddleware(app, a.delay_ms, per_action)

    try:
        server = make_server(HOST, a.port, app, threaded=True,
                             request_handler=MotoRequestHandler)
    except OSError as e:
        print(f"aws-emulator: cannot listen on {HOST}:{a.port}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    port = server.server_address[1]
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    t = threading.Thread(target=server.serve_forever, name="moto-server", daemon=True)
    t.start()

    url = f"http://{HOST}:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore *_proxy env
    deadline = time.monotonic() + 30
    while not stop.is_set():
        try:
            opener.open(f"{url}/moto-api/data.json", timeout=2).read()
            break
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                print("aws-emulator: server did not answer in 30 s", file=sys.stderr)
                server.shutdown()
                return 1
            time.sleep(0.05)
    if not stop.is_set():
        print(f"ready on {url}", file=sys.stderr, flush=True)

    while not stop.wait(3600):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # Nothing to persist: skip the interpreter's ~2 s teardown of moto's module graph so a
    # SIGTERM'd emulator is gone (and its port free) at once.
    os._exit(code)
