//! The POP3 command codec (bounded lines, overlong-line recovery, command parsing) and the
//! RETR byte-stuffer on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wispd_engine::fuzzing::pop3_codec(data));
