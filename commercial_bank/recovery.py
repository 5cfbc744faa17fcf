"""The recovery loop: finishes whatever a crash, a timeout or an unreachable peer interrupted.

One task per process, started in the app's cleanup_ctx. Each pass (bounded: at most
``recovery_rows_max`` rows of each kind, every HTTP call under ``http_timeout_seconds``):

  fundings  debited -> funded -> minted (or failed, deposit returned)
  defunds   burned -> defunded -> credited
  payments  pending -> settled | refunded;  settled -> completed (re-push the notice)
  reservations (payee side) expired ones deleted, once per interval; a credited payment's went with
               its credit

Every step is idempotent (stored tier-1 bytes re-sent, deterministic tier-2 transactions, unique
payment ids at the central bank and at the payee bank), so a pass may safely repeat work another
pass, another process or a request handler is doing. The loop runs every
``recovery_interval_seconds``, at once when new work is signalled (a new outbound payment), and
again at once after a pass that moved a payment on (under load, passes follow each other).

It is also the settlement worker: a payment's first settlement attempt is this loop's. Of a bank's
worker processes, one at a time settles and pushes (a PostgreSQL advisory lock, taken per pass and
released with the connection if the process dies): every worker repeating the same settlements and
pushes would only multiply the work the central bank and the payee bank answer idempotently.
"""
from __future__ import annotations

import asyncio
import logging

from commercial_bank import store
from commercial_bank.funding import Flows
from commercial_bank.payments import Payments
from shared.errors import CBDCError

log = logging.getLogger(__name__)
SETTLEMENT_LOCK = 0x43424443_0001   # pg advisory lock key: the bank's settlement worker (one per database)


class Recovery:
    def __init__(self, flows: Flows, payments: Payments) -> None:
        self.flows = flows
        self.payments = payments
        self.bank = flows.bank
        self.interval_seconds = self.bank.settings.recovery_interval_seconds
        self.rows_max = self.bank.settings.recovery_rows_max
        self._swept_at = float("-inf")

    async def run(self) -> None:
        """Until cancelled: a pass, then wait for new work or the interval."""
        while True:
            backlog = False
            try:
                backlog = await self.run_once()
                self.bank.metrics.recovery_passes.labels("ok").inc()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.bank.metrics.recovery_passes.labels("error").inc()
                log.exception("recovery pass failed; retrying in %.1f s", self.interval_seconds)
            if backlog:
                await asyncio.sleep(0)
                continue
            try:
                await asyncio.wait_for(self.payments.wakeup.wait(), self.interval_seconds)
            except asyncio.TimeoutError:
                pass
            self.payments.wakeup.clear()

    async def run_once(self) -> bool:
        """One pass; True if it moved a payment on (then the next pass runs at once: there may be more)."""
        for row in await store.open_fundings(self.bank.pool, self.rows_max):
            await self._step("funding", row["funding_id"], self.flows.drive_funding(row))
        for row in await store.open_defunds(self.bank.pool, self.rows_max):
            await self._step("defund", row["defund_id"], self.flows.drive_defund(row))
        await self._sweep_reservations()
        async with self.bank.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", SETTLEMENT_LOCK):
                return False    # another worker process is settling: it will see these payments too
            try:
                settled = await self.payments.settle_pending()
                pushed = await self.payments.push_settled()
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", SETTLEMENT_LOCK)
        return settled + pushed > 0

    async def _sweep_reservations(self) -> None:
        """Delete expired reservations, once per interval (passes follow each other under load)."""
        now = asyncio.get_running_loop().time()
        if now - self._swept_at >= self.interval_seconds:
            self._swept_at = now
            await store.sweep_reservations(self.bank.pool, self.bank.now(), self.rows_max)

    @staticmethod
    async def _step(flow: str, ident: str, step) -> None:
        try:
            await step
        except CBDCError as exc:   # e.g. the central bank is not answering: next pass
            log.info("%s %s not finished: %s", flow, ident, exc.code)
