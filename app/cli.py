"""The ``unlearn`` command line: serve, migrate, bootstrap, train, run a worker."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.core.config import ConfigError, get_settings

cli = typer.Typer(help="Unlearning-as-a-service.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_cli = typer.Typer(help="Database migrations.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")


def _settings():
    try:
        return get_settings()
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    settings = _settings()
    if workers > 1 and settings.embedded_worker and settings.database_url.startswith("sqlite"):
        typer.echo("note: with several API processes on SQLite, each runs an embedded worker; "
                   "claims stay exclusive, but prefer PostgreSQL and `unlearn worker`.", err=True)
    uvicorn.run("app.main:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=settings.log_level)


@db_cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default head)."""
    from app.db.migrations import upgrade

    settings = _settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}")


@cli.command()
def bootstrap() -> None:
    """Register the shipped base model as version 1 if no version exists yet."""
    from app.core.context import build_context
    from app.registry.registration import BaseModelError, ensure_base_version

    settings = _settings()
    _configure_logging(settings.log_level)
    ctx = build_context(settings)
    try:
        row = ensure_base_version(ctx, settings.base_model_path)
    except BaseModelError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    finally:
        ctx.close()
    if row is None:
        typer.echo("a model version already exists; nothing to do")
    else:
        typer.echo(f"registered base model as version {row.version} "
                   f"(test accuracy {row.metrics['test']['accuracy']:.4f})")


@cli.command()
def train(
    seed: Annotated[int, typer.Option()] = 0,
    epochs: Annotated[int, typer.Option(min=1)] = 2,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    learning_rate: Annotated[float, typer.Option(min=1e-6)] = 2e-3,
    register: Annotated[bool, typer.Option(help="Register the result as a new version.")] = True,
    export: Annotated[Path | None, typer.Option(
        help="Also write weights + model card to this .safetensors path.")] = None,
) -> None:
    """Train the CNN on the full MNIST training split and register it as a base version."""
    from app.core.context import build_context
    from app.ml.training import TrainingRecipe
    from app.registry.registration import register_model
    from app.ml.base_model import export_model, train_base_model

    settings = _settings()
    _configure_logging(settings.log_level)
    ctx = build_context(settings)
    try:
        recipe = TrainingRecipe(seed=seed, epochs=epochs, batch_size=batch_size,
                                learning_rate=learning_rate)
        state, card = train_base_model(ctx.data.get(), recipe, ctx.device)
        typer.echo(f"test accuracy {card['test_accuracy']:.4f}")
        if export is not None:
            export_model(state, card, export)
            typer.echo(f"wrote {export} and {export.with_suffix('.json')}")
        if register:
            row = register_model(ctx, state, model_card=card, actor="cli:train",
                                 params=recipe.to_dict())
            typer.echo(f"registered as version {row.version}")
    finally:
        ctx.close()


@cli.command()
def worker(
    poll_interval: Annotated[float, typer.Option(min=0.05)] = 1.0,
) -> None:
    """Run a worker that executes queued forget requests until interrupted.

    SIGTERM or Ctrl-C: stop claiming, let the request in hand finish for up to
    UNLEARN_SHUTDOWN_GRACE_S, then release it to the queue; a second signal releases it at
    once. Any number of workers may run against one database."""
    import signal

    from app.core.context import build_context
    from app.forgetting.worker import Notifier, Worker

    settings = _settings()
    _configure_logging(settings.log_level)
    ctx = build_context(settings)
    loop = Worker(ctx, Notifier(), poll_interval=poll_interval)
    signals = {"count": 0}

    def on_signal(signum, _frame) -> None:
        signals["count"] += 1
        logging.getLogger("unlearn.worker").info(
            "signal %s: %s", signum,
            "stopping after the current request" if signals["count"] == 1
            else "releasing the current request")
        loop.request_stop(grace_s=None if signals["count"] == 1 else 0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        loop.run_forever()  # warms up (data, model, features), logs 'ready', polls
    finally:
        ctx.close()


@cli.command()
def config() -> None:
    """Print the effective configuration."""
    typer.echo(json.dumps(_settings().model_dump(mode="json"), indent=2))


def main() -> None:
    try:
        cli()
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
