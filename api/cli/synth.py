"""`ern synth`: synthetic members on a real street graph, as GeoJSON, optionally bulk-loaded."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

MEMBERS_PATH = "/v1/members"


@dataclass
class BulkResult:
    """Rows a bulk load created (handle, id, token) and rows it failed (handle, status, detail)."""

    created: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)


def _token_of(body: dict[str, Any]) -> str | None:
    """The new member's bearer token, wherever the members API puts it."""
    for key in ("token", "access_token", "api_token"):
        value = body.get(key)
        if isinstance(value, str):
            return value
    nested = body.get("auth") or body.get("credentials")
    return _token_of(nested) if isinstance(nested, dict) else None


def _member_id(body: dict[str, Any]) -> Any:
    """The new member's id, at the top level or under ``member``."""
    if "id" in body:
        return body["id"]
    inner = body.get("member")
    return inner.get("id") if isinstance(inner, dict) else None


def bulk_load(
    members: Sequence[dict[str, Any]],
    base_url: str,
    token: str,
    *,
    concurrency: int = 8,
    timeout_s: float = 30.0,
    client: httpx.Client | None = None,
) -> BulkResult:
    """POST each member body to /v1/members with a coordinator token and collect the new tokens.

    ``client`` replaces the connection pool (e.g. a TestClient); concurrency 1 posts in order.
    """
    if concurrency < 1:
        msg = f"concurrency must be >= 1, got {concurrency}"
        raise ValueError(msg)
    url = base_url.rstrip("/") + MEMBERS_PATH
    headers = {"Authorization": f"Bearer {token}"}

    def post(client: httpx.Client, body: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        try:
            r = client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            return False, {"handle": body.get("handle"), "status": None, "detail": str(exc)}
        if r.status_code in (200, 201):
            answer = r.json()
            return True, {
                "handle": body.get("handle"),
                "id": _member_id(answer),
                "token": _token_of(answer),
            }
        try:
            detail: Any = r.json()
        except ValueError:
            detail = r.text[:500]
        return False, {"handle": body.get("handle"), "status": r.status_code, "detail": detail}

    result = BulkResult()

    def collect(http: httpx.Client) -> None:
        if concurrency == 1:
            rows = (post(http, b) for b in members)
            for ok, row in rows:
                (result.created if ok else result.failed).append(row)
            return
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for ok, row in pool.map(lambda b: post(http, b), members):
                (result.created if ok else result.failed).append(row)

    if client is not None:
        collect(client)
        return result
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=timeout_s, limits=limits) as own:
        collect(own)
    return result


def _parse_mix(text: str) -> dict[str, float]:
    """``walk=0.5,bike=0.2,drive=0.3`` -> shares by mode."""
    shares: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        mode, sep, value = part.partition("=")
        try:
            shares[mode.strip()] = float(value) if sep else 1.0
        except ValueError:
            msg = f"bad mode share {part!r}: expected MODE=SHARE, e.g. walk=0.5"
            raise typer.BadParameter(msg) from None
    if not shares:
        msg = "no travel mode given"
        raise typer.BadParameter(msg)
    return shares


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds bearer tokens)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def synth(
    n: Annotated[int, typer.Option("--n", min=1, help="number of members")],
    out: Annotated[
        Path, typer.Option("--out", help="output: .geojson (FeatureCollection) or .json")
    ],
    graph_dir: Annotated[
        Path | None, typer.Option("--graph-dir", help="compiled graph directory")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", help="OSM extract to build from (.osm.pbf, .osm or .osm.bz2)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="random seed: the same seed, the same members")] = 0,
    # Spaces after the commas, so that the default shown in --help wraps instead of being cut.
    modes: Annotated[str, typer.Option(help="travel-mode mix")] = "walk=0.5, bike=0.2, drive=0.3",
    responder_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share with the responder role")
    ] = 0.6,
    defense_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share with the defense role")
    ] = 0.1,
    available_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share marked available")
    ] = 0.85,
    load: Annotated[
        str | None, typer.Option("--load", help="base URL of a running ern to POST them to")
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="ERN_TOKEN", help="coordinator bearer token for --load")
    ] = None,
    tokens_out: Annotated[
        Path | None, typer.Option(help="where --load writes the new members' tokens (mode 0600)")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="parallel requests for --load")] = 8,
) -> None:
    """Generate synthetic members on a real street graph (homes, work, commutes, schedules)."""
    from geo.graph import build_graphs, load_graphs
    from geo.synth import members_to_geojson, synth_members

    if (graph_dir is None) == (source is None):
        raise typer.BadParameter("give exactly one of --graph-dir or --source")
    if out.suffix not in (".geojson", ".json"):
        raise typer.BadParameter(f"--out must end in .geojson or .json, got {out.name!r}")
    if load and not token:
        raise typer.BadParameter("--load needs --token (or ERN_TOKEN): a coordinator's token")
    mix = _parse_mix(modes)

    def progress(line: str) -> None:
        typer.echo(line, err=True)

    if graph_dir is not None:
        graphs = load_graphs(graph_dir)
        if not graphs:
            raise typer.BadParameter(f"no compiled graph in {graph_dir} (run `ern graph build`)")
    else:
        assert source is not None
        graphs = build_graphs(source, [m for m in mix if mix[m] > 0], progress=progress)
    members = synth_members(
        graphs,
        n,
        seed=seed,
        mode_shares=mix,
        responder_share=responder_share,
        defense_share=defense_share,
        available_share=available_share,
        progress=progress,
    )
    doc: Any = members_to_geojson(members) if out.suffix == ".geojson" else members
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    typer.echo(f"wrote {len(members)} members to {out}", err=True)
    if load:
        assert token is not None
        result = bulk_load(members, load, token, concurrency=concurrency)
        target = tokens_out or out.with_name(out.name.split(".")[0] + ".tokens.json")
        _write_private(target, json.dumps(result.created, indent=1) + "\n")
        typer.echo(
            f"loaded {len(result.created)} members into {load} (tokens in {target}); "
            f"{len(result.failed)} failed",
            err=True,
        )
        for row in result.failed[:5]:
            typer.echo(f"  {row['handle']}: {row['status']} {row['detail']}", err=True)
        if result.failed:
            raise typer.Exit(1)
