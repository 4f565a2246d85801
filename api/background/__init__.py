"""Background work, and which process runs it: delivery (outbox) and wave escalation.

What runs where:

- ``ern serve`` (api.cli.serve) serves HTTP only. By default (ERN_WORKER_PROCESS=true) it
  starts one child process, ``ern worker --parent-pid``, supervised and restarted by
  :mod:`api.background.supervisor`, whatever ``--workers`` says; with
  ERN_WORKER_PROCESS=false each server process runs the workers as threads
  (:mod:`api.background.threads`, also what tests use); ERN_RUN_WORKERS=false: no workers.
- ``ern worker`` (api.cli.worker -> :mod:`api.background.worker`) runs the outbox worker
  and the escalation worker until SIGINT/SIGTERM, or until its parent ``ern serve`` is gone.
  Run M of them beside N servers: the outbox is leased with ``FOR UPDATE SKIP LOCKED``.
- The loop bodies stay in their domains: ``api.notify.worker.OutboxWorker`` (leases due
  deliveries, sends them, retries with backoff) and ``api.alerts.escalation.EscalationWorker``
  (the next wave when too few accepted in time; the retention purge).
"""
