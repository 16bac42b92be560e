//! The WASI functions a hook plugin file's main module gets on the direct
//! path, with the canonical ABI written out: the same answers as
//! [`crate::plugin::wasi`] gives through the component (standard output
//! and error into the log, closed stdin, no terminal, no environment, clocks,
//! exit as a failure). These are what a language's standard library imports
//! whether or not the hook prints: a Rust hook imports the stdio functions
//! for its panic message. A module that imports anything else is called
//! through its component (see [`super::hook::file_module`]).
//!
//! Handles carry no state: a stream's handle says which one it is
//! ([`handle`]); a guest that makes one up writes to no stream, as through
//! the component it would have no handle to write with.
//!
//! Return areas (wasm32): `result<_, stream-error>` is a `u8` at 0 (`ok`,
//! `err`) and a `stream-error` at 4 (a `u8`: `last-operation-failed`,
//! `closed`); `result<u64, stream-error>` has its payload at 8; an
//! `option<own<…>>` is a `u8` at 0; a `list` is `(ptr, len)` at 0; a
//! `datetime` is a `u64` at 0 and a `u32` at 8.

use super::{bytes_in, memory};
use crate::plugin::imports::Refused;
use crate::plugin::sandbox::HostState;
use crate::plugin::wasi::{self, STDERR, STDIN, STDOUT};
use wasmtime::{Caller, Linker};

/// The handle of stream `rep` (stdin, stdout, stderr): never 0, which a
/// guest may take for no handle.
fn handle(rep: u32) -> u32 {
    rep + 1
}

/// The interface `module` names, without its version, if it is a WASI 0.2
/// one.
fn interface(module: &str) -> Option<&str> {
    let (iface, version) = module.split_once('@')?;
    (iface.starts_with("wasi:") && version.starts_with("0.2.")).then_some(iface)
}

type Cx<'a> = Caller<'a, HostState>;

/// Define `name` of `module` in `linker`; whether this module serves it
/// (an import it does not serve is left undefined).
pub fn define(linker: &mut Linker<HostState>, module: &str, name: &str) -> wasmtime::Result<bool> {
    let Some(iface) = interface(module) else { return Ok(false) };
    let (m, n) = (module, name);
    match (iface, name) {
        ("wasi:io/error", "[resource-drop]error")
        | ("wasi:io/poll", "[resource-drop]pollable" | "[method]pollable.block")
        | ("wasi:io/streams", "[resource-drop]input-stream" | "[resource-drop]output-stream")
        | ("wasi:cli/terminal-input", "[resource-drop]terminal-input")
        | ("wasi:cli/terminal-output", "[resource-drop]terminal-output") => {
            linker.func_wrap(m, n, |_: Cx<'_>, _: u32| {})?
        }
        ("wasi:io/poll", "[method]pollable.ready") => linker.func_wrap(m, n, |_: Cx<'_>, _: u32| 1u32)?,
        // Every pollable is ready; the only one there is has handle 1.
        ("wasi:io/streams", "[method]input-stream.subscribe" | "[method]output-stream.subscribe") => {
            linker.func_wrap(m, n, |_: Cx<'_>, _: u32| 1u32)?
        }
        // stdin is closed: `err(closed)`.
        ("wasi:io/streams", "[method]input-stream.read" | "[method]input-stream.blocking-read") => {
            linker
                .func_wrap(m, n, |mut cx: Cx<'_>, _: u32, _: u64, ret: u32| answer(&mut cx, ret, 4, &[1, 0, 0, 0, 1]))?
        }
        ("wasi:io/streams", "[method]output-stream.check-write") => {
            linker.func_wrap(m, n, |mut cx: Cx<'_>, _: u32, ret: u32| {
                let mut area = [0u8; 16];
                area[8..].copy_from_slice(&wasi::WRITE_PERMIT.to_le_bytes());
                answer(&mut cx, ret, 8, &area)
            })?
        }
        ("wasi:io/streams", "[method]output-stream.write" | "[method]output-stream.blocking-write-and-flush") => linker
            .func_wrap(m, n, |mut cx: Cx<'_>, stream: u32, ptr: u32, len: u32, ret: u32| {
                write(&mut cx, stream, ptr, len)?;
                answer(&mut cx, ret, 4, &[0])
            })?,
        // Whole lines go to the log as they are written, the rest at the
        // end of the call: a flush has nothing to do.
        ("wasi:io/streams", "[method]output-stream.flush" | "[method]output-stream.blocking-flush") => {
            linker.func_wrap(m, n, |mut cx: Cx<'_>, _: u32, ret: u32| answer(&mut cx, ret, 4, &[0]))?
        }
        // An empty list (a pointer aligned for its elements, no length), no
        // working directory.
        ("wasi:cli/environment", "get-environment" | "get-arguments") => {
            linker.func_wrap(m, n, |mut cx: Cx<'_>, ret: u32| answer(&mut cx, ret, 4, &[4, 0, 0, 0, 0, 0, 0, 0]))?
        }
        ("wasi:cli/environment", "initial-cwd") => {
            linker.func_wrap(m, n, |mut cx: Cx<'_>, ret: u32| answer(&mut cx, ret, 4, &[0]))?
        }
        ("wasi:cli/exit", "exit" | "exit-with-code") => {
            let import = format!("wasi:cli/exit#{name}");
            linker.func_wrap(m, n, move |_: Cx<'_>, _: u32| -> wasmtime::Result<()> {
                Err(Refused::new(&import, "the plugin exited").into())
            })?
        }
        ("wasi:cli/stdin", "get-stdin") => linker.func_wrap(m, n, |_: Cx<'_>| handle(STDIN))?,
        ("wasi:cli/stdout", "get-stdout") => linker.func_wrap(m, n, |_: Cx<'_>| handle(STDOUT))?,
        ("wasi:cli/stderr", "get-stderr") => linker.func_wrap(m, n, |_: Cx<'_>| handle(STDERR))?,
        // No terminal: `none`.
        ("wasi:cli/terminal-stdin", "get-terminal-stdin")
        | ("wasi:cli/terminal-stdout", "get-terminal-stdout")
        | ("wasi:cli/terminal-stderr", "get-terminal-stderr") => {
            linker.func_wrap(m, n, |mut cx: Cx<'_>, ret: u32| answer(&mut cx, ret, 4, &[0]))?
        }
        ("wasi:clocks/monotonic-clock", "now") => linker.func_wrap(m, n, |_: Cx<'_>| crate::clock::now_ns())?,
        ("wasi:clocks/monotonic-clock", "resolution") => linker.func_wrap(m, n, |_: Cx<'_>| 1u64)?,
        ("wasi:clocks/wall-clock", clock @ ("now" | "resolution")) => {
            let now = clock == "now";
            linker.func_wrap(m, n, move |mut cx: Cx<'_>, ret: u32| {
                let (seconds, nanoseconds) = if now { wasi::wall_now().parts() } else { (0, 1) };
                let mut area = [0u8; 12];
                area[..8].copy_from_slice(&seconds.to_le_bytes());
                area[8..].copy_from_slice(&nanoseconds.to_le_bytes());
                answer(&mut cx, ret, 8, &area)
            })?
        }
        ("wasi:random/random", "get-random-u64") | ("wasi:random/insecure", "get-insecure-random-u64") => {
            linker.func_wrap(m, n, |_: Cx<'_>| rand::random::<u64>())?
        }
        _ => return Ok(false),
    };
    Ok(true)
}

/// Write a return area of alignment `align` at `ret`.
fn answer(cx: &mut Cx<'_>, ret: u32, align: u32, area: &[u8]) -> wasmtime::Result<()> {
    if !ret.is_multiple_of(align) {
        wasmtime::bail!("misaligned return area");
    }
    memory(cx)?.write(&mut *cx, ret as usize, area)?;
    Ok(())
}

/// Bytes written to stdout or stderr go to the plugin's console buffer,
/// complete lines to the log; only what one log line holds is read.
fn write(cx: &mut Cx<'_>, stream: u32, ptr: u32, len: u32) -> wasmtime::Result<()> {
    let rep = match stream {
        s if s == handle(STDOUT) => STDOUT,
        s if s == handle(STDERR) => STDERR,
        _ => return Ok(()),
    };
    let memory = memory(cx)?;
    let taken = {
        let bytes = bytes_in(memory.data(&*cx), ptr as usize, len as usize)?;
        bytes[..bytes.len().min(crate::plugin::sandbox::LOG_MAX_BYTES + 1)].to_vec()
    };
    cx.data_mut().console_write(rep, &taken, len as usize);
    Ok(())
}
