"""Close codes reach the server as plain ints: daphne (autobahn) refuses int subclasses."""

from __future__ import annotations

from tests.support import communicator


async def test_close_code_of_a_bad_token_is_a_plain_int(tenant_a):
    comm = communicator(tenant_a.domain, "/ws/chat/general/?token=garbage")
    connected, _ = await comm.connect()
    assert connected
    message = await comm.receive_output(timeout=10)
    assert message["type"] == "websocket.close"
    assert type(message["code"]) is int
    assert message["code"] == 4401


async def test_close_code_of_a_bad_room_name_is_a_plain_int(tenant_a, make_user, access_token):
    token = access_token(make_user(tenant_a))
    comm = communicator(tenant_a.domain, f"/ws/chat/a.b/?token={token}")
    connected, _ = await comm.connect()
    assert connected
    message = await comm.receive_output(timeout=10)
    assert message["type"] == "websocket.close"
    assert type(message["code"]) is int
    assert message["code"] == 4400
