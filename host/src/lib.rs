//! refractium: one public port, many services.
//!
//! A TCP connection flows through the modules in this order:
//! [`listener`] accepts it and enforces the connection limits; [`detect`]
//! collects the client's first bytes and asks the listener's detector
//! [`plugin`]s what protocol they are; [`route`] picks the first route whose
//! match holds; [`balance`] picks and connects a backend server; [`forward`]
//! replays the first bytes and relays both ways until both sides close.
//! [`proxy`] strings those stages together for one connection and writes its
//! access-log line. All of that runs on a worker thread's [`evloop`],
//! refractium's own event loop for connections.
//!
//! Beside them: [`config`] parses and validates the YAML file; [`snapshot`]
//! turns a config plus the loaded plugins into the immutable state every new
//! connection reads; [`supervise`] says what happens when a task or a
//! thread dies; [`cli`] is the `refractium` command line.

pub mod accept_proxy;
pub mod admin;
pub mod balance;
pub mod cli;
pub mod clock;
pub mod config;
pub mod detect;
pub mod evloop;
pub mod forward;
pub mod health;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod plugin;
pub mod proxy;
pub mod reload;
pub mod resolve;
pub mod route;
pub mod scaffold;
pub mod snapshot;
pub mod sockopt;
pub mod supervise;
pub mod systemd;
pub mod udp;
