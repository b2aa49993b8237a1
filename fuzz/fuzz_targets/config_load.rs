//! The config loader (TOML -> raw config -> validated config) on arbitrary text.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/config.rs"]
mod config;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = config::Config::parse(text);
    }
});
