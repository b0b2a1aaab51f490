from __future__ import annotations

from tests.support import communicator, receive_type


async def test_message_round_trip_in_process(tenant_a, make_user, access_token):
    user = make_user(tenant_a)
    comm = communicator(tenant_a.domain, f"/ws/chat/general/?token={access_token(user)}")
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to({"type": "message", "message": "hello"})
    frame = await receive_type(comm, "chat.message")
    assert frame["message"] == "hello"
    assert frame["user"] == user.username
    assert frame["seq"] >= 1
    await comm.disconnect()
