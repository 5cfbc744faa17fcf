"""`cbdc-wallet serve` against a running system: the session token and CSRF checks (plain HTTP), and
a real browser (Playwright for Python driving Debian's chromium, never a downloaded one) that opens
the page through its token URL, pays on-us and cross-bank, sees the new balance and a refusal in
plain words, funds and defunds, and saves a screenshot to test-artifacts/wallet-page.png."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from shared.address import encode_address
from shared.crypto import PrivateKey
from tests.system_harness import ROOT, System
from tests.wallet_harness import cli_env, new_wallet

CHROMIUM = Path("/usr/bin/chromium")


def _ensure_chromium() -> None:
    """Debian's chromium, installed if missing (never a downloaded browser); fails clearly if it can't be."""
    if CHROMIUM.exists():
        return
    import subprocess
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=300, env=env)
    out = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, text=True,
                         timeout=900, env=env)
    assert CHROMIUM.exists(), f"could not install Debian's chromium (needs root and apt):\n{out.stderr[-2000:]}"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"
SERVE_START_SECONDS = 30.0
BROWSER_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
async def system(pg_server):
    s = System(pg_server)
    try:
        await s.start()
        yield s
    finally:
        await s.stop()


@pytest.fixture(scope="module")
async def users(system, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page")
    a, b = system.services["bank-a"].url, system.services["bank-b"].url
    alice, bob, carol = await asyncio.gather(
        new_wallet(tmp, "alice", "bank-a", a, tier="full", demo_deposit="500.00"),
        new_wallet(tmp, "bob", "bank-a", a),
        new_wallet(tmp, "carol", "bank-b", b))
    await alice.run("fund", "200.00")
    return alice, bob, carol


@pytest.fixture(scope="module")
async def page_url(users):
    """``cbdc-wallet serve --port 0`` for alice (password from the environment); yields the token URL."""
    alice = users[0]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wallet.cli", "serve", "--port", "0", cwd=ROOT, env=cli_env(alice.env),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    try:
        url = ""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SERVE_START_SECONDS
        while not url.startswith("http://127.0.0.1:"):
            assert loop.time() < deadline, "cbdc-wallet serve printed no URL"
            line = await asyncio.wait_for(process.stdout.readline(), SERVE_START_SECONDS)
            if not line:
                raise AssertionError(f"serve exited: {(await process.stderr.read()).decode()}")
            url = line.decode().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{43}", url), url
        yield url
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except asyncio.TimeoutError:
                os.kill(process.pid, signal.SIGKILL)
                await process.wait()


def _origin(url: str) -> str:
    return url.split("/?", 1)[0]


async def test_the_page_needs_the_session_token_and_forms_need_csrf_and_origin(page_url, users):
    alice, bob, _ = users
    origin, token = _origin(page_url), page_url.split("token=")[1]
    before = await alice.balance()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        async with http.get(origin + "/", allow_redirects=False) as r:
            assert r.status == 403 and "no wallet session" in await r.text()
        async with http.get(origin + "/?token=" + "x" * 43, allow_redirects=False) as r:
            assert r.status == 403
        async with http.get(origin + "/", headers={"Cookie": "cbdc_wallet_session=wrong"}) as r:
            assert r.status == 403
        async with http.get(page_url, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/"
            cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and f"cbdc_wallet_session={token}" in cookie
        session = {"Cookie": f"cbdc_wallet_session={token}"}
        async with http.get(origin + "/", headers=session) as r:
            text = await r.text()
            assert r.status == 200 and "script-src" not in r.headers["Content-Security-Policy"]
            assert "default-src 'none'" in r.headers["Content-Security-Policy"] and r.headers["X-Frame-Options"] == "DENY"
        csrf = re.search(r'name="csrf" value="([^"]+)"', text)[1]
        form = {"payee": bob.address, "amount": "1.00"}
        refusals = [
            ({**session, "Origin": origin}, form, 403, "CSRF"),                                   # no token
            ({**session, "Origin": origin}, {**form, "csrf": "A" * 43}, 403, "CSRF"),             # wrong token
            ({**session, "Origin": "http://evil.example"}, {**form, "csrf": csrf}, 403, "Origin"),  # foreign origin
            (session, {**form, "csrf": csrf}, 403, "Origin"),                                     # no Origin
            ({"Origin": origin}, {**form, "csrf": csrf}, 403, "session"),                         # no session cookie
            ({**session, "Origin": origin, "Host": "evil.example"}, {**form, "csrf": csrf}, 421, "host"),
        ]
        for headers, data, status, why in refusals:
            async with http.post(origin + "/pay", data=data, headers=headers, allow_redirects=False) as r:
                assert r.status == status, (why, r.status, await r.text())
        async with http.get(origin.replace("127.0.0.1", "localhost") + "/", allow_redirects=False,
                            headers={"Host": "attacker.example"}) as r:
            assert r.status == 421                                                               # DNS rebinding
    assert await alice.balance() == before                                                    # nothing moved


async def test_browser_pays_and_sees_the_new_balance(page_url, users):
    from playwright.async_api import async_playwright

    _ensure_chromium()
    alice, bob, carol = users
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            context.set_default_timeout(BROWSER_TIMEOUT_MS)
            page = await context.new_page()
            await page.goto(page_url)
            assert page.url == _origin(page_url) + "/"                       # the token left the address bar
            [cookie] = await context.cookies()
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert (await page.text_content("#balance")).strip() == "200.00"
            assert (await page.text_content("#address")).strip() == alice.address
            assert await page.locator("#qr svg").count() == 1

            await pay(page, bob.address, "12.50")                                        # on-us
            assert "Paid 12.50" in await page.text_content("#message")
            assert (await page.text_content("#balance")).strip() == "187.50"

            await pay(page, carol.address, "7.25")                                        # cross-bank
            assert "completed: the payee has been credited" in await page.text_content("#message")
            assert (await page.text_content("#balance")).strip() == "180.25"

            stranger = encode_address("bank-b", PrivateKey.generate().public_key)
            await pay(page, stranger, "1.00")                                             # refused in plain words
            message = await page.text_content("#message")
            assert "the payee's bank does not know that wallet" in message and "error" in \
                await page.get_attribute("#message", "class")

            await page.fill("#defund-amount", "30.25")
            await page.click("#defund")
            assert "Moved 30.25 back" in await page.text_content("#message")
            await page.fill("#fund-amount", "20.00")
            await page.click("#fund")
            assert "Funded 20.00" in await page.text_content("#message")
            assert (await page.text_content("#balance")).strip() == "170.00"
            assert await page.locator("#history tr").count() >= 6                     # header + 5 entries
            await page.screenshot(path=str(ARTIFACTS / "wallet-page.png"), full_page=True)
        finally:
            await browser.close()
    assert await bob.balance() == "12.50" and await carol.balance() == "7.25"
    assert (ARTIFACTS / "wallet-page.png").stat().st_size > 10_000


async def pay(page, payee: str, amount: str) -> None:
    await page.fill("#payee", payee)
    await page.fill("#amount", amount)
    await page.click("#pay")
    await page.wait_for_selector("#message")


async def test_the_system_converges(system: System, users):
    assert (await system.wait_converged()).ok
