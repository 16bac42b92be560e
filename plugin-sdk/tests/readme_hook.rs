//! The hook of the README's "Writing a hook in Rust", compiled and tested
//! natively as an author would: keep the two in step.

use refractium_plugin_sdk::hook::{Action, Direction, Hook};
use refractium_plugin_sdk::{Detection, Peer};

pub struct Banner {
    from: Vec<u8>,
    to: Vec<u8>,
}

/// Per connection: the server's bytes held while they may still become `from`.
#[derive(Default)]
pub struct Pending {
    held: Vec<u8>,
    done: bool,
}

impl Hook for Banner {
    const NAME: &'static str = "banner";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Session = Pending;

    fn new(_config: &str) -> Result<Self, String> {
        Ok(Banner { from: b"SSH-2.0-OpenSSH_9.2".to_vec(), to: b"SSH-2.0-Server".to_vec() })
    }

    fn open(&self, _peer: &Peer, _detection: &Detection, _route: &str) -> Pending {
        Pending::default()
    }

    fn on_data(&self, s: &mut Pending, direction: Direction, data: Vec<u8>) -> Action {
        if s.done || direction == Direction::ClientToServer {
            return Action::Forward(data);
        }
        s.held.extend(data);
        if s.held.len() < self.from.len() && self.from.starts_with(&s.held) {
            return Action::Forward(Vec::new()); // could still be the banner: hold it
        }
        s.done = true;
        let mut out = std::mem::take(&mut s.held);
        if out.starts_with(&self.from) {
            out.splice(..self.from.len(), self.to.iter().copied());
        }
        Action::Forward(out)
    }

    fn on_end(&self, s: &mut Pending, _direction: Direction) -> Action {
        Action::Forward(std::mem::take(&mut s.held))
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
