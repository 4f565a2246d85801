"""`ern serve`: the HTTP service, and its worker child process (api.background)."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

import typer

from api.settings import Settings

if TYPE_CHECKING:
    from api.graphs import GraphStore

WORKER_STARTUP_S = 120


def serve(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8000, help="TCP port"),
    workers: int = typer.Option(
        1,
        min=1,
        help="uvicorn processes; the outbox and escalation workers run beside them in one "
        "child process (see ERN_WORKER_PROCESS and ERN_RUN_WORKERS)",
    ),
    access_log: bool = typer.Option(
        True, help="log one line per request (route template, status, duration; ERN_ACCESS_LOG)"
    ),
) -> None:
    """Run the HTTP service (embedded PostGIS unless ERN_DATABASE_URL is set)."""
    import uvicorn

    from api.background.supervisor import WorkerProcess
    from api.logs import configure

    _refuse_busy_port(host, port)
    if not access_log:
        os.environ["ERN_ACCESS_LOG"] = "false"  # also for the processes uvicorn spawns
    settings = Settings()
    # ERN_LOG_FORMAT, redacted either way; uvicorn's own loggers go through the same handler.
    # The app logs each request itself (route template, request id), never uvicorn: its
    # access line names the raw path and query.
    configure(settings.log_format)
    _share_metrics(settings)
    from api.graphs import no_graphs_reason

    if not settings.allow_no_graphs and (reason := no_graphs_reason(settings)) is not None:
        typer.echo(f"ern serve: {reason}", err=True)
        raise typer.Exit(2)
    child = None
    graphs = None
    if settings.run_workers and settings.worker_process:
        # The child would race the server over the embedded cluster, migrations, graph builds.
        graphs = _prepare_shared_state(settings)
        child = WorkerProcess()
        child.start()
        # The server processes (also those uvicorn spawns, which read the environment) leave
        # delivery and escalation to the child.
        os.environ["ERN_RUN_WORKERS"] = "false"
        settings = settings.model_copy(update={"run_workers": False})
    elif workers > 1:
        _prepare_shared_state(settings)
    banner = f"ern serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)"
    try:
        if workers == 1:
            from api.main import create_app

            # The graphs just prepared, not loaded a second time by the lifespan.
            application = create_app(settings, graphs=graphs)
            typer.echo(banner)
            uvicorn.run(
                application,
                host=host,
                port=port,
                log_level="info",
                access_log=False,
                log_config=None,  # configure() above
            )
            return
        typer.echo(f"{banner}, {workers} worker processes")
        # Worker processes are spawned: each imports the factory and reads the environment.
        uvicorn.run(
            "api.main:app_from_env",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="info",
            access_log=False,
            log_config=_worker_log_config(settings.log_format),
            # A worker loads the graphs at start-up; uvicorn's default 5 s would kill it mid-way.
            timeout_worker_healthcheck=WORKER_STARTUP_S,
        )
    finally:
        if child is not None:
            child.stop()


def _refuse_busy_port(host: str, port: int) -> None:
    """Exit with a message before starting anything if host:port cannot be listened on."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        typer.echo(
            f"ern serve: cannot listen on {host}:{port}: {exc.strerror or exc} "
            f"(another server there? pick a free one with --port)",
            err=True,
        )
        raise typer.Exit(1) from None


def _share_metrics(settings: Settings) -> None:
    """One metrics directory for the server processes and the worker child (/metrics sums them).

    Set before prometheus_client is imported (it picks its storage then); emptied at each
    start so that counters of a previous run are not added. An operator's own
    PROMETHEUS_MULTIPROC_DIR is kept as it is.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    directory = settings.var_dir / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _prepare_shared_state(settings: Settings) -> GraphStore | None:
    """Secret, embedded cluster, schema and graphs made once before other processes race."""
    # Returns the graphs when it loaded them (embedded default or ERN_GRAPH_SOURCE).
    settings.secret_bytes()  # refuse placeholder secrets before spawning anything
    if settings.embedded:
        from api import database

        database.upgrade(database.resolve_database_url(settings))
    if settings.embedded or settings.graph_source is not None:
        from api.graphs import load_store

        return load_store(settings, build_missing=True)
    return None


def _worker_log_config(log_format: str = "text") -> dict[str, Any]:
    """What configure() sets up, as a dictConfig applied in every spawned worker process.

    One ern handler on the root (redacting, text or JSON); uvicorn's loggers keep no handler
    of their own and propagate to it, so their start-up lines and tracebacks are redacted too.
    """
    from api.logs import TEXT_FORMAT

    ern_formatter: dict[str, Any] = (
        {"()": "api.logs.JsonFormatter"}
        if log_format == "json"
        else {"()": "api.logs.RedactingFormatter", "fmt": TEXT_FORMAT}
    )
    uvicorn_loggers = ("uvicorn", "uvicorn.error", "uvicorn.access")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"ern": ern_formatter},
        "handlers": {
            "ern": {
                "class": "logging.StreamHandler",
                "formatter": "ern",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            **{name: {"handlers": [], "propagate": True} for name in uvicorn_loggers},
            "alembic": {"level": "WARNING"},  # as configure(): quiet on every /healthz
        },
        "root": {"handlers": ["ern"], "level": "INFO"},
    }
