"""Registry commands. They import `registry` only — never torch — so they start fast."""

from __future__ import annotations

import json
from datetime import timezone
from pathlib import Path

import click

from adapter_hub.cli.main import Context, cli, pass_ctx
from adapter_hub.cli.output import byte_progress, emit_json, fields, human_bytes, table
from registry import views
from registry.db import HEAD_REVISION, current_revision

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _kv_pairs(pairs: tuple[str, ...], what: str) -> dict[str, str]:
    """['k=v', ...] -> {k: v} for --tag, --meta and --param."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=what)
        out[key] = value
    return out


def _version_row(v) -> list:
    return [v.ref, v.digest[7:19], v.base_model, v.rank, v.alpha, human_bytes(v.size_bytes),
            f"{v.created_at:%Y-%m-%d %H:%M}", ",".join(v.aliases), " ".join(f"{k}={x}" for k, x in sorted(v.tags.items())),
            "deleted" if v.deleted else ""]


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


VERSION_COLUMNS = ["ref", "digest", "base model", "r", "alpha", "size", "created (UTC)", "aliases", "tags", ""]


# ---- creating and migrating -----------------------------------------------------------------------


@cli.command()
@pass_ctx
def init(ctx: Context) -> None:
    """Create the registry (or check an existing one) and print where it lives.

    Example: adapter-hub --registry ~/adapters init
    """
    reg = ctx.registry(create=True)
    click.echo(f"registry {reg.location}\nblobs    {reg.store.url}\nschema   {current_revision(reg.engine)}")


@cli.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx: Context) -> None:
    """Migrate the registry database to this version's schema (Alembic `upgrade head`).

    Example: adapter-hub db upgrade
    """
    reg = ctx.registry(create=True, check=False)
    click.echo(f"schema at {reg.upgrade()}")


@db.command("current")
@pass_ctx
def db_current(ctx: Context) -> None:
    """Print the database's schema revision and the one this adapter-hub needs.

    Example: adapter-hub db current
    """
    reg = ctx.registry(create=False, check=False)
    click.echo(f"database {current_revision(reg.engine)}\nexpected {HEAD_REVISION}")


# ---- writing --------------------------------------------------------------------------------------


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--task", required=True, help="Task the adapter belongs to (its next version is created).")
@click.option("--metadata", "metadata_json", metavar="JSON", help="Free-form metadata as a JSON object.")
@click.option("--meta", "meta_pairs", multiple=True, metavar="KEY=VALUE", help="One metadata entry (repeatable).")
@click.option("--tag", "tag_pairs", multiple=True, metavar="KEY=VALUE", help="A tag (repeatable).")
@click.option("--parent", "parents", multiple=True, metavar="REF", help="A version it was trained/derived from.")
@click.option("--note", help="A one-line note.")
@click.option("--allow-duplicate", is_flag=True, help="Make a new version even if this content is already one.")
@click.option("--allow-bin", is_flag=True, help="Accept a pickle adapter_model.bin (read with weights_only=True).")
@pass_ctx
def register(ctx: Context, path: Path, task: str, metadata_json: str | None, meta_pairs: tuple[str, ...],
             tag_pairs: tuple[str, ...], parents: tuple[str, ...], note: str | None, allow_duplicate: bool,
             allow_bin: bool) -> None:
    """Register the adapter folder PATH as the next version of --task; prints its reference.

    Example: adapter-hub register out/topic --task topic --tag stage=dev --meta lr=0.001
    """
    metadata = {}
    if metadata_json:
        try:
            metadata = json.loads(metadata_json, parse_constant=_no_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            raise click.BadParameter(f"not valid JSON ({exc})", param_hint="--metadata")
        if not isinstance(metadata, dict):
            raise click.BadParameter(f"must be a JSON object ({{...}}), got {type(metadata).__name__}",
                                     param_hint="--metadata")
    metadata.update(_kv_pairs(meta_pairs, "--meta"))
    tags = _kv_pairs(tag_pairs, "--tag")
    reg = ctx.registry(create=True)
    source: object = path
    if allow_bin and not (path / "adapter_model.safetensors").exists():
        from adapter_hub.core.adapter import LoraAdapter  # torch only on this rare path

        source = LoraAdapter.load(path, allow_bin=True)
    total = sum(f.stat().st_size for f in path.iterdir() if f.is_file()) if path.is_dir() else 0
    with byte_progress(total, "storing") as progress:
        version = reg.register(source, task=task, metadata=metadata, tags=tags, parents=list(parents), note=note,
                               on_duplicate="new" if allow_duplicate else "error", progress=progress)
    click.echo(version.ref)


@cli.command()
@click.argument("ref")
@click.argument("name")
@pass_ctx
def alias(ctx: Context, ref: str, name: str) -> None:
    """Point TASK@NAME at the version REF (moves the alias if it exists).

    Example: adapter-hub alias topic:2 best
    """
    version = ctx.registry().alias(ref, name)
    click.echo(f"{version.task}@{name} -> {version.ref}")


@cli.command()
@click.argument("task")
@click.argument("name")
@pass_ctx
def unalias(ctx: Context, task: str, name: str) -> None:
    """Remove the alias TASK@NAME.

    Example: adapter-hub unalias topic best
    """
    ctx.registry().unalias(task, name)
    click.echo(f"removed {task}@{name}")


@cli.command()
@click.argument("ref")
@click.argument("pair", metavar="KEY=VALUE")
@pass_ctx
def tag(ctx: Context, ref: str, pair: str) -> None:
    """Set a tag on a version.

    Example: adapter-hub tag topic:2 stage=prod
    """
    (key, value), = _kv_pairs((pair,), "KEY=VALUE").items()
    version = ctx.registry().tag(ref, key, value)
    click.echo(f"{version.ref} {key}={value}")


@cli.command()
@click.argument("ref")
@pass_ctx
def delete(ctx: Context, ref: str) -> None:
    """Soft-delete a version: its number is never reused; `gc` frees its blobs.

    Example: adapter-hub delete topic:1
    """
    version = ctx.registry().delete(ref)
    click.echo(f"deleted {version.ref}")


@cli.command("export")
@click.argument("ref")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace DEST's content if it is not empty.")
@pass_ctx
def export_cmd(ctx: Context, ref: str, dest: Path, force: bool) -> None:
    """Write version REF as a PEFT folder DEST (each file verified against its sha256).

    DEST must be new or empty unless --force; it appears whole or not at all.

    Example: adapter-hub export topic:1 out/topic-v1
    """
    reg = ctx.registry()
    total = sum(size for _, _, size in reg.files(ref))
    with byte_progress(total, "exporting") as progress:
        out = reg.export(ref, dest, progress=progress, force=force)
    click.echo(str(out))
    config = json.loads((out / "adapter_config.json").read_text())
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        click.echo("warning: this adapter has per-module ranks or alphas (rank_pattern/alpha_pattern); vLLM "
                   "releases read apply one r and lora_alpha to every module, so check that yours honours the "
                   "patterns, or serve a uniform-rank copy (adapter-hub reduce-rank REF --rank K --out DIR)", err=True)


@cli.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--task", required=True, help="Task to import into.")
@click.option("--note", help="A one-line note (default: the exported one).")
@pass_ctx
def import_cmd(ctx: Context, path: Path, task: str, note: str | None) -> None:
    """Register an exported (or any PEFT) folder, keeping its metadata and an `imported` lineage edge.

    Example: adapter-hub import out/topic-v1 --task topic-copy
    """
    click.echo(ctx.registry(create=True).import_folder(path, task=task, note=note).ref)


# ---- reading --------------------------------------------------------------------------------------


@cli.command("list")
@json_option
@pass_ctx
def list_cmd(ctx: Context, as_json: bool) -> None:
    """List tasks with their live version count, latest version and aliases.

    Example: adapter-hub list --json
    """
    rows = views.tasks(ctx.registry())
    if as_json:
        emit_json(rows)
    elif not rows:
        click.echo("the registry is empty: `adapter-hub register PATH --task NAME` adds an adapter")
    else:
        table(["task", "versions", "latest", "updated (UTC)", "aliases"],
              [[r["task"], r["versions"], r["latest"], (r["updated_at"] or "")[:16].replace("T", " "),
                " ".join(r["aliases"])] for r in rows])


@cli.command()
@click.argument("task")
@click.option("--all", "include_deleted", is_flag=True, help="Include deleted versions.")
@json_option
@pass_ctx
def versions(ctx: Context, task: str, include_deleted: bool, as_json: bool) -> None:
    """List the versions of TASK.

    Example: adapter-hub versions topic --all
    """
    reg = ctx.registry()
    if as_json:
        emit_json(views.versions(reg, task, include_deleted=include_deleted))
    else:
        found = reg.versions(task, include_deleted=include_deleted)
        table(VERSION_COLUMNS, [_version_row(v) for v in found])


@cli.command()
@click.option("--task", help="Only this task.")
@click.option("--base-model", help="Base model name or fingerprint.")
@click.option("--tag", "tag_pairs", multiple=True, metavar="KEY=VALUE", help="Tag filter (repeatable; all must match).")
@click.option("--alias", help="Versions carrying this alias.")
@click.option("--metric", "metrics", multiple=True, metavar="EXPR",
              help="Evaluation filter like 'accuracy>=0.8' or 'agnews/accuracy>=0.8' (repeatable).")
@click.option("--since", type=click.DateTime(), help="Created at or after this date/time (UTC).")
@click.option("--all", "include_deleted", is_flag=True, help="Include deleted versions.")
@json_option
@pass_ctx
def search(ctx: Context, task, base_model, tag_pairs, alias, metrics, since, include_deleted, as_json) -> None:
    """Find versions by task, base model, tags, alias, evaluation results and date.

    Example: adapter-hub search --tag stage=dev --metric 'topic/accuracy>=0.8'
    """
    filters = dict(task=task, base_model=base_model, tag=_kv_pairs(tag_pairs, "--tag"), alias=alias,
                   metrics=list(metrics), include_deleted=include_deleted,
                   since=since.replace(tzinfo=timezone.utc) if since else None)
    if as_json:
        emit_json(views.search(ctx.registry(), **filters))
    else:
        found = ctx.registry().search(**filters)
        table(VERSION_COLUMNS, [_version_row(v) for v in found])


@cli.command()
@click.argument("ref")
@json_option
@pass_ctx
def show(ctx: Context, ref: str, as_json: bool) -> None:
    """Show one version: identity, metadata, tags, aliases, files, parents, evaluations.

    Example: adapter-hub show topic@best
    """
    reg = ctx.registry()
    if as_json:
        emit_json(views.version(reg, ref))
        return
    v = reg.get(ref, include_deleted=True)
    files = reg.files(v.ref) if not v.deleted else []
    parents = reg.lineage(v.ref, "up", max_depth=1)
    evals = reg.evaluations(v.ref)
    fields([("ref", v.ref), ("digest", v.digest), ("base model", v.base_model),
            ("base fingerprint", v.base_fingerprint), ("rank / alpha", f"{v.rank} / {v.alpha}"),
            ("modules", f"{len(v.target_modules)} ({', '.join(sorted({m.rsplit('.', 1)[-1] for m in v.target_modules}))})"),
            ("size", human_bytes(v.size_bytes)), ("created", f"{v.created_at:%Y-%m-%d %H:%M:%S} UTC by {v.created_by}"),
            ("deleted", f"{v.deleted_at:%Y-%m-%d %H:%M:%S} UTC" if v.deleted else None), ("note", v.note),
            ("aliases", ", ".join(v.aliases)), ("tags", ", ".join(f"{k}={x}" for k, x in sorted(v.tags.items()))),
            ("metadata", json.dumps(v.metadata, sort_keys=True) if v.metadata else None),
            ("parents", ", ".join(f"{e.parent} ({e.kind})" for e in parents))])
    if files:
        table(["file", "sha256", "size"], [[p, b[:16], human_bytes(n)] for p, b, n in files])
    if evals:
        table(["task", "metric", "value", "scorer", "dataset", "scored as"],
              [[e["task"], e["metric"], f"{e['value']:.4f}", e["scorer"], e["dataset"], e["context"] or "alone"]
               for e in evals])


@cli.command()
@click.argument("ref")
@click.option("--down", "direction", flag_value="down", help="Descendants instead of ancestors.")
@click.option("--both", "direction", flag_value="both", help="Ancestors and descendants.")
@click.option("--depth", type=int, help="At most this many generations.")
@json_option
@pass_ctx
def lineage(ctx: Context, ref: str, direction: str | None, depth: int | None, as_json: bool) -> None:
    """Show where a version came from (default) or what was made from it (--down).

    Example: adapter-hub lineage topic:2 --both
    """
    if as_json:
        emit_json(views.lineage(ctx.registry(), ref, direction or "up", depth))
        return
    edges = ctx.registry().lineage(ref, direction or "up", depth)
    if not edges:
        click.echo(f"{ref}: no recorded {'descendants' if direction == 'down' else 'parents'}")
    else:
        table(["depth", "parent", "kind", "child", "parameters"],
              [[e.depth, e.parent, e.kind, e.child, json.dumps(e.params, sort_keys=True)[:80]] for e in edges])


# ---- maintenance ----------------------------------------------------------------------------------


@cli.command()
@click.option("--grace", default=3600.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Also keep unreferenced blobs younger than this many seconds (registrations in flight are "
                   "protected by their pins whatever this says).")
@json_option
@pass_ctx
def gc(ctx: Context, grace: float, as_json: bool) -> None:
    """Free blobs that no live version uses and no registration in flight has pinned.

    Safe to run beside registrations and other gc's: it never deletes a blob a committed or
    in-flight version needs. Example: adapter-hub gc --grace 0"""
    import math

    if not math.isfinite(grace):
        raise click.BadParameter(f"must be a finite number of seconds, got {grace}", param_hint="--grace")
    report = ctx.registry().gc(grace=grace)
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(f"removed {report.removed_blobs} blobs ({human_bytes(report.freed_bytes)}), "
                   f"{report.removed_temp} temp files, {report.removed_checkouts} checkouts; "
                   f"kept {report.kept_recent} recent unreferenced blobs")


@cli.command()
@click.option("--repair", is_flag=True, help="Remove orphan blobs, temp files and dangling aliases.")
@json_option
@pass_ctx
def fsck(ctx: Context, repair: bool, as_json: bool) -> None:
    """Verify every live version's blobs; exits 1 if any are missing or corrupt.

    Example: adapter-hub fsck --repair
    """
    report = ctx.registry().fsck(repair=repair)
    if as_json:
        emit_json(report.to_dict())
    else:
        for label, items in (("missing", report.missing), ("corrupt", report.corrupt),
                             ("dangling alias", report.dangling_aliases), ("orphan blob", report.orphans),
                             ("temp file", report.temp_files), ("repaired", report.repaired)):
            for item in items:
                click.echo(f"{label}: {item}")
        click.echo("ok" if report.ok else "problems found", err=not report.ok)
    if not report.ok:
        raise SystemExit(1)

