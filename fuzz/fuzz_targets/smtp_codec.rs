//! The SMTP codec (commands, DATA un-dot-stuffing, BDAT chunks) on arbitrary bytes in any split.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wispd_engine::fuzzing::smtp_codec(data));
