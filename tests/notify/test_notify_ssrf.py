"""Webhook URLs are the members' choice: by default they may not point into private networks."""

from __future__ import annotations

import pytest

from api.notify.channels import public_address
from api.notify.errors import PermanentDeliveryError
from tests.notify.conftest import HttpReceiver, deliveries


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata services
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "localhost",
    ],
)
def test_non_public_hosts_are_refused(host: str) -> None:
    with pytest.raises(PermanentDeliveryError, match="non-public"):
        public_address(host, 80, what="webhook")


@pytest.mark.parametrize("host", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_public_addresses_are_used_as_they_are(host: str) -> None:
    assert public_address(host, 8080, what="webhook") == (host, 8080)


def test_a_webhook_into_the_services_network_fails_without_a_request(
    make_member, enqueue_committed, make_worker, notify_settings, committed, webhook: HttpReceiver
) -> None:
    strict = notify_settings.model_copy(update={"webhook_allow_private": False})
    member = make_member(webhook_url=f"{webhook.url}/internal")
    alert_id = enqueue_committed(member)
    worker = make_worker(strict)
    assert worker.run_once() == 1
    assert webhook.requests == []
    (row,) = deliveries(committed, alert_id)
    assert row.state == "failed" and row.attempts == 1
    assert "non-public" in (row.last_error or "")


def test_the_operators_sms_gateway_may_be_private(
    make_member, enqueue_committed, make_worker, notify_settings, committed, sms_gateway
) -> None:
    strict = notify_settings.model_copy(update={"webhook_allow_private": False})
    member = make_member(phone="+358401234567")
    alert_id = enqueue_committed(member)
    assert make_worker(strict).run_once() == 1
    assert len(sms_gateway.requests) == 1
    assert {r.state for r in deliveries(committed, alert_id)} == {"sent"}


def test_allowed_private_webhooks_are_delivered(
    make_member, enqueue_committed, make_worker, committed, webhook: HttpReceiver
) -> None:
    member = make_member(webhook_url=f"{webhook.url}/ok")
    alert_id = enqueue_committed(member)
    assert make_worker().run_once() == 1
    assert len(webhook.requests) == 1
    assert {r.state for r in deliveries(committed, alert_id)} == {"sent"}
