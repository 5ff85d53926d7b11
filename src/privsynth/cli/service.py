"""`privsynth serve`, `privsynth worker` and `privsynth users add|list|rotate|disable|enable`: the service from the
command line."""

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
# The defaults below are privsynth.service.jobs.DEFAULT_MAX_MINUTES and DEFAULT_MEMORY_MB (not imported here: the
# CLI loads without the service extra); tests/service/test_service_cli.py checks that they agree.
JobMinutesOpt = Annotated[
    float, typer.Option("--job-max-minutes", help="Wall-clock limit of one job; past it the job is stopped.")
]
JobMemoryOpt = Annotated[
    int,
    typer.Option(
        "--job-memory-mb", help="Address-space limit of one job's process, in MB (DuckDB and JAX reserve ~4 GB)."
    ),
]


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
    max_cells: Annotated[
        int, typer.Option(help="Largest upload in rows x columns (checked before the file is read).")
    ] = 20_000_000,
    allow_sql: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-sql",
            help="A database server custodians may register tables from, as driver://host:port (repeat for more). "
            "None by default; local database files (SQLite, DuckDB) are never allowed.",
        ),
    ] = None,
    secure_cookies: Annotated[
        bool, typer.Option(help="Send the session cookie over HTTPS only (use it behind HTTPS).")
    ] = False,
    job_max_minutes: JobMinutesOpt = 60.0,
    job_memory_mb: JobMemoryOpt = 8192,
) -> None:
    """Run the service: the web UI at http://HOST:PORT/, the API under /api (its routes at /docs)."""
    import uvicorn

    from privsynth.service import Store, create_app
    from privsynth.service.security import private_folder, write_private

    config = _config(
        data_dir,
        database,
        max_upload_bytes=max_upload_mb * 1024 * 1024,
        max_cells=max_cells,
        sql_allow=tuple(allow_sql or ()),
        secure_cookies=secure_cookies,
        job_max_minutes=job_max_minutes,
        job_memory_mb=job_memory_mb,
    )
    private_folder(config.data_dir)
    store = Store(config.url, data_dir=config.data_dir)
    if not store.has_users():
        admin, token = store.add_user("admin", "admin")
        path = write_private(config.data_dir / "admin.token", token + "\n")
        console.print(
            f"[bold]first start[/bold]: created user '{admin.name}' (admin). Its token is in {path} (readable by "
            "you only): sign in with it, then delete that file."
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
    job_max_minutes: JobMinutesOpt = 60.0,
    job_memory_mb: JobMemoryOpt = 8192,
) -> None:
    """Run queued jobs of the service (as many worker processes as you like share one database)."""
    from privsynth.service import Store
    from privsynth.service.jobs import Worker

    config = _config(
        data_dir, database, stale_after=stale_after, job_max_minutes=job_max_minutes, job_memory_mb=job_memory_mb
    )
    runner = Worker(
        Store(config.url, data_dir=config.data_dir),
        config.data_dir,
        heartbeat=config.heartbeat,
        stale_after=config.stale_after,
        max_minutes=config.job_max_minutes,
        memory_mb=config.job_memory_mb,
    )
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
    from privsynth.service.security import private_folder

    config = _config(data_dir, database)
    private_folder(config.data_dir)
    user, token = Store(config.url).add_user(name, role)
    console.print(f"added {user.name} ({user.role}); token, shown only now:")
    console.print(token, highlight=False, soft_wrap=True)


@users_app.command("rotate")
def users_rotate(
    name: Annotated[str, typer.Argument(help="User name.")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
) -> None:
    """Give a user a new token (printed once); the old token and their web sessions stop working at once."""
    from privsynth.service import Store

    config = _config(data_dir, database)
    token = Store(config.url).rotate_token(name)
    console.print(f"new token for {name}, shown only now:")
    console.print(token, highlight=False, soft_wrap=True)


@users_app.command("disable")
def users_disable(
    name: Annotated[str, typer.Argument(help="User name.")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
) -> None:
    """Disable a user: their token and web sessions stop working at once (grants and history stay)."""
    from privsynth.service import Store

    config = _config(data_dir, database)
    Store(config.url).set_disabled(name, True)
    console.print(f"disabled {name}")


@users_app.command("enable")
def users_enable(
    name: Annotated[str, typer.Argument(help="User name.")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    database: DatabaseOpt = None,
) -> None:
    """Enable a disabled user again (with the token they had)."""
    from privsynth.service import Store

    config = _config(data_dir, database)
    Store(config.url).set_disabled(name, False)
    console.print(f"enabled {name}")


@users_app.command("list")
def users_list(data_dir: DataDirOpt = DEFAULT_DATA_DIR, database: DatabaseOpt = None) -> None:
    """List the service's users."""
    from privsynth.service import Store

    config = _config(data_dir, database)
    store = Store(config.url)
    disabled = store.disabled()
    for user in store.users():
        console.print(f"{user.name}\t{user.role}" + ("\tdisabled" if user.name in disabled else ""))
