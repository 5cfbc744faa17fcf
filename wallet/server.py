"""`cbdc-wallet serve`: the wallet's own small web page, on 127.0.0.1 only.

Plain HTML forms (no script at all: the Content-Security-Policy forbids it), posting to the wallet
process, which does the work through ``wallet.actions`` exactly as the CLI does. The wallet is
unlocked on the command line before the server starts; the page never asks for the password.

Protection, in the order the middleware checks it:

1. Host: the request's Host must be ``127.0.0.1:<port>`` or ``localhost:<port>`` (DNS rebinding).
2. Session: a random token is printed once, in the URL (``/?token=...``). The first visit with it
   sets an HttpOnly, SameSite=Strict cookie holding the token and redirects to ``/`` (dropping the
   token from the address bar); every later request needs that cookie. Without it: 403.
3. CSRF, on every POST: the Origin header must be this server's own origin (a POST without one is
   refused), and the form must carry the session's CSRF token (a second random value, embedded in
   each form). Both are compared in constant time.

Results of a form are shown once on the next page (post-redirect-get); a bank's refusal is shown
in plain words (wallet.refusals).
"""
from __future__ import annotations

import asyncio
import hmac
import html
import secrets
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web

from shared.amounts import format_major, parse_major
from shared.errors import CBDCError
from wallet import actions
from wallet.bank import WalletBank
from wallet.journal import Journal, journal_path
from wallet.keystore import Account, Keystore
from wallet.requests import qr_svg_inline

HOST = "127.0.0.1"
COOKIE = "cbdc_wallet_session"
FORM_BYTES_MAX = 8 * 1024
PAGE_HISTORY = 20
PAY_WAIT_SECONDS = 10.0
CSP = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


@dataclass
class PageState:
    keystore: Keystore
    account: Account
    bank_url: str
    timeout_seconds: float
    session_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    port: int = 0
    flash: tuple[str, str] | None = None          # (kind, text), shown once
    ctx: actions.Context | None = None

    def allowed_hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/?token={self.session_token}"


STATE = web.AppKey("state", PageState)


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


def _refuse(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain")


@web.middleware
async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    state = request.app[STATE]
    if request.host not in state.allowed_hosts():
        response: web.StreamResponse = _refuse(421, "wrong host: open the URL printed by cbdc-wallet serve")
    elif request.method == "GET" and request.path == "/" and "token" in request.query:
        if _same(request.query.get("token"), state.session_token):
            response = _see_other()
            response.set_cookie(COOKIE, state.session_token, httponly=True, samesite="Strict", path="/")
        else:
            response = _refuse(403, "this link is not valid: open the URL printed by cbdc-wallet serve")
    elif not _same(request.cookies.get(COOKIE), state.session_token):
        response = _refuse(403, "no wallet session: open the URL printed by cbdc-wallet serve")
    elif request.method == "POST" and not _same(request.headers.get("Origin"), f"http://{request.host}"):
        response = _refuse(403, "refused: this form was not sent from the wallet page (Origin)")
    else:
        if request.method == "POST":
            if request.content_length is None or request.content_length > FORM_BYTES_MAX:
                return _headers(_refuse(413, "form too large"))
            form = await request.post()
            if not _same(form.get("csrf") if isinstance(form.get("csrf"), str) else None, state.csrf_token):
                return _headers(_refuse(403, "refused: the form's CSRF token is missing or wrong"))
        response = await handler(request)
    return _headers(response)


def _see_other(location: str = "/") -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _headers(response: web.StreamResponse) -> web.StreamResponse:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------------------------------------
# the page

async def page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    ctx = state.ctx
    assert ctx is not None
    flash, state.flash = state.flash, None
    after = request.query.get("after", "0")
    after_seq = int(after) if after.isdigit() and len(after) < 18 else 0
    try:
        info: dict[str, Any] | None = await actions.summary(ctx)
        entries = await actions.history(ctx, after_seq, PAGE_HISTORY)
    except CBDCError as exc:
        info, entries = None, []
        flash = flash or ("error", exc.detail or str(exc))
    return web.Response(text=render(state, info, entries, after_seq, flash), content_type="text/html")


def render(state: PageState, info: dict | None, entries: list[dict], after_seq: int,
           flash: tuple[str, str] | None) -> str:
    e = html.escape
    account = state.account
    csrf = f'<input type="hidden" name="csrf" value="{e(state.csrf_token)}">'
    if info is None:
        balance = '<p id="balance" class="error">balance unavailable</p>'
    else:
        limits = info["limits"]
        balance = (f'<p id="balance" class="balance">{e(format_major(info["balance"]))}</p>'
                   f'<p class="small">tier {e(limits["kyc_tier"])}: up to {e(format_major(limits["per_payment"]))} '
                   f'a payment, {e(format_major(limits["remaining_today"]))} left today, room to receive '
                   f'{e(format_major(limits["room_to_hold"]))}'
                   + (f'; {info["pending_payments"]} payment(s) pending' if info["pending_payments"] else "") + "</p>")
    rows = "".join(
        f'<tr><td>{entry["seq"]}</td><td>{e(entry["kind"])}</td>'
        f'<td class="num">{"+" if entry["change"] > 0 else ""}{e(format_major(entry["change"]))}</td>'
        f'<td>{e((entry.get("counterparty") or "")[:24])}</td><td>{e(entry.get("reference") or "")}</td></tr>'
        for entry in entries)
    more = (f'<a id="older" href="/?after={entries[-1]["seq"]}">next page</a>' if len(entries) == PAGE_HISTORY else "")
    first = '<a href="/">first page</a> ' if after_seq else ""
    message = (f'<p id="message" class="{e(flash[0])}" role="status">{e(flash[1])}</p>' if flash else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CBDC wallet: {e(account.name)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; max-width: 52rem; margin: 1.5rem auto; padding: 0 1rem; color: #222; }}
section {{ border: 1px solid #ddd; border-radius: 6px; padding: .6rem 1rem; margin: .8rem 0; }}
.balance {{ font-size: 2rem; margin: .2rem 0; }} .small {{ font-size: .85rem; color: #555; }}
.error {{ background: #fde8e8; border: 1px solid #e0a0a0; padding: .5rem; }}
.ok {{ background: #e6f6e6; border: 1px solid #9c9; padding: .5rem; }}
label {{ display: block; margin: .35rem 0; }} button {{ margin: .2rem 0; }}
input[type=text] {{ width: 100%; box-sizing: border-box; font-family: monospace; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9rem; }} td, th {{ padding: .2rem .4rem; border-bottom: 1px solid #eee; text-align: left; }}
.num {{ text-align: right; font-family: monospace; }} code {{ word-break: break-all; }}
</style></head><body>
<h1>Wallet <small>{e(account.name)} at {e(account.bank)}</small></h1>
{message}
<section><h2>Balance</h2>{balance}</section>
<section><h2>Pay</h2>
<form method="post" action="/pay">{csrf}
<label>To (an address or a cbdc: payment request)<input type="text" name="payee" id="payee" required maxlength="1024"></label>
<label>Amount (e.g. 12.50; empty for a payment request) <input name="amount" id="amount" inputmode="decimal" size="12"></label>
<label>Memo (on-us) <input name="memo" id="memo" maxlength="140" size="24"></label>
<button type="submit" id="pay">Pay</button></form></section>
<section><h2>Receive</h2><p>Your address: <code id="address">{e(account.address)}</code></p>
<div id="qr">{qr_svg_inline(account.address)}</div></section>
<section><h2>Fund and defund</h2>
<form method="post" action="/fund">{csrf}<label>From the deposit account <input name="amount" id="fund-amount" size="12" required></label>
<button type="submit" id="fund">Fund</button></form>
<form method="post" action="/defund">{csrf}<label>Back to the deposit account <input name="amount" id="defund-amount" size="12" required></label>
<button type="submit" id="defund">Defund</button></form></section>
<section><h2>History</h2><table id="history"><tr><th>#</th><th>kind</th><th class="num">change</th><th>counterparty</th><th>reference</th></tr>
{rows}</table><p>{first}{more}</p></section>
</body></html>
"""


def _form_text(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


async def _act(request: web.Request, work: Callable[[actions.Context, Any], Awaitable[str]]) -> web.Response:
    state = request.app[STATE]
    assert state.ctx is not None
    try:
        state.flash = ("ok", await work(state.ctx, await request.post()))
    except CBDCError as exc:
        state.flash = ("error", exc.detail or str(exc))
    return _see_other()


async def pay(request: web.Request) -> web.Response:
    async def work(ctx: actions.Context, form: Any) -> str:
        amount_text = _form_text(form, "amount")
        result = await actions.pay(ctx, _form_text(form, "payee"), parse_major(amount_text) if amount_text else None,
                                   _form_text(form, "memo"))
        if result.kind == "transfer":
            return f"Paid {format_major(result.amount)} to {result.payee} (same bank)."
        if result.through_bank:
            return (f"Paid {format_major(result.amount)} to {result.payee} (same bank; what they may not hold "
                    "goes to their deposit account).")
        final = await actions.wait_payment(ctx, result.payment_id, PAY_WAIT_SECONDS)
        return f"Sent {format_major(result.amount)} to {result.payee} (cross-bank). {actions.describe_payment(final)}."
    return await _act(request, work)


async def fund(request: web.Request) -> web.Response:
    async def work(ctx: actions.Context, form: Any) -> str:
        amount = parse_major(_form_text(form, "amount"))
        answer, _ = await actions.fund(ctx, amount)
        return f"Funded {format_major(amount)} from the deposit account ({answer['state']})."
    return await _act(request, work)


async def defund(request: web.Request) -> web.Response:
    async def work(ctx: actions.Context, form: Any) -> str:
        amount = parse_major(_form_text(form, "amount"))
        answer, _ = await actions.defund(ctx, amount)
        return f"Moved {format_major(amount)} back to the deposit account ({answer.get('state')})."
    return await _act(request, work)


def create_app(state: PageState) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=FORM_BYTES_MAX)
    app[STATE] = state

    async def context(app: web.Application):
        journal = Journal(journal_path(state.keystore.path))
        bank = WalletBank(state.bank_url, state.keystore, state.account, timeout_seconds=state.timeout_seconds)
        state.ctx = actions.Context(state.keystore, state.account, journal, bank)
        yield
        await bank.close()
        journal.close()

    app.cleanup_ctx.append(context)
    app.add_routes([web.get("/", page), web.post("/pay", pay), web.post("/fund", fund), web.post("/defund", defund)])
    return app


async def serve(state: PageState, port: int, ready: Callable[[PageState], None]) -> None:
    """Serve until SIGINT or SIGTERM; call ``ready`` once the port is bound."""
    runner = web.AppRunner(create_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    state.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ready(state)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(keystore: Keystore, account: Account, bank_url: str, timeout_seconds: float, port: int) -> int:
    state = PageState(keystore, account, bank_url, timeout_seconds)

    def ready(state: PageState) -> None:
        print(f"wallet page for {account.name} at {account.bank}: open this URL once (it holds the session key):")
        print(state.url, flush=True)
        print("stop with Ctrl-C", file=sys.stderr, flush=True)

    asyncio.run(serve(state, port, ready))
    return 0
