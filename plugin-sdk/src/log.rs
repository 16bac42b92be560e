//! Logging through the proxy. The host tags each line with the plugin's name,
//! truncates long messages and rate-limits chatty plugins. Outside
//! WebAssembly (native tests) the functions print to stderr.

use crate::__bindings::refractium::plugin::types::Level;

fn write(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::__bindings::refractium::plugin::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Log at debug level.
pub fn debug(message: &str) {
    write(Level::Debug, message)
}

/// Log at info level.
pub fn info(message: &str) {
    write(Level::Info, message)
}

/// Log at warn level.
pub fn warn(message: &str) {
    write(Level::Warn, message)
}

/// Log at error level.
pub fn error(message: &str) {
    write(Level::Error, message)
}
