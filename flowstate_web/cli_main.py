"""The ``flowstate-web`` command: serve the standalone admin, or the live demo.

``flowstate-web serve [--host 127.0.0.1] [--port 8000] [--demo] [--public] [--debug]``
serves with waitress (Flask's development server only with ``--debug``);
``flowstate-web demo`` serves the demo, public on 127.0.0.1 unless a password is set.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from flask import Flask

from .app import StartupError, create_app


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowstate-web", description="The flowstate-web admin, standalone."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("serve", "serve the admin (waitress)"),
        ("demo", "serve the live demo: seeded flows, a job queue, new flows every few seconds"),
    ):
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
        p.add_argument("--debug", action="store_true", help="Flask's debug server instead")
        p.add_argument("--threads", type=int, default=8, help="waitress threads (default 8)")
        if name == "serve":
            p.add_argument("--demo", action="store_true", help="run the live demo too")
            p.add_argument(
                "--public", action="store_true", help="no login (only allowed on 127.0.0.1)"
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowstate-web`` command line; return the exit status."""
    args = _parser().parse_args(argv)
    demo = args.command == "demo" or bool(getattr(args, "demo", False))
    public = bool(getattr(args, "public", False))
    if args.command == "demo" and not os.environ.get("FLOWSTATE_ADMIN_PASSWORD"):
        public = True
    overrides: dict[str, Any] = {"FLOWSTATE_BIND_HOST": args.host}
    if demo:
        overrides["FLOWSTATE_DEMO"] = True
    if public:
        overrides["FLOWSTATE_PUBLIC"] = True
    try:
        app = create_app(overrides)
    except StartupError as exc:
        print(f"flowstate-web: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("huey").setLevel(logging.WARNING)  # one line per job is too chatty
    url = f"http://{_url_host(args.host)}:{args.port}{app.config['FLOWSTATE_URL_PREFIX'].rstrip('/')}/"
    print(f"flowstate-web: admin at {url}", flush=True)
    if app.config.get("FLOWSTATE_PUBLIC"):
        print(
            f"flowstate-web: PUBLIC: no login; reachable from this machine only ({args.host})",
            flush=True,
        )
    return _serve(app, args.host, args.port, demo=demo, debug=args.debug, threads=args.threads)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):  # noqa: S104 - only to print a clickable URL
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _serve(app: Flask, host: str, port: int, *, demo: bool, debug: bool, threads: int) -> int:
    runner = None
    if demo:
        from .demo.runner import DemoRunner

        runner = DemoRunner(app)
        runner.start()
        print("flowstate-web: demo running (job queue consumer in this process)", flush=True)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if debug:
            app.run(host=host, port=port, debug=True, use_reloader=False)
        else:
            from waitress import serve

            serve(app, host=host, port=port, threads=threads)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if runner is not None:
            print("flowstate-web: stopping the demo's job queue...", flush=True)
            runner.stop()
    return 0


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
