//! The ManageSieve codec (atoms, quoted strings, literals, oversize skipping) on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wispd_engine::fuzzing::managesieve_codec(data));
