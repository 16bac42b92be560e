#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| refractium_fuzz_targets::proxy_header::run(data));
