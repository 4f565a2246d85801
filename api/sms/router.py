"""POST /v1/sms/inbound: the SMS gateway's webhook (Twilio wire format, signed, no bearer token)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Header, Request, Response

from api.deps import ClockDep, SessionDep, SettingsDep
from api.errors import ErrorBody
from api.sms import service
from api.sms.errors import BadSignature

router = APIRouter(prefix="/v1/sms", tags=["sms"])
MAX_FIELD_CHARS = 1600


async def signed_form(
    request: Request,
    settings: SettingsDep,
    signature: Annotated[str | None, Header(alias="X-Twilio-Signature")] = None,
) -> dict[str, str]:
    """The form fields, once X-Twilio-Signature is checked over every one of them (else 403)."""
    raw = await request.body()
    try:
        params = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        msg = "the form is not UTF-8"
        raise BadSignature(msg) from exc
    url = service.signed_url(
        settings,
        request_url=str(request.url),
        path=request.url.path,
        query=request.url.query,
    )
    service.check_signature(settings, url=url, params=params, signature=signature)
    return {k: v[:MAX_FIELD_CHARS] for k, v in params}


SignedForm = Annotated[dict[str, str], Depends(signed_form)]
E403: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "missing or wrong X-Twilio-Signature"},
    422: {"model": ErrorBody, "description": "malformed request headers"},
}


@router.post(
    "/inbound",
    response_class=Response,
    summary="An SMS reply to an alert (gateway webhook)",
    responses={
        200: {"content": {"text/xml": {}}, "description": "TwiML <Message> to the sender"},
        **E403,
    },
)
def inbound(
    form: SignedForm, session: SessionDep, settings: SettingsDep, clock: ClockDep
) -> Response:
    """1/yes/y/ok accepts, 2/no/n declines the sender's newest alert; stop pauses alerts."""
    message = service.inbound_message(form)
    text = None
    if message is not None:
        sid, sender, body = message
        text = service.handle_reply(
            session, settings, sender=sender, body=body, sid=sid, now=clock.now()
        )
    return Response(content=service.twiml(text), media_type="text/xml")
