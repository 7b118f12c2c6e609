"""The ``flowstate-web`` command: serve the standalone admin, the live demo, or a worker.

``flowstate-web serve [--host 127.0.0.1] [--port 8000] [--demo] [--public] [--debug]``
serves with waitress (Flask's development server only with ``--debug``);
``flowstate-web demo`` serves the demo, public on 127.0.0.1 unless a password is set;
``flowstate-web worker [--demo] [--threads 2]`` runs the job queue's consumer and the outbox
relay in this process (start it as often as you like, on as many machines).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from flask import Flask

from .app import StartupError, create_app


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowstate-web",
        description="The flowstate-web admin, standalone.",
        epilog="Also every `flask flowstate` command on this app's database: flowstate-web"
        " list | show | retry | lint | types | ... (each with --help; see docs/cli.md).",
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
        p.add_argument(
            "--no-worker",
            action="store_true",
            help="demo: run no job consumer here (start `flowstate-web worker` processes)",
        )
    w = sub.add_parser(
        "worker",
        help="run the job queue's consumer and the outbox relay (no web server)",
        description="Run the huey consumer and the outbox relay in this process.",
    )
    w.add_argument("--demo", action="store_true", help="run the demo's jobs")
    w.add_argument("--threads", type=int, default=2, help="consumer threads (default 2)")
    w.add_argument(
        "--relay-interval",
        type=float,
        default=5.0,
        help="seconds between relay rounds (default 5)",
    )
    w.add_argument(
        "--migrate",
        action="store_true",
        help="apply the migrations first (default: the admin does)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowstate-web`` command line; return the exit status."""
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw and raw[0] not in ("serve", "demo") and _is_flask_command(raw[0]):
        return _flask_command(raw)
    args = _parser().parse_args(argv)
    if args.command == "worker":
        return _worker(args)
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
    return _serve(
        app,
        args.host,
        args.port,
        demo=demo,
        debug=args.debug,
        threads=args.threads,
        consumer=not args.no_worker,
    )


def _is_flask_command(name: str) -> bool:
    import click

    from .cli import flowstate_cli

    return name in flowstate_cli.list_commands(click.Context(flowstate_cli))


def _flask_command(argv: list[str]) -> int:
    """Run ``flask flowstate <argv>`` on the standalone app (``flowstate-web list ...``)."""
    from .cli import flowstate_cli

    overrides: dict[str, Any] = {}
    if not os.environ.get("FLOWSTATE_ADMIN_PASSWORD"):
        # No page is served, so no login either: a throw-away password satisfies the
        # app's access check without declaring it public.
        overrides["FLOWSTATE_ADMIN_PASSWORD"] = secrets.token_urlsafe(24)
    try:
        app = create_app(overrides)
    except StartupError as exc:
        print(f"flowstate-web: {exc}", file=sys.stderr)
        return 2
    with app.app_context():
        try:
            flowstate_cli.main(args=argv, prog_name="flowstate-web")
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):  # noqa: S104 - only to print a clickable URL
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _serve(
    app: Flask, host: str, port: int, *, demo: bool, debug: bool, threads: int, consumer: bool
) -> int:
    runner = None
    if demo:
        from .demo.runner import DemoRunner

        runner = DemoRunner(app, consumer=consumer)
        runner.start()
        where = "in this process" if consumer else "in `flowstate-web worker` processes"
        print(f"flowstate-web: demo running (jobs run {where})", flush=True)
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


def _worker(args: argparse.Namespace) -> int:
    """Run the app's huey consumer (in the foreground) and the outbox relay (a thread)."""
    from .queues.huey import HueyQueue
    from .worker import PeriodicThread

    overrides: dict[str, Any] = {"FLOWSTATE_AUTO_MIGRATE": bool(args.migrate)}
    if args.demo:
        overrides["FLOWSTATE_DEMO"] = True
    if not os.environ.get("FLOWSTATE_ADMIN_PASSWORD"):
        # A worker serves no pages; the standalone app only insists on a login for those.
        overrides["FLOWSTATE_ADMIN_PASSWORD"] = secrets.token_hex(16)
    try:
        app = create_app(overrides)
    except StartupError as exc:
        print(f"flowstate-web: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    queue = app.extensions["flowstate"].queue
    if not isinstance(queue, HueyQueue):
        print(
            "flowstate-web: worker: no huey queue is configured (set FLOWSTATE_QUEUE=huey, or"
            " --demo); for Celery run `celery -A yourapp.celery worker` and"
            " `flask flowstate relay --loop`",
            file=sys.stderr,
        )
        return 2
    if args.demo:
        from .demo.runner import quiet_api_errors

        quiet_api_errors()
    queue.register()
    relay = PeriodicThread(app, args.relay_interval)
    relay.start()
    consumer = queue.huey.create_consumer(
        workers=max(1, args.threads), worker_type="thread", periodic=False, max_delay=0.5
    )
    print(
        f"flowstate-web: worker {os.getpid()}: {args.threads} thread(s) on"
        f" {type(queue.huey).__name__} {queue.huey.name!r}; relay every"
        f" {args.relay_interval:g}s",
        flush=True,
    )
    try:
        consumer.run()  # returns on SIGTERM / SIGINT (huey's own handlers)
    finally:
        relay.stop()
    return 0
