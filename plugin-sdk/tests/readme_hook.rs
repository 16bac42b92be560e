//! The hook of the README's "Writing a hook in Rust", compiled and tested
//! natively as an author would: keep the two in step.

use refractium_plugin_sdk::hook::{Action, Direction, Directions, Hook};
use refractium_plugin_sdk::{Detection, Peer};

pub struct Banner {
    from: Vec<u8>,
    to: Vec<u8>,
}

impl Hook for Banner {
    const NAME: &'static str = "banner";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    /// Per connection: the server's bytes held while they may still become `from`.
    type Session = Vec<u8>;
    /// Only the server's bytes: the client's are relayed without the hook.
    const DIRECTIONS: Directions = Directions::ServerToClient;

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Banner { from: b"SSH-2.0-OpenSSH_9.2".to_vec(), to: b"SSH-2.0-Server".to_vec() })
    }

    fn open(&self, _peer: &Peer, _detection: &Detection, _route: &str) -> Vec<u8> {
        Vec::new()
    }

    fn on_data(&self, held: &mut Vec<u8>, _direction: Direction, data: Vec<u8>) -> Action {
        held.extend(data);
        if held.len() < self.from.len() && self.from.starts_with(held) {
            return Action::Forward(Vec::new()); // could still be the banner: hold it
        }
        let mut out = std::mem::take(held);
        if out.starts_with(&self.from) {
            out.splice(..self.from.len(), self.to.iter().copied());
        }
        Action::Pass(out) // the rest goes through as on an unhooked route
    }

    fn on_end(&self, held: &mut Vec<u8>, _direction: Direction) -> Action {
        Action::Forward(std::mem::take(held))
    }
}

refractium_plugin_sdk::export_hook!(Banner);

#[cfg(test)]
mod tests {
    use super::*;
    use refractium_plugin_sdk::testing::check_hook_splits;

    #[test]
    fn the_banner_is_rewritten_wherever_it_is_split() {
        let hook = Banner::new("null").expect("config");
        let run = check_hook_splits(&hook, Direction::ServerToClient, b"SSH-2.0-OpenSSH_9.2\r\nrest");
        assert_eq!(run.output, b"SSH-2.0-Server\r\nrest");
    }
}
