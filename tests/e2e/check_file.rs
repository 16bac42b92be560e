//! `refractium check FILE.wasm`: what a plugin file is and what is wrong with it.
