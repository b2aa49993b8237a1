//! Sieve scripts from arbitrary bytes: sieve-rs' compiler, then a run over a message with every
//! event answered as delivery does.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wispd_engine::fuzzing::sieve_script(data));
