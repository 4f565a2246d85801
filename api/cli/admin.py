"""`ern admin`: coordinators, tokens and the secret key, straight against the database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api import database
from api.errors import ErnError, describe_validation
from api.settings import InsecureSettings, Settings

admin_app = typer.Typer(
    help="Accounts: coordinators, tokens and the secret key", no_args_is_help=True
)

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


@admin_app.command("rotate-secret-key")
def rotate_secret_key(
    old_key_file: Annotated[
        Path | None,
        typer.Option(
            "--old-key-file",
            help="file holding the old key (e.g. a copy of var/secret_key); "
            "else ERN_OLD_SECRET_KEY",
        ),
    ] = None,
    allow_connected: Annotated[
        bool,
        typer.Option(
            "--allow-connected",
            help="rotate even though other clients are connected to the database",
        ),
    ] = False,
) -> None:
    """Re-encrypt contacts under the new ERN_SECRET_KEY and tell webhook owners; one transaction."""
    from api.members.rotation import rotate_secret_key as rotate

    new_settings = Settings()
    old = _old_key(old_key_file, new_settings)
    if new_settings.secret_key is None:
        raise _fail("set ERN_SECRET_KEY to the new key (the old one comes from --old-key-file)", 2)
    old_settings = new_settings.model_copy(
        update={"secret_key": SecretStr(old), "old_secret_key": None}
    )
    try:
        new_settings.secret_bytes()
        old_settings.secret_bytes()
    except InsecureSettings as exc:
        raise _fail(str(exc), 2) from None
    with _session() as (session, _):
        others = database.other_connections(session)
        if others and not allow_connected:
            msg = (
                f"{others} other client(s) are connected to the database: stop ern serve and "
                "ern worker first (a process still holding the old key cannot read the "
                "re-encrypted contacts, and its deliveries would fail), or pass --allow-connected"
            )
            raise _fail(msg)
        done = rotate(session, old=old_settings, new=new_settings, now=datetime.now(UTC))
    typer.echo(
        f"re-encrypted the contact details of {done.contacts} member(s) and re-indexed "
        f"{done.phones} phone number(s)"
    )
    typer.echo(
        f"told {done.told} member(s) with a webhook that their signing key changed "
        f"({done.deliveries} deliveries queued, rotation {done.rotation_id})"
    )
    if new_settings.embedded:
        typer.echo(
            f"the embedded default reads {new_settings.var_dir / 'secret_key'} when "
            "ERN_SECRET_KEY is unset: put the new key there before starting ern without it"
        )
    typer.echo("start ern serve and ern worker with the new ERN_SECRET_KEY")


def _old_key(path: Path | None, settings: Settings) -> str:
    env = settings.old_secret_key.get_secret_value().strip() if settings.old_secret_key else ""
    if path is not None and env:
        raise _fail("give the old key once: --old-key-file or ERN_OLD_SECRET_KEY, not both", 2)
    if path is None:
        if not env:
            raise _fail("the old key is needed: --old-key-file FILE or ERN_OLD_SECRET_KEY", 2)
        return env
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise _fail(f"cannot read --old-key-file {path}: {exc.strerror or exc}", 2) from None
