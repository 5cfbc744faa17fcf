"""Service ports are drawn from below the kernel's ephemeral range.

A port inside that range can be taken, between the check and the service's bind, by the local end
of any outgoing connection on the machine (CI lost a run to exactly that: a bench's bank found its
port 33924 in use). Below the range only an explicit bind can take it.
"""
from __future__ import annotations

import socket

import pytest

from cbdc import supervisor
from cbdc.supervisor import LOWEST_SERVICE_PORT, StartError, free_port_block


def test_a_block_lies_below_the_ephemeral_range_and_is_free():
    low = supervisor._ephemeral_low()
    for _ in range(20):
        base = free_port_block(3)
        assert LOWEST_SERVICE_PORT <= base and base + 3 <= low
        sockets = [socket.socket() for _ in range(3)]
        try:
            for offset, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", base + offset))
        finally:
            for sock in sockets:
                sock.close()


def test_a_taken_port_is_never_handed_out(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", LOWEST_SERVICE_PORT + 1))
        held.listen()
        # A range of two possible bases, both of whose blocks include the held port.
        monkeypatch.setattr(supervisor, "_ephemeral_low", lambda: LOWEST_SERVICE_PORT + 4)
        with pytest.raises(StartError, match="no block of free ports"):
            free_port_block(2)


def test_no_room_below_the_range_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(supervisor, "_ephemeral_low", lambda: LOWEST_SERVICE_PORT + 1)
    with pytest.raises(StartError, match="below the ephemeral port range"):
        free_port_block(3)
