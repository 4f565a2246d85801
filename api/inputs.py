"""Strict query parameters: no unknown names; bools, numbers and times only in their own form."""

from __future__ import annotations

import re
import types
import typing
from datetime import date, datetime, time
from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel

# pydantic's lax mode reads ?flag=yes or ?flag=0 as a bool, ?limit=1.0 as an int and ?until=0.5
# as a Unix time; the JSON bodies refuse such coercions (api.types.RequestModel), so do queries.
_FORMS: dict[type, tuple[re.Pattern[str], str]] = {
    bool: (re.compile(r"true|false"), "expected true or false"),
    int: (re.compile(r"-?\d+"), "expected an integer"),
    float: (re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?"), "expected a number"),
    datetime: (re.compile(r"\d{4}-.*"), "expected an ISO 8601 date and time"),
    date: (re.compile(r"\d{4}-\d\d-\d\d"), "expected an ISO 8601 date"),
    time: (re.compile(r"\d\d:.*"), "expected an ISO 8601 time of day"),
}


def _base(annotation: Any) -> Any:
    """``int`` for ``Annotated[int | None, ...]``; the annotation itself if not one of _FORMS."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kept = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(kept) == 1:
            return _base(kept[0])
    return annotation


Forms = dict[str, tuple[re.Pattern[str], str] | None]
# By id: routes are not hashable; the route is kept so that its id is not reused.
_FORMS_BY_ROUTE: dict[int, tuple[APIRoute, Forms]] = {}


def _query_forms(route: APIRoute) -> Forms:
    cached = _FORMS_BY_ROUTE.get(id(route))
    if cached is not None and cached[0] is route:
        return cached[1]
    forms: Forms = {}
    pending: list[Dependant] = [route.dependant]
    while pending:
        dependant = pending.pop()
        pending.extend(dependant.dependencies)
        for field in dependant.query_params:
            annotation = _base(field.field_info.annotation)
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                # A query parameter model (Annotated[Model, Query()]): its fields are the names.
                for name, info in annotation.model_fields.items():
                    forms[info.alias or name] = _FORMS.get(_base(info.annotation))
            else:
                forms[field.alias] = _FORMS.get(annotation)
    _FORMS_BY_ROUTE[id(route)] = (route, forms)
    return forms


async def strict_query(request: Request) -> None:
    """422 naming the parameter for an unknown query name or a value out of its type's form."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    forms = _query_forms(route)
    errors: list[dict[str, Any]] = []
    for name, value in request.query_params.multi_items():
        if name not in forms:
            errors.append({"loc": ("query", name), "msg": "unknown query parameter"})
            continue
        form = forms[name]
        if form is not None and not form[0].fullmatch(value):
            errors.append({"loc": ("query", name), "msg": f"{form[1]}, got {value!r}"})
    if errors:
        raise RequestValidationError([{**e, "type": "strict_query"} for e in errors])
