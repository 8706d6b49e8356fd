"""The ``featurestore`` command line. Every command is a thin wrapper over ``FeatureStore``."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from featurestore.errors import FeatureStoreError, InvalidInputError, MissingDependencyError, NotFoundError
from featurestore.secrets import redact
from serving import server
from serving.catalog import launch


def _store(ctx: click.Context):
    from featurestore.store import FeatureStore

    if "store" not in ctx.obj:
        ctx.obj["store"] = FeatureStore(repo_path=ctx.obj["repo"])
    return ctx.obj["store"]


class _Group(click.Group):
    """Turns product errors into one readable line and exit code 1, instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FeatureStoreError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.option("--repo", "-r", default=".", show_default=True, type=click.Path(file_okay=False),
              help="The feature repo directory (holds featurestore.yaml).")
@click.pass_context
def main(ctx: click.Context, repo: str) -> None:
    """Declare features once; export training sets and serve them."""
    ctx.ensure_object(dict)
    ctx.obj["repo"] = repo


@main.command()
@click.argument("name")
@click.pass_context
def init(ctx: click.Context, name: str) -> None:
    """Create a feature repo NAME (under --repo) with sample data."""
    from featurestore.scaffold import init_repo

    path = init_repo(Path(ctx.obj["repo"]) / name, project=Path(name).name)
    click.echo(f"Created feature repo {path}. Next: featurestore --repo {path} apply")


@main.command()
@click.pass_context
def plan(ctx: click.Context) -> None:
    """Show what apply would change in the registry."""
    click.echo(str(_store(ctx).plan()))


@main.command()
@click.option("--force", is_flag=True, help="Apply incompatible changes (entity or key type changes).")
@click.pass_context
def apply(ctx: click.Context, force: bool) -> None:
    """Register the repo's definitions (one transaction)."""
    result = _store(ctx).apply(force=force)
    click.echo(str(result))
    click.echo(f"Registry version {result.registry_version}.")


_KINDS = {"entities": "entity", "views": "feature_view", "feature-views": "feature_view",
          "services": "feature_service", "feature-services": "feature_service", "sources": "data_source",
          "on-demand-views": "on_demand_feature_view"}


def _console():
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)  # a pipe or a file: room for every column


@main.command(name="list")
@click.argument("kind", type=click.Choice(sorted(_KINDS)), default="views")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list of {name, kind, keys, features, source, owner, tags, description}.")
@click.option("--names", is_flag=True, help="Print only the names, one a line.")
@click.pass_context
def list_(ctx: click.Context, kind: str, as_json: bool, names: bool) -> None:
    """List registry objects of KIND as a table (name, kind, keys, features, source, owner, tags, description)."""
    from featurestore import registry_tables

    if as_json and names:
        raise InvalidInputError("give at most one of --json and --names")
    with _store(ctx).registry.read() as reader:
        version, snapshot = reader.version(), redact(reader.snapshot())
    rows = registry_tables.list_rows(_KINDS[kind], snapshot)
    if names:
        for row in rows:
            click.echo(row["name"])
    elif as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        _console().print(registry_tables.list_table(_KINDS[kind], rows, version))


def _latest_quality_run(store, kind: str, name: str):
    """The view's latest quality run, None when it has none, or why it could not be read."""
    from featurestore.quality_runs import runs

    if kind != "feature_view":
        return None
    try:
        found = runs(store, name)
    except FeatureStoreError as exc:
        return f"could not be read: {exc}"
    return found[-1] if found else None


@main.command()
@click.argument("kind", type=click.Choice(sorted(_KINDS)))
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the stored spec as JSON.")
@click.pass_context
def describe(ctx: click.Context, kind: str, name: str, as_json: bool) -> None:
    """Show one registry object: schema, source, filter and transforms as expressions, aggregations, TTL,
    owner, tags, the services that use it and its latest quality run (--json: the stored spec). A secret
    written out in a source shows as ***."""
    from featurestore import registry_tables

    store = _store(ctx)
    with store.registry.read() as reader:
        spec = reader.get(_KINDS[kind], name)
        snapshot = None if as_json or spec is None else redact(reader.snapshot())
    if spec is None:
        raise NotFoundError(f"{_KINDS[kind]} {name!r} is not in the registry")
    if as_json:
        click.echo(json.dumps(redact(spec), indent=2, sort_keys=True))
        return
    quality = _latest_quality_run(store, _KINDS[kind], name)
    _console().print(registry_tables.describe_view(_KINDS[kind], name, redact(spec), snapshot, quality))


@main.command()
@click.option("--entities", "entities", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Entity rows: a Parquet or CSV file with join keys and event_timestamp.")
@click.option("--features", "features", default=None, help="Comma-separated view:feature references.")
@click.option("--service", default=None, help="A feature service name (instead of --features).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Output Parquet file.")
@click.option("--full-feature-names", is_flag=True, help="Name columns view__feature.")
@click.option("--reproduce", "manifest", default=None, type=click.Path(exists=True, dir_okay=False),
              help="An earlier export's manifest: write the same rows again (entity rows from that export's "
                   "output unless --entities is given).")
@click.pass_context
def export(ctx: click.Context, entities: str | None, features: str | None, service: str | None, output: str,
           full_feature_names: bool, manifest: str | None) -> None:
    """Write a point-in-time-correct training set (and its manifest) to --output."""
    if manifest is not None:
        if features or service or full_feature_names:
            raise InvalidInputError("--reproduce takes the features from the manifest: drop --features, "
                                    "--service and --full-feature-names")
        made = _store(ctx).reproduce_export(manifest, output, entities=entities)
        click.echo(f"Wrote {made['row_count']} rows to {output}, as recorded in {manifest}")
        return
    if entities is None:
        raise InvalidInputError("give --entities (or --reproduce MANIFEST)")
    if (features is None) == (service is None):
        raise InvalidInputError("give exactly one of --features or --service")
    refs = service if service else [f.strip() for f in features.split(",") if f.strip()]
    job = _store(ctx).get_historical_features(entity_df=entities, features=refs,
                                              full_feature_names=full_feature_names)
    made = job.to_parquet(output)
    click.echo(f"Wrote {made['row_count']} rows to {output} (manifest: {output}.manifest.json)")


def _parse_time(value: str):
    from featurestore.materialize import as_utc

    try:
        return as_utc(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date or datetime") from None


@main.command()
@click.argument("start")
@click.argument("end")
@click.option("--views", default=None, help="Comma-separated feature views (default: all).")
@click.option("--offline-only", is_flag=True, help="Write only the offline store.")
@click.pass_context
def materialize(ctx: click.Context, start: str, end: str, views: str | None, offline_only: bool) -> None:
    """Materialize rows with START <= event time < END into the offline and online stores."""
    result = _store(ctx).materialize(_parse_time(start), _parse_time(end),
                                     views.split(",") if views else None, online=not offline_only)
    for v in result.views:
        click.echo(f"{v.view}: {v.rows} rows, {v.online_written} online writes ({v.online_skipped} stale)")


@main.command(name="materialize-incremental")
@click.argument("end")
@click.option("--views", default=None, help="Comma-separated feature views (default: all).")
@click.pass_context
def materialize_incremental(ctx: click.Context, end: str, views: str | None) -> None:
    """Materialize each view from its watermark up to END."""
    result = _store(ctx).materialize_incremental(_parse_time(end), views.split(",") if views else None)
    for v in result.views:
        click.echo(f"{v.view}: {v.start.isoformat()} .. {v.end.isoformat()}: {v.rows} rows")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", "-p", default=6566, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", "-w", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (each opens its own store connections).")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log every request (costs latency).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--allow-remote-writes", is_flag=True,
              help="Without API keys, answer /push from any client (by default only from this machine).")
@click.option("--max-body-bytes", type=click.IntRange(min=1), envvar="FEATURESTORE_MAX_BODY_BYTES",
              help="Largest request body (413 beyond). [default: 1000000]")
@click.option("--max-entities", type=click.IntRange(min=1), envvar="FEATURESTORE_MAX_ENTITIES",
              help="Entity rows of a lookup, rows of a push (413 beyond). [default: 10000]")
@click.option("--max-features", type=click.IntRange(min=1), envvar="FEATURESTORE_MAX_FEATURES",
              help="Feature references in a lookup (413 beyond). [default: 1000]")
@click.option("--shape-cache-bytes", type=click.IntRange(min=1), envvar="FEATURESTORE_SHAPE_CACHE_BYTES",
              help="Memory for lookup plans cached per distinct request. [default: 16 MiB]")
@click.option("--max-header-bytes", type=click.IntRange(min=1), envvar="FEATURESTORE_MAX_HEADER_BYTES",
              help="Largest request line and headers (431 beyond). [default: 65536]")
@click.option("--header-timeout", type=click.FloatRange(min=0, min_open=True), envvar="FEATURESTORE_HEADER_TIMEOUT",
              help="Seconds for a request's headers to arrive (408 after). [default: 10]")
@click.option("--body-timeout", type=click.FloatRange(min=0, min_open=True), envvar="FEATURESTORE_BODY_TIMEOUT",
              help="Seconds for a request's body to arrive after its headers (408 after). [default: 30]")
@click.option("--max-connections", type=click.IntRange(min=1), envvar="FEATURESTORE_MAX_CONNECTIONS",
              help="Open connections per worker (503 beyond). [default: 1000]")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workers: int, access_log: bool, log_level: str,
          allow_remote_writes: bool, **limits: Any) -> None:
    """Serve online lookups, pushes and the registry over REST (FastAPI on uvicorn).

    API keys come from FEATURESTORE_API_KEYS="key1:read,key2:read+write". Unset: reads are open and
    /push is answered only for clients on this machine (--allow-remote-writes opens it to all). Each
    limit can also be set by its environment variable (FEATURESTORE_MAX_BODY_BYTES, ...; see
    serving/limits.py).
    """
    from featurestore.config import load_config

    try:
        from serving.auth import ENV_VAR, REMOTE_WRITES_ENV, parse_api_keys
        from serving.limits import ServingLimits
    except ImportError as exc:
        raise MissingDependencyError(getattr(exc, "name", None) or "fastapi", "serving") from None
    repo = Path(ctx.obj["repo"]).resolve()
    load_config(repo)  # a broken featurestore.yaml fails here, not in every worker
    if parse_api_keys(os.environ.get(ENV_VAR)) is None:
        os.environ[REMOTE_WRITES_ENV] = "1" if allow_remote_writes else "0"  # read by each worker's app
        click.echo(f"No API keys ({ENV_VAR}): reads are open; /push is answered "
                   + ("for any client (--allow-remote-writes)." if allow_remote_writes else
                      "only for clients on this machine."), err=True)
    serving_limits = ServingLimits(**{name: value for name, value in limits.items() if value is not None})
    click.echo(f"Serving {repo} on http://{host}:{port} (docs: /docs)", err=True)
    server.run(str(repo), host=host, port=port, workers=workers, access_log=access_log, log_level=log_level,
               limits=serving_limits)


@main.command()
@click.option("--port", "-p", default=0, type=click.IntRange(0, 65535), help="Port (default: a free one).")
@click.option("--no-browser", is_flag=True, help="Only print the catalog's URL.")
@click.pass_context
def ui(ctx: click.Context, port: int, no_browser: bool) -> None:
    """Open the web catalog of this repo: a server on this machine only, and a browser at /ui."""
    from featurestore.config import load_config

    repo = Path(ctx.obj["repo"]).resolve()
    load_config(repo)
    port = port or launch.free_port()
    launch.open_when_up("127.0.0.1", port, f"http://127.0.0.1:{port}/ui", lambda text: click.echo(text, err=True),
                 browser=not no_browser)
    server.run(str(repo), host="127.0.0.1", port=port, log_level="warning")


@main.group()
def stream() -> None:
    """Run stream jobs: a view with a KafkaSource, through Flink, into both stores."""


def _describe_job(job) -> str:
    def when(t):
        return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if t else "-"

    where = f"job {job.cluster_job}" if job.cluster_job else f"pid {job.pid}"
    state = f"running ({where})" if job.running else "stopped"
    lines = [f"{job.view}: {state}, started {when(job.started)}",
             f"  resumed from: {job.restored_from or '- (fresh start)'}",
             f"  last checkpoint: {job.last_checkpoint or '-'} at {when(job.last_checkpoint_time)}",
             f"  records behind (not yet checkpointed): {'unknown' if job.lag is None else job.lag}"]
    if job.counters:
        lines.append("  " + ", ".join(f"{k}={v}" for k, v in sorted(job.counters.items())
                                      if not k.endswith(("_last_write", "_last_commit"))))
    if job.log and not job.running:
        lines.append("  last log lines:\n    " + job.log.replace("\n", "\n    "))
    return "\n".join(lines)


@stream.command(name="start")
@click.argument("view")
@click.option("--fresh", is_flag=True, help="Ignore retained checkpoints (start from committed Kafka offsets).")
@click.pass_context
def stream_start(ctx: click.Context, view: str, fresh: bool) -> None:
    """Start VIEW's stream job in the background (resumes from its last checkpoint)."""
    from featurestore.streaming import manager

    click.echo(f"Starting the stream job of {view} (first run builds .venv-flink, a few minutes)...", err=True)
    job = manager.start(_store(ctx), view, fresh=fresh, wait_seconds=5)
    click.echo(_describe_job(job))


@stream.command(name="status")
@click.argument("view", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def stream_status(ctx: click.Context, view: str | None, as_json: bool) -> None:
    """Show stream jobs: running or not, last checkpoint, counters (events, dead letters, late events, transform errors)."""
    from featurestore.streaming import manager

    jobs = manager.status(_store(ctx), view)
    if as_json:
        click.echo(json.dumps([j.to_dict() for j in jobs], indent=1))
    elif not jobs:
        click.echo("no stream jobs")
    else:
        click.echo("\n".join(_describe_job(j) for j in jobs))


@stream.command(name="stop")
@click.argument("view")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds before SIGKILL.")
@click.pass_context
def stream_stop(ctx: click.Context, view: str, timeout: float) -> None:
    """Stop VIEW's stream job; its checkpoints stay, so the next start resumes."""
    from featurestore.streaming import manager

    stopped = manager.stop(_store(ctx), view, timeout=timeout)
    click.echo(f"{view}: stopped" if stopped else f"{view}: was not running")


@main.command()
@click.argument("view")
@click.option("--since", default="7d", show_default=True,
              help="Runs started this long ago or later: a whole number and a unit (s, m, h, d).")
@click.option("--json", "as_json", is_flag=True, help="Print the runs' records as JSON.")
@click.option("--plot", "plot", type=click.Path(dir_okay=True), default=None,
              help="Also draw the runs as charts: FILE.html (one self-contained page), FILE.png (one "
                   "image) or a folder (one PNG per chart).")
@click.pass_context
def stats(ctx: click.Context, view: str, since: str, as_json: bool, plot: str | None) -> None:
    """Show VIEW's quality records: each materialization run and stream commit since --since, with
    its rows and check outcomes, then the column statistics of the newest run (rows, nulls, min,
    median, max, mean, stddev, distinct, freshness, top values)."""
    from rich.console import Console

    from featurestore.quality_table import render, to_json

    start = dt.datetime.now(dt.timezone.utc) - _duration(since, "--since")
    store = _store(ctx)
    runs = store.quality_runs(view, since=start)
    if plot:
        _plot(store, view, runs, start, plot)
    if as_json:
        click.echo(to_json(runs))
    elif not runs:
        click.echo(f"{view}: no runs since {start:%Y-%m-%d %H:%M:%S} UTC (materialize it, or widen --since)")
    else:
        Console().print(render(view, runs))


def _plot(store, view: str, runs: list, since: dt.datetime, target: str) -> None:
    """The runs, and the newest drift results since ``since``, as charts (``featurestore.quality_report``)."""
    from featurestore import drift_records, quality_report

    drift = [{"feature": d.feature, "statistic": d.statistic, "value": d.value, "threshold": d.bound,
              "drifted": d.drifted} for d in drift_records.latest(store, view, since=since)]
    if target.lower().endswith((".html", ".htm")):
        written = [quality_report.write_html(view, runs, target, drift=drift or None)]
    else:
        written = quality_report.write_png(view, runs, target, drift=drift or None)
    click.echo(f"{view}: {len(runs)} runs drawn in {', '.join(str(p) for p in written)}", err=True)


@main.group()
def offline() -> None:
    """Upkeep of the offline store's tables: merge small files, remove files no version needs, repair
    damaged tables."""


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str, option: str = "--retain") -> dt.timedelta:
    """``7d``, ``12h``, ``30m``, ``0s`` -> a timedelta (InvalidInputError names a bad one)."""
    unit = text[-1:].lower()
    if unit not in _DURATION_UNITS or not text[:-1].isdigit():
        raise InvalidInputError(f"{option} takes a whole number and a unit (s, m, h, d), like 7d; got {text!r}")
    return dt.timedelta(seconds=int(text[:-1]) * _DURATION_UNITS[unit])


def _offline_views(store, view: str | None) -> list[str]:
    names = sorted(set(store.offline_store.views()) | set(store.offline_store.appends.views()))
    if view is not None and view not in names:
        raise NotFoundError(f"feature view {view!r} has no offline data")
    return [view] if view is not None else names


@offline.command(name="optimize")
@click.argument("view", required=False)
@click.pass_context
def offline_optimize(ctx: click.Context, view: str | None) -> None:
    """Merge each view's small data files (materialized and appended rows) into larger ones."""
    store = _store(ctx)
    for name in _offline_views(store, view):
        merged = sum(s.compact(name, max_small_files=1) for s in (store.offline_store, store.offline_store.appends)
                     if name in s.views())
        click.echo(f"{name}: {merged} files merged")


@offline.command(name="vacuum")
@click.argument("view", required=False)
@click.option("--retain", default="7d", show_default=True,
              help="Keep the files table versions younger than this need (and uncommitted files this young).")
@click.pass_context
def offline_vacuum(ctx: click.Context, view: str | None, retain: str) -> None:
    """Delete data files that no table version younger than --retain needs. Exports recorded against
    older versions can no longer be reproduced afterwards."""
    store, grace = _store(ctx), _duration(retain)
    for name in _offline_views(store, view):
        removed = len(store.offline_store.vacuum(name, grace=grace)) + len(store.offline_store.appends.vacuum(name, grace=grace))
        click.echo(f"{name}: {removed} files removed")


@offline.command(name="repair")
@click.argument("view")
@click.pass_context
def offline_repair(ctx: click.Context, view: str) -> None:
    """Make VIEW's offline tables readable again after damage (a commit or checkpoint, or a data file,
    that cannot be read). Damaged files are moved aside, the last readable state is kept, and what
    that lost of the materialized rows is rematerialized from the source; streamed or pushed rows
    that could not be kept are listed as lost. Stop VIEW's stream job and materializations first."""
    for line in _store(ctx).repair_offline(view).lines():
        click.echo(line)


def _window(text: str, option: str) -> tuple[dt.datetime, dt.datetime]:
    """``START..END`` (ISO dates or datetimes, UTC when naive) -> (start, end)."""
    start, sep, end = text.partition("..")
    if not sep or not start or not end:
        raise InvalidInputError(f"{option} takes START..END, like 2026-01-01..2026-01-08; got {text!r}")
    try:
        return _parse_time(start), _parse_time(end)
    except click.BadParameter as exc:
        raise InvalidInputError(f"{option}: {exc.message}") from None


DRIFT_EXIT = 3  # `featurestore drift` found a feature past its thresholds


@main.command()
@click.argument("view")
@click.option("--baseline", "manifest", default=None, type=click.Path(exists=True),
              help="A training export's manifest (or the export, with its manifest beside it).")
@click.option("--baseline-window", default=None, metavar="START..END",
              help="Or a window of the view's offline data as the baseline (START <= event time < END).")
@click.option("--recent", default="1d", show_default=True,
              help="The recent data: this long before --until (s, m, h, d).")
@click.option("--recent-window", default=None, metavar="START..END", help="Or an explicit recent window.")
@click.option("--until", default=None, help="The end of --recent (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--record/--no-record", default=True, show_default=True,
              help="Keep the results for the feature server's /metrics (featurestore_feature_drift).")
@click.pass_context
def drift(ctx: click.Context, view: str, manifest: str | None, baseline_window: str | None, recent: str,
          recent_window: str | None, until: str | None, as_json: bool, record: bool) -> None:
    """Compare VIEW's recent features with a baseline: PSI and Kolmogorov-Smirnov for numbers, PSI and
    chi-square for categories, judged by the view's drift_thresholds. Exits 3 when a feature drifts
    (1 on an error, 0 otherwise)."""
    from featurestore.drift import compare

    if (manifest is None) == (baseline_window is None):
        raise InvalidInputError("give exactly one of --baseline MANIFEST or --baseline-window START..END")
    if recent_window is not None and until is not None:
        raise InvalidInputError("--until sets the end of --recent: drop it with --recent-window")
    report = compare(_store(ctx), view, baseline_manifest=manifest,
                     baseline_window=_window(baseline_window, "--baseline-window") if baseline_window else None,
                     recent=_duration(recent, "--recent"),
                     recent_window=_window(recent_window, "--recent-window") if recent_window else None,
                     until=_parse_time(until) if until else None, record=record)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1, default=str))
    else:
        _print_drift(report)
    if report.drifted:
        sys.exit(DRIFT_EXIT)


_DRIFT_COLUMNS = (("psi", "PSI"), ("ks", "KS"), ("ks_pvalue", "KS p"), ("chi2", "chi²"), ("chi2_pvalue", "chi² p"))


def _print_drift(report) -> None:
    from rich.table import Table

    table = Table(title=f"{report.view}: recent {report.recent_start:%Y-%m-%d %H:%M}..{report.recent_end:%Y-%m-%d %H:%M} "
                        f"UTC vs {report.baseline}", title_justify="left")
    table.add_column("feature", no_wrap=True)
    table.add_column("kind")
    table.add_column("rows (base/recent)", justify="right")
    table.add_column("nulls (base/recent)", justify="right")
    for _, title in _DRIFT_COLUMNS:
        table.add_column(title, justify="right")
    table.add_column("result")
    for f in report.features:
        cells = []
        for name, _ in _DRIFT_COLUMNS:
            value = f.statistics.get(name)
            text = "" if value is None else f"{value:.3g}" if name.endswith("pvalue") else f"{value:.4f}"
            bound = f.bounds.get(name)
            if bound is not None:
                text += f" ({'<' if name.endswith('pvalue') else '>'}{bound:g})"
            cells.append(f"[bold red]{text}[/]" if name in f.crossed else text)
        result = "[bold red]DRIFT[/]" if f.drifted else "ok" if f.kind else f"- {f.note}"
        table.add_row(f.feature, f.kind or "-", f"{f.baseline_rows}/{f.recent_rows}",
                      f"{f.baseline_nulls}/{f.recent_nulls}", *cells, result)
    console = _console()
    console.print(table)
    drifted = report.drifted
    console.print(f"[bold red]{len(drifted)} of {len(report.features)} features drifted: {', '.join(drifted)}[/]"
                  if drifted else f"No drift in {len(report.features)} features.", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    main()
