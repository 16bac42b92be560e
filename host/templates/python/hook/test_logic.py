"""Native tests of the logic: `python3 -m unittest` in this directory."""

import unittest

import logic


def run(chunks):
    """What the server gets when the client sends `chunks` and then ends."""
    session, out = logic.Session("test"), b""
    for i, chunk in enumerate(chunks):
        action = session.on_data(logic.CLIENT_TO_SERVER, chunk)
        if isinstance(action, logic.Pass):
            # The rest of the stream goes through without the hook.
            return out + action.data + b"".join(chunks[i + 1 :])
        assert isinstance(action, logic.Forward), action
        out += action.data
    end = session.on_end(logic.CLIENT_TO_SERVER)
    assert isinstance(end, logic.Forward), end
    return out + end.data


class HookTest(unittest.TestCase):
    def test_the_client_stream_goes_through_unchanged_however_it_is_split(self):
        stream = b"hello, server\r\n"
        for cut in range(len(stream) + 1):
            self.assertEqual(run([stream[:cut], stream[cut:]]), stream, cut)

    def test_the_server_bytes_are_passed(self):
        action = logic.Session("test").on_data(logic.SERVER_TO_CLIENT, b"welcome\r\n")
        self.assertEqual(action, logic.Pass(b"welcome\r\n"))


if __name__ == "__main__":
    unittest.main()
