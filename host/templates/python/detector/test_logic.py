"""Native tests of the logic: `python3 -m unittest` in this directory."""

import unittest

import logic

# First bytes of some other protocols, none of which may match.
OTHERS = {
    "http": b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "tls": bytes.fromhex("160301020001"),
    "ssh": b"SSH-2.0-OpenSSH_9.6\r\n",
    "empty line": b"\r\n",
}


class DetectTest(unittest.TestCase):
    def test_its_first_bytes_match(self):
        self.assertIsInstance(logic.detect(b"{{NAME}} hello\r\n"), logic.Matched)

    def test_every_shorter_start_is_waited_for(self):
        greeting = b"{{NAME}} "
        for n in range(len(greeting)):
            self.assertIsInstance(logic.detect(greeting[:n]), logic.NeedMore, greeting[:n])

    def test_other_protocols_do_not_match(self):
        for name, data in OTHERS.items():
            self.assertIsInstance(logic.detect(data), logic.NoMatch, name)


if __name__ == "__main__":
    unittest.main()
