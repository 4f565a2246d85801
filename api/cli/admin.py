"""`ern admin`: create coordinators and rotate or revoke tokens, straight against the database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api import database
from api.errors import ErnError, describe_validation
from api.settings import Settings

admin_app = typer.Typer(help="Accounts: coordinators and tokens", no_args_is_help=True)

HandleOption = Annotated[str, typer.Option("--handle", help="the member's handle")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def _session() -> Iterator[tuple[Session, Settings]]:
    """One committed transaction on the configured database (the embedded one is migrated first)."""
    settings = Settings()
    url = database.resolve_database_url(settings)
    if settings.embedded:
        database.upgrade(url)
    engine = database.make_engine(url, pool_size=1)
    try:
        status = database.schema_status(engine)
        if not status["up_to_date"]:
            current, head = status["current"], status["head"]
            msg = f"the schema is at {current}, not {head}: run `ern db upgrade`"
            raise _fail(msg)
        with database.transaction(database.make_session_factory(engine)) as session:
            yield session, settings
    except ErnError as exc:
        raise _fail(str(exc)) from None
    except SQLAlchemyError as exc:
        raise _fail(f"database error: {type(exc).__name__}: {exc}") from None
    finally:
        engine.dispose()


@admin_app.command("create-coordinator")
def create_coordinator(handle: HandleOption) -> None:
    """Create a coordinator account; its bearer token is the last line of the output."""
    from api.members import service

    try:
        with _session() as (session, settings):
            member, token = service.create_coordinator(session, settings, handle=handle)
    except ValidationError as exc:
        raise _fail(describe_validation(exc.errors()), code=2) from None
    typer.echo(f"created coordinator {member.handle} (id {member.id}); its token, shown once:")
    typer.echo(token)


@admin_app.command("rotate-token")
def rotate_token(handle: HandleOption) -> None:
    """Revoke every token of a member and print a new one (last line of the output)."""
    from api.members import service

    with _session() as (session, _):
        member = service.member_by_handle(session, handle)
        token = service.rotate_token(session, member, actor=None, now=datetime.now(UTC))
    typer.echo(f"revoked the tokens of {handle}; the new token, shown once:")
    typer.echo(token)


@admin_app.command("revoke-token")
def revoke_token(handle: HandleOption) -> None:
    """Revoke every token of a member: it cannot call the API until given a new one."""
    from api.members import service

    with _session() as (session, _):
        member = service.member_by_handle(session, handle)
        count = service.revoke_tokens(session, member, actor=None, now=datetime.now(UTC))
    typer.echo(f"revoked {count} token(s) of {handle}")
