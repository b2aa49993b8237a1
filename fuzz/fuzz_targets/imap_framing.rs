//! IMAP framing (lines, literals, LITERAL+, refusals) and imap-codec's command parser.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wispd_engine::fuzzing::imap_framing(data));
