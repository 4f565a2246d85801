"""raise_alert: one server-side call stores a new alert, its ranking and its first wave's outbox

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

POST /v1/alerts used to take about twenty statements (lock, idempotency lookup, rate count,
inserts, re-reads); under load the per-statement client work, not PostgreSQL, was the cost.
``ern_raise_alert`` does the same steps in one round trip, inside the caller's transaction:

1. ``pg_advisory_xact_lock(p_lock_key)`` serialises one requester's raises (idempotency and
   rate limit are then race-free);
2. a key used within the idempotency window answers ``replay`` (same body hash) or
   ``key_reused`` (other body) with the existing alert's id; an older use of the key is
   renamed ``<key>#expired:<id>`` so the key makes a new alert;
3. with ``p_rate_limit`` set, ``rate_limited`` when the requester already has that many live
   alerts since ``p_rate_since`` (``oldest`` says when the first of them leaves the window);
4. otherwise the alert, its ranked candidates (the first ``p_wave_size`` in wave 1 with state
   ``p_first_state``, the rest in reserve) and the outbox rows are inserted, the outbox
   workers are woken (NOTIFY, delivered on commit), and the answer is ``created``.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SIGNATURE = """ern_raise_alert(
    p_lock_key bigint, p_id uuid, p_requester uuid, p_key text, p_hash bytea,
    p_kind text, p_needed integer, p_note text, p_lon double precision, p_lat double precision,
    p_presence_at timestamptz, p_exercise boolean, p_ranking text, p_now timestamptz,
    p_next_wave_at timestamptz, p_key_since timestamptz,
    p_rate_limit integer, p_rate_since timestamptz,
    p_members uuid[], p_etas double precision[], p_modes text[],
    p_wave_size integer, p_first_state text, p_notified_at timestamptz,
    p_delivery_ids text[], p_delivery_members uuid[], p_channels text[], p_payloads jsonb[]
)"""

FUNCTION = f"""
CREATE FUNCTION {SIGNATURE}
RETURNS TABLE (outcome text, alert_id uuid, live_count bigint, oldest timestamptz)
LANGUAGE plpgsql
AS $$
DECLARE
    v_existing_id uuid;
    v_existing_hash bytea;
    v_existing_at timestamptz;
    v_count bigint;
    v_oldest timestamptz;
    v_queued integer;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);

    SELECT a.id, a.request_hash, a.created_at
      INTO v_existing_id, v_existing_hash, v_existing_at
      FROM alert a
     WHERE a.requester_id = p_requester AND a.idempotency_key = p_key;
    IF FOUND THEN
        IF v_existing_at > p_key_since THEN
            IF v_existing_hash = p_hash THEN
                RETURN QUERY SELECT 'replay'::text, v_existing_id, NULL::bigint, NULL::timestamptz;
            ELSE
                RETURN QUERY SELECT 'key_reused'::text, v_existing_id, NULL::bigint,
                    NULL::timestamptz;
            END IF;
            RETURN;
        END IF;
        -- Past the window the key is free again; the old alert keeps it under a name no
        -- client sends.
        UPDATE alert SET idempotency_key = p_key || '#expired:' || v_existing_id::text
         WHERE id = v_existing_id;
    END IF;

    IF p_rate_limit IS NOT NULL THEN
        SELECT count(*), min(a.created_at) INTO v_count, v_oldest
          FROM alert a
         WHERE a.requester_id = p_requester AND a.created_at > p_rate_since AND NOT a.exercise;
        IF v_count >= p_rate_limit THEN
            RETURN QUERY SELECT 'rate_limited'::text, NULL::uuid, v_count, v_oldest;
            RETURN;
        END IF;
    END IF;

    INSERT INTO alert (id, requester_id, idempotency_key, request_hash, kind, needed, note,
                       location, presence_at, exercise, status, ranking, wave, next_wave_at,
                       created_at)
    VALUES (p_id, p_requester, p_key, p_hash, p_kind, p_needed, p_note,
            ST_SetSRID(ST_MakePoint(p_lon, p_lat), 4326), p_presence_at, p_exercise, 'open',
            p_ranking, 1, p_next_wave_at, p_now);

    INSERT INTO alert_responder (alert_id, member_id, position, eta_s, mode, wave, state,
                                 notified_at)
    SELECT p_id, r.member_id, (r.n - 1)::integer, r.eta_s, r.mode,
           CASE WHEN r.n <= p_wave_size THEN 1 END,
           CASE WHEN r.n <= p_wave_size THEN p_first_state ELSE 'ranked' END,
           CASE WHEN r.n <= p_wave_size THEN p_notified_at END
      FROM unnest(p_members, p_etas, p_modes) WITH ORDINALITY AS r(member_id, eta_s, mode, n);

    INSERT INTO outbox (delivery_id, alert_id, member_id, channel, message_kind, payload,
                        state, attempts, next_attempt_at, created_at)
    SELECT d.delivery_id, p_id, d.member_id, d.channel, 'alert', d.payload,
           'pending', 0, p_now, p_now
      FROM unnest(p_delivery_ids, p_delivery_members, p_channels, p_payloads)
           AS d(delivery_id, member_id, channel, payload)
    ON CONFLICT (delivery_id) DO NOTHING;
    GET DIAGNOSTICS v_queued = ROW_COUNT;
    IF v_queued > 0 THEN
        -- api.notify.repository.WAKEUP_CHANNEL
        PERFORM pg_notify('ern_outbox', '');
    END IF;

    RETURN QUERY SELECT 'created'::text, p_id, NULL::bigint, NULL::timestamptz;
END;
$$
"""


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
