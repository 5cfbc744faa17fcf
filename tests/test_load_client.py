"""The benchmark's light HTTP/1.1 client (loadtest/http_client.py) against a real aiohttp server on
loopback: answers framed by Content-Length, kept-alive connections reused, and every answer it
cannot use (chunked, cut short, too slow) an error of that request, never a hang."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from loadtest.http_client import ClientFailure, LoadClient


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"got": len(body), "peer": request.transport.get_extra_info("peername")[1]},
                             status=201 if body else 400)


async def _chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b"{}")
    await response.write_eof()
    return response


async def _cut(request: web.Request) -> web.Response:
    request.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
    request.transport.close()
    await asyncio.sleep(0.5)
    return web.Response()


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response()


@pytest.fixture
async def server():
    app = web.Application()
    app.router.add_post("/echo", _echo)
    app.router.add_post("/chunked", _chunked)
    app.router.add_post("/cut", _cut)
    app.router.add_post("/slow", _slow)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


async def test_answers_are_read_and_connections_kept_alive(server):
    client = LoadClient("127.0.0.1", server.port)
    head = client.request_head("/echo", 5)
    peers = set()
    for _ in range(20):
        status, body = await client.post(head, b"hello")
        assert status == 201 and b'"got": 5' in body
        peers.add(body)
    assert len(peers) == 1                       # one connection served all twenty, one after another
    status, body = await client.post(client.request_head("/echo", 0), b"")
    assert status == 400                         # an error status is an answer, not a failure
    answers = await asyncio.gather(*(client.post(head, b"hello") for _ in range(10)))
    assert all(status == 201 for status, _ in answers)
    client.close()


@pytest.mark.parametrize("path, reason", [("/chunked", "unsupported_framing"), ("/cut", "connection_lost")])
async def test_an_unusable_answer_fails_that_request_only(server, path, reason):
    client = LoadClient("127.0.0.1", server.port)
    with pytest.raises(ClientFailure) as exc:
        await client.post(client.request_head(path, 2), b"{}")
    assert exc.value.reason == reason
    status, _ = await client.post(client.request_head("/echo", 2), b"{}")   # a fresh connection works
    assert status == 201
    client.close()


async def test_no_answer_in_time_is_a_timeout_and_no_server_a_connect_failure(server):
    client = LoadClient("127.0.0.1", server.port, timeout_seconds=0.2)
    with pytest.raises(ClientFailure) as exc:
        await client.post(client.request_head("/slow", 2), b"{}")
    assert exc.value.reason == "timeout"
    client.close()
    port = server.port
    await server.close()
    gone = LoadClient("127.0.0.1", port)
    with pytest.raises(ClientFailure) as exc:
        await gone.post(gone.request_head("/echo", 2), b"{}")
    assert exc.value.reason == "connect_failed"


def test_every_phase_of_a_sweep_has_a_client_for_each_of_its_jobs():
    """A job keeps its built request head across phases (the auto sweep's probe takes a budget it may
    not use up; the next phase starts inside it): each phase still gets a client per target."""
    from loadtest.bench_http import Job, _clients
    jobs = [Job(f"http://127.0.0.1:{8000 + n % 2}/v1/transfers", b"{}", 1) for n in range(10)]
    probe = _clients(jobs[:6])
    phase = _clients(jobs[3:6])                 # jobs the probe prepared (and did not send)
    assert set(probe) == set(phase) == {"127.0.0.1:8000", "127.0.0.1:8001"}
    assert set(_clients(jobs[3:])) == set(phase)
    assert all(job.origin in phase and job.head.startswith(b"POST /v1/transfers HTTP/1.1\r\n") for job in jobs[3:])
    assert b"Host: 127.0.0.1:8001\r\n" in jobs[1].head and b"Content-Length: 2\r\n\r\n" in jobs[1].head
