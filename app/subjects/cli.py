"""``unlearn versions ...``: maintenance of superseded versions."""

from __future__ import annotations

from typing import Annotated

import typer

versions_cli = typer.Typer(help="Model versions: purge superseded artifacts.",
                           no_args_is_help=True)


@versions_cli.command("purge")
def versions_purge(
    superseded_older_than: Annotated[float, typer.Option(
        "--superseded-older-than", min=0, metavar="DAYS",
        help="Purge versions superseded at least this many days ago.")],
) -> None:
    """Delete the artifacts of versions that still hold erased data, keeping their rows,
    sha256, metrics and audit history. Production versions are never purged."""
    from app.cli import _configure_logging, _settings
    from app.core.context import build_context
    from app.subjects.purge import purge_superseded

    settings = _settings()
    _configure_logging(settings.log_level)
    ctx = build_context(settings)
    try:
        purged = purge_superseded(ctx, superseded_older_than, "cli:purge")
    finally:
        ctx.close()
    for model_name, version in purged:
        typer.echo(f"purged version {version} of {model_name!r}")
    typer.echo(f"{len(purged)} version(s) purged")
