//! Every request body type of the API through the handlers' JSON parser.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wispd_api::fuzz_json_bodies(data));
