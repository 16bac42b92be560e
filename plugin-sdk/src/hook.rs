//! Hooks: watch, rewrite, hold back or stop the bytes of every connection on
//! a route that lists the hook.
//!
//! A hook is one trait impl and one macro call. Its per-connection state is
//! a type of your own ([`Hook::Session`]); every method but [`Hook::new`]
//! and [`Hook::open`] has a default, stated on it, so a hook that only looks
//! at one direction writes only that:
//!
//! ```ignore
//! use refractium_plugin_sdk::hook::{Action, Direction, Hook};
//! use refractium_plugin_sdk::{Detection, Peer};
//!
//! /// Counts the bytes each client sends.
//! struct Meter;
//!
//! impl Hook for Meter {
//!     const NAME: &'static str = "meter";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     type Session = u64;
//!
//!     fn new(_config: &str) -> Result<Self, String> {
//!         Ok(Meter)
//!     }
//!
//!     fn open(&self, _peer: &Peer, _detection: &Detection, _route: &str) -> u64 {
//!         0
//!     }
//!
//!     fn on_data(&self, sent: &mut u64, direction: Direction, data: Vec<u8>) -> Action {
//!         if direction == Direction::ClientToServer {
//!             *sent += data.len() as u64;
//!         }
//!         Action::Forward(data)
//!     }
//! }
//!
//! refractium_plugin_sdk::export_hook!(Meter);
//! ```
//!
//! The phases of one connection: [`Hook::open`] once the route is chosen;
//! [`Hook::on_data`] for each chunk from either side (the client's first
//! bytes, read during detection, come first); [`Hook::on_end`] once per
//! side when it has finished sending. Chunks are split wherever the network
//! split them: [`crate::testing::check_hook_splits`] runs a hook over every
//! split of a stream and checks the output does not depend on it.
//!
//! A plugin that is both a detector and a hook exports both with
//! [`export_plugin!`](crate::export_plugin).

use crate::__bindings::refractium::plugin::types as wit;
use crate::{Detection, Peer};

/// Which way a chunk travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

/// The directions a hook is called for ([`Hook::DIRECTIONS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Directions {
    /// Chunks from both sides.
    Both,
    /// Only what the client sends.
    ClientToServer,
    /// Only what the server sends.
    ServerToClient,
}

impl Directions {
    /// Whether chunks travelling `direction` are given to the hook.
    pub const fn includes(self, direction: Direction) -> bool {
        matches!(
            (self, direction),
            (Directions::Both, _)
                | (Directions::ClientToServer, Direction::ClientToServer)
                | (Directions::ServerToClient, Direction::ServerToClient)
        )
    }

    /// The byte of the custom section [`DIRECTIONS_SECTION`]: bit 0
    /// client-to-server, bit 1 server-to-client.
    pub const fn bits(self) -> u8 {
        match self {
            Directions::Both => 3,
            Directions::ClientToServer => 1,
            Directions::ServerToClient => 2,
        }
    }

    /// What the byte `bits` of [`DIRECTIONS_SECTION`] declares, as
    /// [`Directions::bits`] writes it; `None` for any other byte.
    pub const fn from_bits(bits: u8) -> Option<Directions> {
        match bits {
            3 => Some(Directions::Both),
            1 => Some(Directions::ClientToServer),
            2 => Some(Directions::ServerToClient),
            _ => None,
        }
    }
}

/// The custom section in which [`export_hook!`](crate::export_hook)
/// declares [`Hook::DIRECTIONS`] to the proxy: one byte, as
/// [`Directions::bits`] writes it. A hook written without the SDK may
/// carry it too; without it, a hook is called for both directions.
pub const DIRECTIONS_SECTION: &str = "refractium:hook-directions";

/// What to do with a chunk, or at the end of a side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes on towards the other side. Forwarding fewer bytes
    /// than came in holds the rest back (an empty vector holds the whole
    /// chunk); held bytes go out with a later chunk or at [`Hook::on_end`].
    Forward(Vec<u8>),
    /// Send `data` back to the side the chunk came from, then close the
    /// connection; `reason` goes to the access log.
    Respond { data: Vec<u8>, reason: String },
    /// Close the connection; `reason` goes to the access log.
    Close(String),
    /// Write these bytes on, and let the rest of this direction through
    /// unchanged without calling the hook again (not even
    /// [`Hook::on_end`]). A hook that only looks at the start of a
    /// direction, or only at one direction, says so with this: once every
    /// hook of a route has passed a direction, the proxy relays it as fast
    /// as an unhooked route.
    Pass(Vec<u8>),
}

/// A stream hook.
///
/// One value is created per plugin instance by [`Hook::new`]; the proxy
/// gives every hooked connection an instance of its own, so a session's
/// state is never shared with another connection, and a hook that traps
/// ends only the connection it was on.
pub trait Hook: Sized + 'static {
    /// The plugin's name, as routes list it under `hooks:`.
    const NAME: &'static str;
    /// The plugin's version, shown by `refractium plugins`.
    const VERSION: &'static str;
    /// What the hook keeps for one connection.
    type Session: 'static;
    /// The directions the hook is called for: the proxy relays the other,
    /// if any, as an unhooked route's from its first byte, without calling
    /// [`Hook::on_data`] or [`Hook::on_end`] for it, as if the hook had
    /// answered [`Action::Pass`] before it began. A hook that never looks
    /// at one side says so here and saves a call per connection. Fixed when
    /// the plugin is built ([`DIRECTIONS_SECTION`]). By default both.
    const DIRECTIONS: Directions = Directions::Both;

    /// Build the hook from its config: the plugin's section of the YAML
    /// config, as JSON text, or `null` when there is none. An `Err` stops the
    /// plugin from loading and is shown to the operator.
    fn new(config: &str) -> Result<Self, String>;

    /// A connection on a route that lists the hook starts: the client, what
    /// detection found, and the route's name.
    fn open(&self, peer: &Peer, detection: &Detection, route: &str) -> Self::Session;

    /// A chunk read from one side, before it is written to the other. By
    /// default it is forwarded unchanged.
    fn on_data(&self, session: &mut Self::Session, direction: Direction, data: Vec<u8>) -> Action {
        let _ = (session, direction);
        Action::Forward(data)
    }

    /// That side has finished sending: the last chance to forward held
    /// bytes. By default nothing more is forwarded.
    fn on_end(&self, session: &mut Self::Session, direction: Direction) -> Action {
        let _ = (session, direction);
        Action::Forward(Vec::new())
    }
}

impl From<wit::Direction> for Direction {
    fn from(d: wit::Direction) -> Self {
        match d {
            wit::Direction::ClientToServer => Direction::ClientToServer,
            wit::Direction::ServerToClient => Direction::ServerToClient,
        }
    }
}

#[doc(hidden)]
pub mod __rt {
    use super::{Action, Hook};
    use crate::__bindings::refractium::plugin::types as wit;
    use crate::__hook_bindings::exports::refractium::plugin::hook as export;
    use crate::{Detection, Peer};
    use std::any::Any;
    use std::cell::RefCell;

    thread_local! {
        static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    /// `arena` is the plugin's allocator when the export macro installed
    /// it: the hook outlives every session, so it is built outside the arena.
    pub fn init<H: Hook>(config: String, arena: Option<&crate::alloc::CallArena>) -> Result<wit::PluginInfo, String> {
        let build = || {
            let hook = H::new(&config)?;
            INSTANCE.with(|cell| *cell.borrow_mut() = Some(Box::new(hook)));
            Ok(wit::PluginInfo { name: H::NAME.to_string(), version: H::VERSION.to_string() })
        };
        match arena {
            Some(arena) => crate::alloc::bypass(arena, build),
            None => build(),
        }
    }

    fn with<H: Hook, R>(f: impl FnOnce(&H) -> R) -> Option<R> {
        INSTANCE.with(|cell| cell.borrow().as_ref().and_then(|h| h.downcast_ref::<H>()).map(f))
    }

    /// One connection's state, behind the generated resource.
    pub struct Session<H: Hook>(RefCell<Option<H::Session>>);

    impl<H: Hook> Session<H> {
        pub fn new(peer: wit::Peer, detection: wit::Detection, route: String) -> Self {
            let (peer, detection) = (Peer::from(peer), Detection::from(detection));
            Session(RefCell::new(with::<H, _>(|hook| hook.open(&peer, &detection, &route))))
        }

        pub fn on_data(&self, direction: wit::Direction, data: Vec<u8>) -> Action {
            let mut state = self.0.borrow_mut();
            match state.as_mut() {
                Some(state) => with::<H, _>(|hook| hook.on_data(state, direction.into(), data)),
                None => None,
            }
            .unwrap_or_else(|| Action::Close("the hook was not initialised".into()))
        }

        pub fn on_end(&self, direction: wit::Direction) -> Action {
            let mut state = self.0.borrow_mut();
            match state.as_mut() {
                Some(state) => with::<H, _>(|hook| hook.on_end(state, direction.into())),
                None => None,
            }
            .unwrap_or_else(|| Action::Close("the hook was not initialised".into()))
        }
    }

    impl From<Action> for export::Action {
        fn from(action: Action) -> Self {
            match action {
                Action::Forward(data) => export::Action::Forward(data),
                Action::Respond { data, reason } => export::Action::Respond(export::Response { data, reason }),
                Action::Close(reason) => export::Action::Close(reason),
                Action::Pass(data) => export::Action::Pass(data),
            }
        }
    }
}

/// Export a [`Hook`] as the plugin's `refractium:plugin/hook` interface.
///
/// Also installs the SDK's allocator ([`alloc::CallArena`](crate::alloc::CallArena)),
/// as [`export_detector!`](crate::export_detector) does. The proxy runs one
/// session at a time in an instance, so what a connection allocates is
/// freed when its session ends, and the arena starts over for the next
/// connection; a connection that allocates more than the arena holds, or a
/// block that outlives its session, sends later allocations to the
/// standard allocator, as without the arena. A plugin that brings its own
/// `#[global_allocator]` writes `export_hook!(MyHook, own_allocator)`.
///
/// ```ignore
/// refractium_plugin_sdk::export_hook!(MyHook);
/// ```
#[macro_export]
macro_rules! export_hook {
    ($hook:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static REFRACTIUM_SESSION_ARENA: $crate::alloc::CallArena = $crate::alloc::CallArena::new();

        $crate::export_hook!(@export $hook, Some(&REFRACTIUM_SESSION_ARENA));
    };
    ($hook:ty, own_allocator) => {
        $crate::export_hook!(@export $hook, None);
    };
    (@export $hook:ty, $arena:expr) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__bindings::refractium::plugin::types as wit;
            use $crate::__hook_bindings::exports::refractium::plugin::hook as export;

            struct RefractiumHookExport;
            struct RefractiumHookSession($crate::hook::__rt::Session<$hook>);

            impl export::Guest for RefractiumHookExport {
                type Session = RefractiumHookSession;
                fn init(config: String) -> Result<wit::PluginInfo, String> {
                    $crate::hook::__rt::init::<$hook>(config, $arena)
                }
            }

            impl export::GuestSession for RefractiumHookSession {
                fn new(peer: wit::Peer, detection: wit::Detection, route: String) -> Self {
                    RefractiumHookSession($crate::hook::__rt::Session::new(peer, detection, route))
                }
                fn on_data(&self, direction: wit::Direction, data: Vec<u8>) -> export::Action {
                    self.0.on_data(direction, data).into()
                }
                fn on_end(&self, direction: wit::Direction) -> export::Action {
                    self.0.on_end(direction).into()
                }
            }

            $crate::__hook_bindings::__refractium_export_hook_world!(
                RefractiumHookExport with_types_in $crate::__hook_bindings
            );

            #[unsafe(link_section = "refractium:hook-directions")]
            #[used]
            static REFRACTIUM_HOOK_DIRECTIONS: [u8; 1] =
                [<$hook as $crate::hook::Hook>::DIRECTIONS.bits()];
        };
    };
}
