"""The alembic migrations create exactly the schema the models describe, on
PostgreSQL and SQLite, and running them again changes nothing."""

from alembic import command

from streams.persistence.db import alembic_config


def test_migrations_match_the_models(database):
    database.migrate()  # a second time: nothing to do
    with database.engine.connect() as connection:
        command.check(alembic_config(connection))  # raises when models and schema differ
