"""The coordinators' coverage map: the page, its static files and the street base layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from api.coverage.errors import ModeWithoutGraph
from api.deps import Coordinator, SettingsDep
from api.errors import ErrorBody, Unprocessable
from api.graphs import GraphStore
from geo.streets import street_lines

WEB_DIR = Path(__file__).resolve().parent
ATTRIBUTION = "© OpenStreetMap contributors"
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
}
# Only these files are served (no path from the URL ever reaches the file system).
STATIC: dict[str, Path] = {
    p.relative_to(WEB_DIR).as_posix(): p
    for p in sorted(WEB_DIR.rglob("*"))
    if p.is_file() and p.suffix in _TYPES
}

router = APIRouter(tags=["map"])

Responses = dict[int | str, dict[str, Any]]
E_STREETS: Responses = {
    401: {"model": ErrorBody, "description": "missing, bad or revoked token"},
    403: {"model": ErrorBody, "description": "the caller is not a coordinator"},
    422: {"model": ErrorBody, "description": "unknown mode or query parameter"},
    409: {"model": ErrorBody, "description": "the mode has no loaded street graph"},
}


@router.get("/map", include_in_schema=False)
async def map_page() -> FileResponse:
    """The coverage map page (its data needs a coordinator token, entered on the page)."""
    return FileResponse(WEB_DIR / "map.html", media_type="text/html")


@router.get("/map/static/{name:path}", include_in_schema=False)
async def map_static(name: str) -> Response:
    """The page's script, style sheet and the vendored Leaflet."""
    path = STATIC.get(name)
    if path is None:
        return Response(status_code=404)
    return FileResponse(path, media_type=_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})


def _graph_for(store: GraphStore, mode: str) -> tuple[str, Any]:
    if mode != "all":
        if mode not in store.by_mode:
            reason = store.status().get(mode, "not configured")
            msg = f"mode {mode!r} has no loaded street graph: {reason}"
            raise ModeWithoutGraph(msg)
        return mode, store.by_mode[mode].graph
    if not store.by_mode:
        msg = "mode 'all': no street graph is loaded"
        raise ModeWithoutGraph(msg)
    # "all": the densest loaded graph (walk usually) shows every street the others use.
    name, loaded = max(store.by_mode.items(), key=lambda item: item[1].graph.n_edges)
    return name, loaded.graph


@router.get(
    "/v1/coverage/streets",
    summary="The street network of a loaded graph, as GeoJSON lines (coordinators)",
    response_class=Response,
    responses={
        200: {"content": {"application/geo+json": {}}, "description": "a FeatureCollection"},
        **E_STREETS,
    },
)
def coverage_streets(
    request: Request,
    caller: Coordinator,
    settings: SettingsDep,
    mode: Annotated[Literal["all", "walk", "bike", "drive"], Query()] = "all",
) -> Response:
    """Streets of the mode's graph (``all``: the densest graph) as simplified MultiLineStrings."""
    unknown = sorted(set(request.query_params) - {"mode"})
    if unknown:
        msg = f"unknown query parameters: {', '.join(unknown)} (only mode is taken)"
        raise Unprocessable(msg)
    store: GraphStore = request.app.state.graphs
    name, graph = _graph_for(store, mode)
    body = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "MultiLineString", "coordinates": street_lines(graph)},
                "properties": {"mode": name},
            }
        ],
        "bbox": list(graph.bbox),
        # The page reads the hour slider in the network's time zone, as the presence model does.
        "ern": {
            "mode": mode,
            "graph": name,
            "attribution": ATTRIBUTION,
            "timezone": settings.timezone,
        },
    }
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        media_type="application/geo+json",
    )
