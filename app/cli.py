"""The ``unlearn`` command line: serve, migrate, bootstrap, train, run a worker."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.core.config import ConfigError, get_settings

cli = typer.Typer(help="Unlearning-as-a-service.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_cli = typer.Typer(help="Database migrations.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")


def _find_shared_data() -> None:
    """As the Makefile does: without UNLEARN_DATA_DIR, a shared MNIST copy beside the
    checkout (``../shared/data/MNIST/raw``) is used, and the CLI says so."""
    if "UNLEARN_DATA_DIR" in os.environ:
        return
    shared = Path("..", "shared", "data")
    if (shared / "MNIST" / "raw").is_dir():
        os.environ["UNLEARN_DATA_DIR"] = str(shared.resolve())
        typer.echo(f"note: UNLEARN_DATA_DIR not set; using MNIST at {shared.resolve()}",
                   err=True)


def _settings():
    _find_shared_data()
    try:
        return get_settings()
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def _configure_logging(level: str, log_format: str = "text") -> None:
    from app.observability.logs import configure_logging

    configure_logging(level, log_format)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    from app.auth.service import SERVED_URL_VARIABLE

    settings = _settings()
    _configure_logging(settings.log_level, settings.log_format)  # uvicorn's startup lines
    # The first-admin-key banner, printed by the app at startup, names this address.
    shown_host = f"[{host}]" if ":" in host else host
    os.environ[SERVED_URL_VARIABLE] = f"http://{shown_host}:{port}"
    if workers > 1 and settings.embedded_worker and settings.database_url.startswith("sqlite"):
        typer.echo("note: with several API processes on SQLite, each runs an embedded worker; "
                   "claims stay exclusive, but prefer PostgreSQL and `unlearn worker`.", err=True)
    # Each process configures the structured logs in the app's startup (UNLEARN_LOG_FORMAT);
    # uvicorn's own access log is replaced by the app's, which carries the request ID.
    uvicorn.run("app.main:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=settings.log_level, log_config=None, access_log=False)


@db_cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default head)."""
    from app.db.migrations import upgrade

    settings = _settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}")


@db_cli.command("grant-app-role")
def db_grant_app_role(
    app_role: Annotated[str, typer.Argument(help="The (existing) role the service runs as.")],
    print_sql: Annotated[bool, typer.Option(
        "--print-sql", help="Print the statements instead of running them.")] = False,
    owner: Annotated[str, typer.Option(help="With --print-sql: the owner role.")] = "unlearn_owner",
    database: Annotated[str, typer.Option(help="With --print-sql: the database.")] = "unlearn",
) -> None:
    """PostgreSQL: as the owner (UNLEARN_DATABASE_URL), give APP_ROLE what the service
    needs and no more (INSERT/SELECT only on audit_log; it owns nothing). Run after every
    `unlearn db upgrade`."""
    from app.db.roles import app_role_statements, grant_app_role
    from app.db.session import make_engine

    try:
        if print_sql:
            for statement in app_role_statements(app_role, owner, database):
                typer.echo(statement + ";")
            return
        engine = make_engine(_settings().database_url)
        try:
            grant_app_role(engine, app_role)
        finally:
            engine.dispose()
    except ValueError as error:
        _fail(str(error), 2)
    typer.echo(f"granted the app role {app_role} its rights (audit_log: SELECT, INSERT)")


@cli.command()
def bootstrap(
    url: Annotated[str | None, typer.Option(
        help="Where the API will be served (e.g. http://127.0.0.1:8000), for the banner.")] = None,
) -> None:
    """Register the shipped base model as version 1 if no version exists yet; with no API
    key yet, create the first admin key and print it once."""
    from app.auth.service import announce_bootstrap_key, ensure_security
    from app.wiring import build_context
    from app.core.errors import ServiceError
    from app.datasets.service import ensure_mnist_dataset
    from app.ml.data import DataUnavailableError
    from app.registration import BaseModelError, ensure_base_version

    settings = _settings()
    _configure_logging(settings.log_level, settings.log_format)
    ctx = build_context(settings)
    try:
        ensure_mnist_dataset(ctx.db, settings)  # the zero-configuration dataset
        row = ensure_base_version(ctx, settings.base_model_path)
        token = ensure_security(ctx)  # the signing key and, the first time, an admin key
    except (BaseModelError, DataUnavailableError, ServiceError) as error:
        typer.echo(f"error: {getattr(error, 'message', error)}", err=True)
        raise typer.Exit(1) from None
    finally:
        ctx.close()
    if row is None:
        typer.echo("a model version already exists; nothing to do")
    else:
        typer.echo(f"registered base model as version {row.version} "
                   f"(test accuracy {row.metrics['test']['accuracy']:.4f})")
    announce_bootstrap_key(token, url)


@cli.command()
def train(
    model: Annotated[str | None, typer.Option(
        help="Model name to register under (default: UNLEARN_MODEL_NAME). A new name makes a "
             "new model on --dataset; an existing one gets a new version.")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Registered dataset to train on (default: the model's, or 'mnist').")] = None,
    arch: Annotated[str | None, typer.Option(
        help="Architecture: mnist-cnn, resnet18 or mobilenet-v3-small (default: the "
             "model's, or mnist-cnn).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    epochs: Annotated[int, typer.Option(min=1)] = 2,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    learning_rate: Annotated[float, typer.Option(min=1e-6)] = 2e-3,
    register: Annotated[bool, typer.Option(help="Register the result as a new version.")] = True,
    export: Annotated[Path | None, typer.Option(
        help="Also write weights + model card to this .safetensors path.")] = None,
    kind: Annotated[str, typer.Option(
        help="'cnn' (one network) or 'sisa' (an ensemble of shard networks).")] = "cnn",
    shards: Annotated[int, typer.Option(min=1, max=64, help="SISA: number of shards.")] = 5,
    slices: Annotated[int, typer.Option(min=1, max=16, help="SISA: slices per shard.")] = 3,
) -> None:
    """Train a network on a registered dataset's training split and register it as a new
    version of a model (version 1 of a new model)."""
    if kind not in ("cnn", "sisa"):
        typer.echo(f"error: --kind must be 'cnn' or 'sisa', not {kind!r}", err=True)
        raise typer.Exit(2)
    from app.wiring import build_context
    from app.core.errors import ServiceError
    from app.ml.training import TrainingRecipe

    settings = _settings()
    _configure_logging(settings.log_level, settings.log_format)
    ctx = build_context(settings)
    try:
        model_name, dataset_name, architecture = _model_identity(ctx, model, dataset, arch)
        if kind == "sisa":
            _train_sisa(ctx, model_name, dataset_name, architecture, seed, epochs, batch_size,
                        learning_rate, shards, slices)
            return
        from app.registry.base_model import export_model, train_base_model
        from app.registration import model_spec, register_model

        spec = model_spec(ctx, dataset_name, architecture)
        recipe = TrainingRecipe(seed=seed, epochs=epochs, batch_size=batch_size,
                                learning_rate=learning_rate)
        state, card = train_base_model(ctx.datasets.get(dataset_name), recipe, ctx.device,
                                       spec=spec, dataset_name=dataset_name)
        typer.echo(f"test accuracy {card['test_accuracy']:.4f}")
        if export is not None:
            export_model(state, card, export)
            typer.echo(f"wrote {export} and {export.with_suffix('.json')}")
        if register:
            row = register_model(ctx, state, model_card=card, actor="cli:train",
                                 model_name=model_name, dataset_name=dataset_name,
                                 architecture=architecture, params=recipe.to_dict())
            typer.echo(f"registered as version {row.version} of model {model_name!r}")
    except ServiceError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        ctx.close()


def _model_identity(ctx, model: str | None, dataset: str | None,
                    arch: str | None) -> tuple[str, str, str]:
    """(model, dataset, architecture): an existing model's own, or the options for a new
    one (default dataset 'mnist', architecture 'mnist-cnn')."""
    from app.registry.models import RegisteredModel
    from app.registration import check_model_name

    model_name = check_model_name(model or ctx.model_name)
    with ctx.db.session() as session:
        existing = session.get(RegisteredModel, model_name)
    if existing is not None:
        return model_name, dataset or existing.dataset_name, arch or existing.architecture
    return model_name, dataset or "mnist", arch or "mnist-cnn"


def _train_sisa(ctx, model_name: str, dataset_name: str, architecture: str, seed: int,
                epochs: int, batch_size: int, learning_rate: float, shards: int,
                slices: int) -> None:
    """SISA: ``epochs`` is the number of epochs per slice stage."""
    from app.ml.sisa import SisaRecipe, train_sisa
    from app.ml.training import accuracy
    from app.registration import model_spec, register_trained_model

    data = ctx.datasets.get(dataset_name)
    spec = model_spec(ctx, dataset_name, architecture)
    recipe = SisaRecipe(shards=shards, slices=slices, epochs_per_slice=epochs,
                        batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    with tqdm_progress(f"training SISA ({shards} shards x {slices} slices)") as progress:
        ensemble = train_sisa(data, recipe, ctx.device, progress=progress, spec=spec)
    test_accuracy = accuracy(ensemble, data.test_images, data.test_labels, ctx.device)
    typer.echo(f"test accuracy {test_accuracy:.4f}")
    card = {"kind": "sisa", "sisa_recipe": recipe.to_dict(), "class_names": list(data.class_names),
            "dataset_checksum": data.checksum, "test_accuracy": test_accuracy}
    row = register_trained_model(ctx, ensemble, model_card=card, actor="cli:train",
                                 model_name=model_name, dataset_name=dataset_name,
                                 method="train-sisa", params=recipe.to_dict())
    typer.echo(f"registered as version {row.version} of model {model_name!r} (kind sisa)")


models_cli = typer.Typer(help="Hosted models: list them, import weights trained elsewhere.",
                         no_args_is_help=True)
cli.add_typer(models_cli, name="models")


@models_cli.command("import")
def models_import(
    name: Annotated[str, typer.Argument(help="Model name (new, or an existing model).")],
    dataset: Annotated[str, typer.Option(help="Registered dataset the weights were trained on.")],
    arch: Annotated[str, typer.Option(help="Architecture of the weights.")],
    weights: Annotated[Path, typer.Option(help="A .safetensors file of the network's state.",
                                          exists=True, dir_okay=False)],
    card: Annotated[Path | None, typer.Option(
        help="Model card (JSON); default: WEIGHTS with .json, when present.")] = None,
) -> None:
    """Register weights trained elsewhere as a new version of NAME. Refused, with the reason,
    when the tensors don't fit the architecture or the dataset's classes, or the card names
    another dataset."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from app.wiring import build_context
    from app.core.errors import ServiceError
    from app.registration import register_model

    settings = _settings()
    _configure_logging(settings.log_level, settings.log_format)
    card_path = card or weights.with_suffix(".json")
    model_card = json.loads(card_path.read_text()) if card_path.exists() else {}
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        typer.echo(f"error: {weights} is not a readable safetensors file: {error}", err=True)
        raise typer.Exit(1) from None
    ctx = build_context(settings)
    try:
        row = register_model(ctx, state, model_card={**model_card, "imported_from": weights.name},
                             actor="cli:import", model_name=name, dataset_name=dataset,
                             architecture=arch, method="import",
                             params={"source": weights.name})
    except ServiceError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        ctx.close()
    typer.echo(f"registered {weights.name} as version {row.version} of model {name!r} "
               f"(test accuracy {row.metrics['test']['accuracy']:.4f})")


@models_cli.command("list")
def models_list() -> None:
    """Every hosted model with its dataset, architecture and production version."""
    from app.db.session import Database
    from app.registry.service import list_registered_models, version_count

    db = Database(_settings().database_url)
    try:
        with db.session() as session:
            for model in list_registered_models(session):
                typer.echo(f"{model.name}\tdataset={model.dataset_name}\t"
                           f"arch={model.architecture}\tproduction={model.production_version}\t"
                           f"versions={version_count(session, model.name)}")
    finally:
        db.dispose()


class tqdm_progress:
    """A progress bar fed with fractions in [0, 1]."""

    def __init__(self, description: str):
        from tqdm import tqdm

        self.bar = tqdm(total=1000, desc=description)

    def __enter__(self):
        def update(fraction: float) -> None:  # fractions of the whole run
            self.bar.n = int(1000 * fraction)
            self.bar.refresh()
        return update

    def __exit__(self, *exc) -> None:
        self.bar.close()


@cli.command()
def worker(
    queues: Annotated[str, typer.Option(
        help="Comma-separated job queues to take requests from: 'heavy' (methods that pass "
             "over the data: ssd, fisher, finetune, retrain, sisa), 'light' (output "
             "dampening), or both.")] = "heavy,light",
) -> None:
    """Run a procrastinate worker that executes forget requests until interrupted
    (PostgreSQL; with SQLite the API's in-process executor runs them).

    SIGTERM or Ctrl-C: stop taking requests, let the request in hand finish for up to
    UNLEARN_SHUTDOWN_GRACE_S, then release it to the queue. A worker that dies or stalls
    stops heartbeating; after UNLEARN_STALLED_AFTER_S another worker retries its request.
    Any number of workers may run against one database."""
    import asyncio

    from app.wiring import build_context
    from app.forgetting.execution import warm_up
    from app.forgetting.jobs import QUEUES, JobWorker
    from app.ml.data import DataUnavailableError

    from app.operations import start_operations

    chosen = [name.strip() for name in queues.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(QUEUES))
    if not chosen or unknown:
        raise typer.BadParameter(f"queues must be among {', '.join(QUEUES)}; got {queues!r}",
                                 param_hint="--queues")
    settings = _settings()
    _configure_logging(settings.log_level, settings.log_format)
    if not settings.uses_job_engine:
        _fail("unlearn worker needs PostgreSQL (UNLEARN_DATABASE_URL=postgresql+psycopg://...); "
              "with SQLite the API process runs forget requests itself", code=2)
    ctx = build_context(settings)
    # The webhook deliverer, and this process's metrics on its own port (the database's
    # figures are the API's to report).
    operations = start_operations(ctx, configure_logs=False, with_database_metrics=False,
                                  metrics_port=settings.worker_metrics_port)
    try:
        warm_up(ctx)  # data, production model and features before the first request
        asyncio.run(JobWorker(ctx, queues=chosen).run())  # logs 'ready', runs until signalled
    except DataUnavailableError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    finally:
        operations.stop()
        ctx.close()


@cli.command()
def config() -> None:
    """Print the effective configuration."""
    typer.echo(json.dumps(_settings().model_dump(mode="json"), indent=2))


# --- Security: API keys, audit log verification, certificates --------------------

keys_cli = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
audit_cli = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
certificate_cli = typer.Typer(help="Erasure certificates.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")
cli.add_typer(audit_cli, name="audit")
cli.add_typer(certificate_cli, name="certificate")


def _database():
    from app.db.session import Database

    return Database(_settings().database_url)


def _fail(message: str, code: int = 1):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Unique; the audit log's actor for this key.")],
    role: Annotated[list[str], typer.Option(
        help="admin, privacy_officer, auditor or client; repeat for several.")],
    expires_in_days: Annotated[float | None, typer.Option(min=0.001)] = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Print the key alone (nothing on stderr).")] = False,
) -> None:
    """Create a key and print it once (only its salted hash is stored). The key alone goes
    to stdout, so that KEY=$(unlearn keys create ...) captures it; the rest to stderr."""
    import datetime as dt

    from app.auth.service import create_key
    from app.core.errors import ServiceError
    from app.db.base import utcnow

    db = _database()
    expires = utcnow() + dt.timedelta(days=expires_in_days) if expires_in_days else None
    try:
        with db.session() as session:
            key, token = create_key(session, name=name, roles=role, created_by="cli",
                                    expires_at=expires)
    except ServiceError as error:
        _fail(error.message)
    finally:
        db.dispose()
    if not quiet:
        typer.echo(f"created key {key.name} (id {key.id}, roles {', '.join(key.roles)}"
                   + (f", expires {key.expires_at.isoformat()}" if key.expires_at else "")
                   + ")", err=True)
        typer.echo("the key (shown only now):", err=True)
    typer.echo(token)


@keys_cli.command("list")
def keys_list() -> None:
    """List keys (never the keys themselves)."""
    from app.auth.service import list_keys
    from app.db.base import utcnow

    db = _database()
    try:
        with db.session() as session:
            keys = list_keys(session)
    finally:
        db.dispose()
    now = utcnow()
    for key in keys:
        state = ("revoked" if key.revoked_at else
                 "expired" if key.expires_at and key.expires_at <= now else "active")
        typer.echo(f"{key.id}  {key.name:<24} {','.join(key.roles):<32} {state:<8} "
                   f"created {key.created_at:%Y-%m-%d %H:%M}"
                   + (f"  expires {key.expires_at:%Y-%m-%d %H:%M}" if key.expires_at else ""))


@keys_cli.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="The key's id or name.")]) -> None:
    """Revoke a key at once; it stays listed (and audited) as revoked."""
    from app.auth.service import revoke_key
    from app.core.errors import ServiceError

    db = _database()
    try:
        with db.session() as session:
            row = revoke_key(session, key, "cli")
    except ServiceError as error:
        _fail(error.message)
    finally:
        db.dispose()
    typer.echo(f"revoked {row.name} ({row.id})")


@keys_cli.command("matrix")
def keys_matrix(
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="Only routes under this path prefix.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", help="Leave out this path prefix.")] = None,
) -> None:
    """Print which role may call which route (Markdown), read from the routes themselves."""
    from app.auth.deps import role_matrix_markdown
    from app.main import create_app

    typer.echo(role_matrix_markdown(create_app(start_worker=False), only=tuple(only or ()),
                                    exclude=tuple(exclude or ())))


@audit_cli.command("verify")
def audit_verify(
    file: Annotated[Path | None, typer.Option(
        help="Verify a JSON-lines export (GET /audit-log/export) instead of the database.")
    ] = None,
    anchor: Annotated[str | None, typer.Option(
        help="SEQ:HASH recorded earlier (e.g. a certificate's audit_chain_head) that the "
             "chain must still contain.")] = None,
    public_key: Annotated[Path | None, typer.Option(
        help="The key that signed the checkpoints (PEM, or the JSON from GET "
             "/certificates/public-key); default the service's signing key file.")] = None,
) -> None:
    """Recompute the hash chain and check it against the latest signed checkpoint (the
    database's: not with --file); exit 0 when both hold, 1 naming what does not."""
    from app.audit.chain import ChainHead, verify_records
    from app.audit.export import read_jsonl
    from app.audit.service import verify_chain

    expected = None
    if anchor is not None:
        seq, _, digest = anchor.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            _fail("--anchor must be SEQ:HASH (a 64-digit sha256)", 2)
        expected = ChainHead(int(seq), digest)
    if file is not None:
        with open(file, encoding="utf-8") as handle:
            result = verify_records(read_jsonl(handle), anchor=expected)
        typer.echo(result.describe())
        raise typer.Exit(0 if result.intact else 1)
    from app.audit.checkpoints import check_against_checkpoint, make_checkpoint_store

    settings = _settings()
    key = _checkpoint_public_key(settings, public_key)
    store = make_checkpoint_store(settings)
    db = _database()
    try:
        with db.session() as session:
            result = verify_chain(session, expected)
            check = check_against_checkpoint(session, store.latest(), key, store.location)
    finally:
        db.dispose()
    typer.echo(result.describe())
    typer.echo(f"checkpoint ({store.location}): {check.finding}: {check.detail}")
    raise typer.Exit(0 if result.intact and check.ok else 1)


def _checkpoint_public_key(settings, public_key: Path | None):
    """The key that signs checkpoints: --public-key (PEM, or the JSON of GET
    /certificates/public-key), else the service's own signing key file."""
    from cryptography.hazmat.primitives import serialization

    from app.core.signing import load_public_key

    if public_key is not None:
        text = public_key.read_text(encoding="utf-8")
        return load_public_key(json.loads(text)["public_key_pem"]
                               if text.lstrip().startswith("{") else text)
    if not settings.signing_key_path.exists():
        _fail(f"no signing key at {settings.signing_key_path}: pass --public-key", 2)
    return serialization.load_pem_private_key(settings.signing_key_path.read_bytes(),
                                              password=None).public_key()


@certificate_cli.command("verify")
def certificate_verify(
    file: Annotated[Path, typer.Argument(help="A certificate (JSON) as served.")],
    public_key: Annotated[Path | None, typer.Option(
        help="The service's public key (PEM, or the JSON from GET /certificates/public-key).")
    ] = None,
) -> None:
    """Check a certificate offline: signature, audit entry hashes, result artifact."""
    from app.certificates.service import verify_certificate

    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        _fail(f"cannot read {file}: {error}", 2)
    trusted = None
    if public_key is not None:
        text = public_key.read_text(encoding="utf-8")
        trusted = json.loads(text)["public_key_pem"] if text.lstrip().startswith("{") else text
    checks = verify_certificate(document, trusted)
    for check in checks:
        typer.echo(f"[{'ok' if check.ok else 'FAIL'}] {check.name}: {check.message}")
    ok = all(check.ok for check in checks)
    typer.echo("certificate VALID" if ok else "certificate INVALID")
    raise typer.Exit(0 if ok else 1)


# --- Registered datasets (issue 9) ----------------------------------------------------

datasets_cli = typer.Typer(help="Registered datasets: register, list, show.",
                           no_args_is_help=True)
cli.add_typer(datasets_cli, name="datasets")


@datasets_cli.command("register")
def datasets_register(
    name: Annotated[str, typer.Argument(help="Unique and permanent name.")],
    format: Annotated[str, typer.Option("--format", help="idx, imagefolder or manifest.")],
    path: Annotated[str, typer.Option("--path", help=(
        "A directory (idx, imagefolder), or a .csv/.parquet manifest (a path or a URL)."))],
    classes: Annotated[str | None, typer.Option(
        "--classes", help="Class names in index order, comma-separated: a,b,c.")] = None,
) -> None:
    """Read, check and register a dataset (all or nothing; nothing is written on error)."""
    from app.core.errors import ServiceError
    from app.datasets.service import register_dataset

    settings = _settings()
    class_list = [part.strip() for part in classes.split(",")] if classes is not None else None
    db = _database()
    try:
        row, notes = register_dataset(db, settings.dataset_dir, name=name, format=format,
                                      path=path, classes=class_list, actor="cli")
    except ServiceError as error:
        _fail(error.message)
    finally:
        db.dispose()
    typer.echo(f"registered dataset {row.name} ({row.format}): {row.train_size} train / "
               f"{row.test_size} test images of {'x'.join(map(str, row.image_shape))}, "
               f"{len(row.class_names)} classes, {row.checksum}")
    for note in notes:
        typer.echo(f"converted {note}")


def _dataset_json(row) -> dict:
    from app.api.routes.datasets import to_read

    return to_read(row).model_dump(mode="json")


@datasets_cli.command("list")
def datasets_list() -> None:
    """List registered datasets."""
    from app.datasets.service import list_datasets

    db = _database()
    try:
        with db.session() as session:
            rows, _ = list_datasets(session, limit=10_000)
    finally:
        db.dispose()
    for row in rows:
        typer.echo(f"{row.name:<24} {row.format:<12} {row.train_size:>8} train {row.test_size:>7}"
                   f" test  {'x'.join(map(str, row.image_shape)):<10} "
                   f"{len(row.class_names):>4} classes  {row.checksum[:19]}")


@datasets_cli.command("show")
def datasets_show(name: Annotated[str, typer.Argument()]) -> None:
    """Print one dataset's record as JSON."""
    from app.core.errors import ServiceError
    from app.datasets.service import get_dataset

    db = _database()
    try:
        with db.session() as session:
            row = get_dataset(session, name)
    except ServiceError as error:
        _fail(error.message)
    finally:
        db.dispose()
    typer.echo(json.dumps(_dataset_json(row), indent=2))


shadows_cli = typer.Typer(help="Shadow models of the per-sample membership test.",
                          no_args_is_help=True)
cli.add_typer(shadows_cli, name="shadows")


@shadows_cli.command("train")
def shadows_train(
    model: Annotated[str | None, typer.Option(help="Model name (default UNLEARN_MODEL_NAME).")
                     ] = None,
    count: Annotated[int, typer.Option(min=2, max=1024, help="Shadow models in the bank.")] = 16,
    version: Annotated[int | None, typer.Option(
        help="A version of the lineage (default: the production version); the bank belongs "
             "to the lineage's root.")] = None,
    epochs: Annotated[int | None, typer.Option(
        min=1, help="Training epochs per shadow (default: the root's recipe).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the random halves.")] = 0,
) -> None:
    """Train the lineage's shadow bank: each shadow on a seeded random half of the training
    split, its statistics saved as it completes (rerun to resume after an interruption)."""
    from app.wiring import build_context
    from app.core.errors import ServiceError
    from app.verification.service import train_shadow_bank

    settings = _settings()
    _configure_logging(settings.log_level, settings.log_format)
    ctx = build_context(settings)

    def report(index: int, total: int, state: str) -> None:
        typer.echo(f"shadow {index + 1}/{total}: {state}")

    try:
        root, paths = train_shadow_bank(ctx, model or settings.model_name, count, version,
                                        epochs, seed, report)
    except (ServiceError, ValueError) as error:
        _fail(getattr(error, "message", str(error)))
    finally:
        ctx.close()
    typer.echo(f"shadow bank of version {root.version}: {len(paths)} shadow models in "
               f"{paths[0].parent}")


# --- Model versions: purge superseded artifacts (issue 10) -----------------------------

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
    from app.wiring import build_context
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


cli.add_typer(versions_cli, name="versions")


def main() -> None:
    try:
        cli()
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()


artifacts_cli = typer.Typer(help="The artifact store of model versions.", no_args_is_help=True)
cli.add_typer(artifacts_cli, name="artifacts")


@artifacts_cli.command("gc")
def artifacts_gc(
    grace_hours: Annotated[float, typer.Option(
        min=0, help="Keep unreferenced files younger than this (a write in progress).")] = 24.0,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List what would be removed; remove nothing.")] = False,
) -> None:
    """Remove version files that no version references (left by a worker killed before
    publishing), older than the grace period; audited as artifacts.collected."""
    from app.wiring import build_context
    from app.registry.gc import collect

    ctx = build_context(_settings())
    try:
        result = collect(ctx, grace_hours, "cli:artifacts-gc", dry_run=dry_run)
    finally:
        ctx.close()
    verb = "would remove" if dry_run else "removed"
    for key in result.removed:
        typer.echo(f"{verb} {key}")
    typer.echo(f"{len(result.removed)} file(s) {verb}; {len(result.too_young)} unreferenced "
               f"file(s) younger than {grace_hours:g} h kept; {result.referenced} referenced")
