//! The blocklist parser (plain lists, netsets, CIDRs, ranges, Spamhaus JSON) fed in two reads.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (a, b) = data.split_at(data.len() / 2);
    let mut p = wispd_firewall::blocklist::parse::Parser::new(1000);
    p.feed(a);
    p.feed(b);
    let _ = p.finish();
});
