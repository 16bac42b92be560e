//! Hook `{{name}}`: a route runs it with `hooks: [{{name}}]`.

use refractium_plugin_sdk::hook::{Action, Direction, Hook};
use refractium_plugin_sdk::{Detection, Peer};

pub struct {{Type}};

/// What the hook keeps for one connection.
#[derive(Default)]
pub struct Session {
    /// Bytes the client has sent.
    sent: u64,
}

impl Hook for {{Type}} {
    const NAME: &'static str = "{{name}}";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Session = Session;

    /// `config` is the YAML's `plugins.config.{{name}}` as JSON, or `null`.
    fn new(_config: &str) -> Result<Self, String> {
        Ok({{Type}})
    }

    fn open(&self, _peer: &Peer, _detection: &Detection, _route: &str) -> Session {
        Session::default()
    }

    /// Fill this in. Each chunk from either side comes here: forward it
    /// (changed or not), hold it (forward less), answer and close
    /// (`Action::Respond`), close, or `Action::Pass` to let the rest of a
    /// direction through without the hook. This one counts what the client
    /// sends and passes the server's bytes.
    fn on_data(&self, session: &mut Session, direction: Direction, data: Vec<u8>) -> Action {
        match direction {
            Direction::ClientToServer => {
                session.sent += data.len() as u64;
                Action::Forward(data)
            }
            Direction::ServerToClient => Action::Pass(data),
        }
    }
}

refractium_plugin_sdk::export_hook!({{Type}});

#[cfg(test)]
mod tests {
    use super::*;
    use refractium_plugin_sdk::testing::check_hook_splits;

    #[test]
    fn the_client_stream_goes_through_unchanged_however_it_is_split() {
        let hook = {{Type}}::new("null").expect("config");
        let run = check_hook_splits(&hook, Direction::ClientToServer, b"hello, server\r\n");
        assert_eq!(run.output, b"hello, server\r\n");
    }
}
