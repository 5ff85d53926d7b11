"""`privsynth serve`, `privsynth worker` and `privsynth users add|list`: the service from the command line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from privsynth.cli._app import app, console
from privsynth.errors import ParameterError

logger = logging.getLogger(__name__)

users_app = typer.Typer(help="Users of the privsynth service.", no_args_is_help=True)
app.add_typer(users_app, name="users")

DataDirOpt = Annotated[
    Path,
    typer.Option("--data-dir", help="Folder for uploaded datasets, releases and (by default) the database."),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option("--database", help="SQLAlchemy URL of the service database (default: DATA_DIR/service.sqlite)."),
]
DEFAULT_DATA_DIR = Path("~/.privsynth/service")


def _config(data_dir: Path, database: str | None, **options: Any) -> Any:
    try:
        from privsynth.service import ServiceConfig
    except ImportError as exc:
        raise ParameterError(
            f"the service needs the 'service' extra (pip install 'privsynth[service]'): {exc.name} is missing"
        ) from None
    return ServiceConfig(data_dir=data_dir, database_url=database, **options)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    worker: Annotated[
        bool, typer.Option(help="Run a worker in this process (--no-worker: run `privsynth worker`).")
    ] = True,
    max_upload_mb: Annotated[int, typer.Option(help="Largest upload accepted, in MB.")] = 512,
) -> None:
    """Run the service: the web UI at http://HOST:PORT/, the API under /api (spec at /docs)."""
    import uvicorn

    from privsynth.service import Store, create_app

    config = _config(data_dir, database, max_upload_bytes=max_upload_mb * 1024 * 1024)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(config.url)
    if not store.has_users():
        admin, token = store.add_user("admin", "admin")
        console.print(
            f"[bold]first start[/bold]: created user '{admin.name}' (admin). Its token, shown only now:\n{token}"
        )
    store.close()
    console.print(f"privsynth service on http://{host}:{port}/ (data in {config.data_dir})")
    uvicorn.run(create_app(config, worker=worker), host=host, port=port, log_level="warning")


@app.command("worker")
def worker_command(
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
    once: Annotated[bool, typer.Option(help="Run at most one queued job, then exit.")] = False,
    stale_after: Annotated[float, typer.Option(help="Seconds without a heartbeat before a job is declared dead.")] = 60,
) -> None:
    """Run queued jobs of the service (as many worker processes as you like share one database)."""
    from privsynth.service import Store
    from privsynth.service.jobs import Worker

    config = _config(data_dir, database, stale_after=stale_after)
    runner = Worker(Store(config.url), config.data_dir, heartbeat=config.heartbeat, stale_after=config.stale_after)
    console.print(f"worker {runner.name} on {config.data_dir}")
    if once:
        ran = runner.run_once()
        console.print("ran one job" if ran else "no queued job")
        return
    try:
        runner.run_forever()
    except KeyboardInterrupt:
        runner.stop()


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name (no spaces).")],
    role: Annotated[str, typer.Option(help="admin, custodian or analyst.")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
) -> None:
    """Add a user and print their API token (shown once; only its hash is stored)."""
    from privsynth.service import Store

    config = _config(data_dir, database)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    user, token = Store(config.url).add_user(name, role)
    console.print(f"added {user.name} ({user.role}); token, shown only now:")
    console.print(token, highlight=False, soft_wrap=True)


@users_app.command("list")
def users_list(data_dir: DataDirOpt = DEFAULT_DATA_DIR, database: DatabaseOpt = None) -> None:
    """List the service's users."""
    from privsynth.service import Store

    config = _config(data_dir, database)
    for user in Store(config.url).users():
        console.print(f"{user.name}\t{user.role}")
