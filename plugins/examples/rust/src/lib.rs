//! `rs-hello`, one component that is both a detector and a hook, written
//! with the SDK:
//!
//! - the detector matches clients whose first bytes are `HELO-RS `;
//! - the hook swaps the case of the ASCII letters a client sends, passes
//!   the server's bytes at their first chunk, and logs how many bytes it
//!   rewrote when the client has finished.

use refractium_plugin_sdk::hook::{Action, Direction, Hook};
use refractium_plugin_sdk::{Detection, Detector, Peer, Verdict, log};

const GREETING: &[u8] = b"HELO-RS ";

pub struct Hello;

impl Detector for Hello {
    const NAME: &'static str = "rs-hello";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Hello)
    }

    fn detect(&self, data: &[u8], _peer: &Peer) -> Verdict {
        let n = data.len().min(GREETING.len());
        if data[..n] != GREETING[..n] {
            Verdict::NoMatch
        } else if n < GREETING.len() {
            Verdict::NeedMore(GREETING.len())
        } else {
            Verdict::Matched(Detection::new("rs-hello"))
        }
    }
}

pub struct SwapCase;

impl Hook for SwapCase {
    const NAME: &'static str = "rs-hello";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    /// Letters rewritten on this connection.
    type Session = u64;

    fn new(_config: &str) -> Result<Self, String> {
        Ok(SwapCase)
    }

    fn open(&self, _peer: &Peer, _detection: &Detection, _route: &str) -> u64 {
        0
    }

    fn on_data(&self, rewritten: &mut u64, direction: Direction, mut data: Vec<u8>) -> Action {
        if direction == Direction::ServerToClient {
            return Action::Pass(data);
        }
        // Byte by byte, in place: how the stream is split does not matter.
        for byte in &mut data {
            if byte.is_ascii_alphabetic() {
                *byte ^= 0x20;
                *rewritten += 1;
            }
        }
        Action::Forward(data)
    }

    fn on_end(&self, rewritten: &mut u64, direction: Direction) -> Action {
        if direction == Direction::ClientToServer {
            log::info(&format!("rewrote {rewritten} letters"));
        }
        Action::Forward(Vec::new())
    }
}

refractium_plugin_sdk::export_plugin!(Hello, SwapCase);

#[cfg(test)]
mod tests {
    use super::*;
    use refractium_plugin_sdk::Transport;
    use refractium_plugin_sdk::testing::{check_hook_splits, check_prefixes, other_protocols};

    #[test]
    fn the_greeting_matches_and_is_waited_for() {
        check_prefixes(&Hello, GREETING, &Peer::test(Transport::Tcp));
    }

    #[test]
    fn other_protocols_do_not_match() {
        for (name, bytes) in other_protocols() {
            assert_eq!(Hello.detect(&bytes, &Peer::test(Transport::Tcp)), Verdict::NoMatch, "{name}");
        }
    }

    #[test]
    fn the_client_letters_are_swapped_however_the_stream_is_split() {
        let run = check_hook_splits(&SwapCase, Direction::ClientToServer, b"HELO-RS Knock, knock 42\n");
        assert_eq!(run.output, b"helo-rs kNOCK, KNOCK 42\n");
    }
}
