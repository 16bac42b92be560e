//! The WASI functions a plugin file is granted, each with a harmless
//! implementation that answers at once: no thread blocks, nothing reaches
//! tokio, nothing touches the machine. [`super::imports`] decides which
//! import gets which; this module only implements them.
//!
//! | interface | what the plugin gets |
//! | --- | --- |
//! | `wasi:cli/environment` | no variables, no arguments, no working directory |
//! | `wasi:cli/stdout`, `stderr` | streams whose lines go to the proxy's log (INFO, WARN), under the plugin's log caps |
//! | `wasi:cli/stdin` | a stream that is already closed |
//! | `wasi:cli/terminal-*` | no terminal |
//! | `wasi:cli/exit` | ends the call as a failure |
//! | `wasi:clocks/monotonic-clock` | `now`, `resolution`; a wait that is already over, else a refusal |
//! | `wasi:clocks/wall-clock` | `now`, `resolution` |
//! | `wasi:filesystem/preopens` | no directories (every other filesystem function is refused) |
//! | `wasi:random/*` | random bytes (at most [`MAX_RANDOM`] per call) |
//! | `wasi:io/*` | the streams and pollables above; every pollable is ready |
//!
//! Resources carry no host state: a stream's `rep` says which one it is
//! ([`STDIN`], [`STDOUT`], [`STDERR`]), and the guest cannot make up a
//! handle to anything else.

use super::imports::Refused;
use super::sandbox::HostState;
use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, LinkerInstance, Lower, Resource, WasmList};

/// Largest random buffer a plugin may ask for in one call.
pub const MAX_RANDOM: u64 = 64 << 10;
/// Bytes a plugin may write to a stream at once (`check-write`'s answer).
pub const WRITE_PERMIT: u64 = 4096;

pub const STDIN: u32 = 0;
pub const STDOUT: u32 = 1;
pub const STDERR: u32 = 2;

/// `wasi:io/error.error` (never handed out: every stream error is `closed`).
pub struct IoError;
/// `wasi:io/poll.pollable`: always ready.
pub struct Pollable;
/// `wasi:io/streams.input-stream`: stdin, closed.
pub struct InputStream;
/// `wasi:io/streams.output-stream`: stdout or stderr, into the log.
pub struct OutputStream;
/// `wasi:filesystem/types.descriptor` (never handed out: there are no
/// preopened directories, and every function that opens one is refused).
pub struct Descriptor;
/// `wasi:cli/terminal-input.terminal-input` (never handed out).
pub struct TerminalInput;
/// `wasi:cli/terminal-output.terminal-output` (never handed out).
pub struct TerminalOutput;

/// `wasi:io/streams.stream-error`.
#[derive(ComponentType, Lower)]
#[component(variant)]
#[allow(dead_code)] // `last-operation-failed` is part of the type, never sent
pub enum StreamError {
    #[component(name = "last-operation-failed")]
    LastOperationFailed(Resource<IoError>),
    #[component(name = "closed")]
    Closed,
}

/// `wasi:clocks/wall-clock.datetime`.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
pub struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

type Linking<'a> = LinkerInstance<'a, HostState>;
type Cx<'a> = StoreContextMut<'a, HostState>;

/// The host resource type of the resource called `name` in a WASI
/// interface, if it is one this module implements. By name, whatever the
/// interface: an interface that `use`s a resource of another one lists it
/// among its own, and the two must be the same type.
pub fn resource(name: &str) -> Option<wasmtime::component::ResourceType> {
    use wasmtime::component::ResourceType;
    Some(match name {
        "error" => ResourceType::host::<IoError>(),
        "pollable" => ResourceType::host::<Pollable>(),
        "input-stream" => ResourceType::host::<InputStream>(),
        "output-stream" => ResourceType::host::<OutputStream>(),
        "terminal-input" => ResourceType::host::<TerminalInput>(),
        "terminal-output" => ResourceType::host::<TerminalOutput>(),
        "descriptor" => ResourceType::host::<Descriptor>(),
        _ => return None,
    })
}

/// Define function `func` of the granted interface `iface` in `linker`;
/// `false` when this module has no implementation of it (the caller then
/// refuses it).
pub fn define(linker: &mut Linking<'_>, iface: &str, func: &str) -> wasmtime::Result<bool> {
    let name = func;
    match (iface, func) {
        ("wasi:io/error", "[method]error.to-debug-string") => {
            linker.func_wrap(name, |_: Cx<'_>, (_,): (Resource<IoError>,)| Ok(("stream closed".to_string(),)))?
        }
        ("wasi:io/poll", "[method]pollable.ready") => {
            linker.func_wrap(name, |_: Cx<'_>, (_,): (Resource<Pollable>,)| Ok((true,)))?
        }
        ("wasi:io/poll", "[method]pollable.block") => {
            linker.func_wrap(name, |_: Cx<'_>, (_,): (Resource<Pollable>,)| Ok(()))?
        }
        ("wasi:io/poll", "poll") => linker.func_wrap(name, |_: Cx<'_>, (all,): (WasmList<Resource<Pollable>>,)| {
            // Every pollable is ready: all of them, in order.
            Ok(((0..all.len() as u32).collect::<Vec<u32>>(),))
        })?,
        ("wasi:io/streams", "[method]input-stream.read" | "[method]input-stream.blocking-read") => linker
            .func_wrap(name, |_: Cx<'_>, (_, _): (Resource<InputStream>, u64)| {
                Ok((Err::<Vec<u8>, _>(StreamError::Closed),))
            })?,
        ("wasi:io/streams", "[method]input-stream.skip" | "[method]input-stream.blocking-skip") => linker
            .func_wrap(name, |_: Cx<'_>, (_, _): (Resource<InputStream>, u64)| {
                Ok((Err::<u64, _>(StreamError::Closed),))
            })?,
        ("wasi:io/streams", "[method]input-stream.subscribe") => {
            linker.func_wrap(name, |_: Cx<'_>, (_,): (Resource<InputStream>,)| Ok((ready(),)))?
        }
        ("wasi:io/streams", "[method]output-stream.check-write") => linker
            .func_wrap(name, |_: Cx<'_>, (_,): (Resource<OutputStream>,)| {
                Ok((Ok::<u64, StreamError>(WRITE_PERMIT),))
            })?,
        ("wasi:io/streams", "[method]output-stream.write" | "[method]output-stream.blocking-write-and-flush") => linker
            .func_wrap(name, |mut cx: Cx<'_>, (stream, bytes): (Resource<OutputStream>, WasmList<u8>)| {
                write(&mut cx, stream.rep(), &bytes);
                Ok((Ok::<(), StreamError>(()),))
            })?,
        // Whole lines go to the log as they are written; the rest at the
        // end of the call: a flush has nothing to do.
        ("wasi:io/streams", "[method]output-stream.flush" | "[method]output-stream.blocking-flush") => {
            linker.func_wrap(name, |_: Cx<'_>, (_,): (Resource<OutputStream>,)| Ok((Ok::<(), StreamError>(()),)))?
        }
        ("wasi:io/streams", "[method]output-stream.subscribe") => {
            linker.func_wrap(name, |_: Cx<'_>, (_,): (Resource<OutputStream>,)| Ok((ready(),)))?
        }
        // Zeroes are taken and dropped: NUL bytes say nothing in a log.
        ("wasi:io/streams", "[method]output-stream.write-zeroes")
        | ("wasi:io/streams", "[method]output-stream.blocking-write-zeroes-and-flush") => linker
            .func_wrap(name, |_: Cx<'_>, (_, _): (Resource<OutputStream>, u64)| Ok((Ok::<(), StreamError>(()),)))?,
        // The only input stream is stdin, which is closed.
        ("wasi:io/streams", "[method]output-stream.splice" | "[method]output-stream.blocking-splice") => linker
            .func_wrap(name, |_: Cx<'_>, (_, _, _): (Resource<OutputStream>, Resource<InputStream>, u64)| {
                Ok((Err::<u64, _>(StreamError::Closed),))
            })?,
        ("wasi:cli/environment", "get-environment") => {
            linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok((Vec::<(String, String)>::new(),)))?
        }
        ("wasi:cli/environment", "get-arguments") => {
            linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok((Vec::<String>::new(),)))?
        }
        ("wasi:cli/environment", "initial-cwd") => linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok((None::<String>,)))?,
        // Language runtimes ask at start which directories they were given.
        ("wasi:filesystem/preopens", "get-directories") => {
            linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok((Vec::<(Resource<Descriptor>, String)>::new(),)))?
        }
        ("wasi:cli/exit", "exit") => {
            linker.func_wrap(name, |_: Cx<'_>, (_,): (Result<(), ()>,)| -> wasmtime::Result<()> {
                Err(Refused::new("wasi:cli/exit#exit", "the plugin exited").into())
            })?
        }
        ("wasi:cli/exit", "exit-with-code") => {
            linker.func_wrap(name, |_: Cx<'_>, (_,): (u8,)| -> wasmtime::Result<()> {
                Err(Refused::new("wasi:cli/exit#exit-with-code", "the plugin exited").into())
            })?
        }
        ("wasi:cli/stdin", "get-stdin") => {
            linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok((Resource::<InputStream>::new_own(STDIN),)))?
        }
        ("wasi:cli/stdout", "get-stdout") => {
            linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok((Resource::<OutputStream>::new_own(STDOUT),)))?
        }
        ("wasi:cli/stderr", "get-stderr") => {
            linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok((Resource::<OutputStream>::new_own(STDERR),)))?
        }
        ("wasi:cli/terminal-stdin", "get-terminal-stdin") => {
            linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok((None::<Resource<TerminalInput>>,)))?
        }
        ("wasi:cli/terminal-stdout", "get-terminal-stdout") | ("wasi:cli/terminal-stderr", "get-terminal-stderr") => {
            linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok((None::<Resource<TerminalOutput>>,)))?
        }
        ("wasi:clocks/monotonic-clock", "now") => {
            linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok((crate::clock::now_ns(),)))?
        }
        ("wasi:clocks/monotonic-clock", "resolution") => linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok((1u64,)))?,
        ("wasi:clocks/monotonic-clock", "subscribe-instant") => {
            linker.func_wrap(name, |_: Cx<'_>, (when,): (u64,)| {
                if when <= crate::clock::now_ns() {
                    return Ok((ready(),));
                }
                Err(Refused::new("wasi:clocks/monotonic-clock#subscribe-instant", "a plugin may not wait").into())
            })?
        }
        ("wasi:clocks/monotonic-clock", "subscribe-duration") => {
            linker.func_wrap(name, |_: Cx<'_>, (after,): (u64,)| {
                if after == 0 {
                    return Ok((ready(),));
                }
                Err(Refused::new("wasi:clocks/monotonic-clock#subscribe-duration", "a plugin may not wait").into())
            })?
        }
        ("wasi:clocks/wall-clock", "now") => linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok((wall_now(),)))?,
        ("wasi:clocks/wall-clock", "resolution") => {
            linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok((Datetime { seconds: 0, nanoseconds: 1 },)))?
        }
        ("wasi:random/random", "get-random-bytes") | ("wasi:random/insecure", "get-insecure-random-bytes") => {
            linker.func_wrap(name, |_: Cx<'_>, (len,): (u64,)| Ok((random_bytes(len)?,)))?
        }
        ("wasi:random/random", "get-random-u64") | ("wasi:random/insecure", "get-insecure-random-u64") => {
            linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok((rand::random::<u64>(),)))?
        }
        ("wasi:random/insecure-seed", "insecure-seed") => {
            linker.func_wrap(name, |_: Cx<'_>, (): ()| Ok(((rand::random::<u64>(), rand::random::<u64>()),)))?
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// A pollable that is ready: the only kind there is.
fn ready() -> Resource<Pollable> {
    Resource::new_own(0)
}

/// Take bytes written to stdout or stderr into the plugin's console buffer;
/// complete lines go to the log.
fn write(cx: &mut Cx<'_>, stream: u32, bytes: &WasmList<u8>) {
    // Only what one log line can hold is read out of the guest's memory.
    let (taken, len) = {
        let slice = bytes.as_le_slice(&*cx);
        (slice[..slice.len().min(super::sandbox::LOG_MAX_BYTES + 1)].to_vec(), slice.len())
    };
    cx.data_mut().console_write(stream, &taken, len);
}

impl Datetime {
    /// Seconds and nanoseconds.
    pub fn parts(self) -> (u64, u32) {
        (self.seconds, self.nanoseconds)
    }
}

/// The wall clock's time.
pub fn wall_now() -> Datetime {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Datetime { seconds: since.as_secs(), nanoseconds: since.subsec_nanos() }
}

fn random_bytes(len: u64) -> wasmtime::Result<Vec<u8>> {
    if len > MAX_RANDOM {
        let why = format!("asked for {len} random bytes; at most {MAX_RANDOM} are given per call");
        return Err(Refused::new("wasi:random#get-random-bytes", why).into());
    }
    let mut bytes = vec![0u8; len as usize];
    rand::fill(&mut bytes[..]);
    Ok(bytes)
}
