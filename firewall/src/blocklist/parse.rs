//! Streaming blocklist parsing, sans-IO: bytes in, address ranges out. Understands Spamhaus
//! DROP/EDROP text (`CIDR ; SBLnnnn`), Spamhaus JSON lines (`{"cidr": …}` with a metadata line),
//! and plain one-address-or-CIDR-per-line lists with `#` or `;` comments (FireHOL netsets, ipdeny
//! zone files). Only the current line is buffered, so memory follows the number of entries kept,
//! not the size of the download.

use std::net::IpAddr;

use ipnet::IpNet;

/// Longest line considered; longer ones are counted invalid.
const MAX_LINE: usize = 4096;

/// Address ranges of one list, merged: sorted, disjoint, non-adjacent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges {
    pub v4: Vec<(u32, u32)>,
    pub v6: Vec<(u128, u128)>,
}

impl Ranges {
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything in any of `parts`, merged.
    pub fn union<'a>(parts: impl IntoIterator<Item = &'a Ranges>) -> Ranges {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for p in parts {
            v4.extend_from_slice(&p.v4);
            v6.extend_from_slice(&p.v6);
        }
        Ranges {
            v4: merge(v4, u32::MAX),
            v6: merge(v6, u128::MAX),
        }
    }

    /// The range containing `ip`, if any (binary search).
    pub fn find(&self, ip: IpAddr) -> Option<(IpAddr, IpAddr)> {
        // the lists hold IPv4-mapped entries as IPv4
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let x = u32::from(a);
                let i = self.v4.partition_point(|r| r.0 <= x);
                let r = self.v4.get(i.checked_sub(1)?)?;
                (r.1 >= x).then(|| {
                    (
                        IpAddr::from(r.0.to_be_bytes()),
                        IpAddr::from(r.1.to_be_bytes()),
                    )
                })
            }
            IpAddr::V6(a) => {
                let x = u128::from(a);
                let i = self.v6.partition_point(|r| r.0 <= x);
                let r = self.v6.get(i.checked_sub(1)?)?;
                (r.1 >= x).then(|| {
                    (
                        IpAddr::from(r.0.to_be_bytes()),
                        IpAddr::from(r.1.to_be_bytes()),
                    )
                })
            }
        }
    }

    /// Compact binary form for the store: `WBL1`, counts, then big-endian pairs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.v4.len() * 8 + self.v6.len() * 32);
        out.extend_from_slice(b"WBL1");
        out.extend_from_slice(
            &u32::try_from(self.v4.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(
            &u32::try_from(self.v6.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for (a, b) in &self.v4 {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&b.to_be_bytes());
        }
        for (a, b) in &self.v6 {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&b.to_be_bytes());
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<Ranges> {
        if b.get(0..4)? != b"WBL1" {
            return None;
        }
        let n4 = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?) as usize;
        let n6 = u32::from_be_bytes(b.get(8..12)?.try_into().ok()?) as usize;
        if b.len() != 12 + n4 * 8 + n6 * 32 {
            return None;
        }
        let mut r = Ranges {
            v4: Vec::with_capacity(n4),
            v6: Vec::with_capacity(n6),
        };
        let mut at = 12;
        for _ in 0..n4 {
            let a = u32::from_be_bytes(b[at..at + 4].try_into().ok()?);
            let z = u32::from_be_bytes(b[at + 4..at + 8].try_into().ok()?);
            r.v4.push((a, z));
            at += 8;
        }
        for _ in 0..n6 {
            let a = u128::from_be_bytes(b[at..at + 16].try_into().ok()?);
            let z = u128::from_be_bytes(b[at + 16..at + 32].try_into().ok()?);
            r.v6.push((a, z));
            at += 32;
        }
        Some(r)
    }
}

/// Feeds bytes, keeps the parsed ranges.
#[derive(Debug)]
pub struct Parser {
    partial: Vec<u8>,
    skipping: bool,
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    /// Lines that held no valid address or network.
    pub invalid: u64,
    /// Entries accepted (before merging).
    pub entries: u64,
    max: usize,
}

impl Parser {
    /// `max`: keep at most this many entries (CSF's MAX); 0 = all.
    pub fn new(max: usize) -> Parser {
        Parser {
            partial: Vec::new(),
            skipping: false,
            v4: Vec::new(),
            v6: Vec::new(),
            invalid: 0,
            entries: 0,
            max,
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while let Some(nl) = data.iter().position(|b| *b == b'\n') {
            let (head, rest) = data.split_at(nl);
            data = &rest[1..];
            if self.skipping {
                self.skipping = false;
                continue;
            }
            if self.partial.is_empty() {
                self.line(head);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                self.line(&line);
            }
        }
        if self.skipping {
            return;
        }
        if self.partial.len() + data.len() > MAX_LINE {
            self.partial.clear();
            self.skipping = true;
            self.invalid += 1;
        } else {
            self.partial.extend_from_slice(data);
        }
    }

    /// Parses what is left and returns the merged ranges.
    pub fn finish(mut self) -> (Ranges, u64, u64) {
        if !self.skipping && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
        let r = Ranges {
            v4: merge(self.v4, u32::MAX),
            v6: merge(self.v6, u128::MAX),
        };
        (r, self.entries, self.invalid)
    }

    fn full(&self) -> bool {
        self.max > 0 && self.entries as usize >= self.max
    }

    fn line(&mut self, raw: &[u8]) {
        let Ok(text) = std::str::from_utf8(raw) else {
            self.invalid += 1;
            return;
        };
        let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        if text.is_empty()
            || text.starts_with('#')
            || text.starts_with(';')
            || text.starts_with("//")
        {
            return;
        }
        let token = if text.starts_with('{') {
            match json_cidr(text) {
                JsonLine::Cidr(c) => c,
                JsonLine::Metadata => return,
                JsonLine::Invalid => {
                    self.invalid += 1;
                    return;
                }
            }
        } else {
            text.split(|c: char| c == ';' || c == '#' || c.is_whitespace())
                .next()
                .unwrap_or("")
                .to_string()
        };
        match parse(&token) {
            Some(net) => {
                if self.full() {
                    return;
                }
                self.entries += 1;
                match net {
                    IpNet::V4(n) => self
                        .v4
                        .push((u32::from(n.network()), u32::from(n.broadcast()))),
                    IpNet::V6(n) => self
                        .v6
                        .push((u128::from(n.network()), u128::from(n.broadcast()))),
                }
            }
            None => self.invalid += 1,
        }
    }
}

enum JsonLine {
    Cidr(String),
    Metadata,
    Invalid,
}

fn json_cidr(line: &str) -> JsonLine {
    #[derive(serde::Deserialize)]
    struct Line {
        cidr: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    match serde_json::from_str::<Line>(line) {
        Ok(Line { cidr: Some(c), .. }) => JsonLine::Cidr(c),
        Ok(Line { kind: Some(k), .. }) if k == "metadata" => JsonLine::Metadata,
        _ => JsonLine::Invalid,
    }
}

/// A single address or a network; host bits set in a network are tolerated (truncated). An
/// IPv4-mapped entry (`::ffff:1.2.3.4`) is the IPv4 it stands for, as everywhere an address
/// enters, but only down to IPv4 /8: a wider mapped network in a list (`::ffff:0:0/96`, the
/// mapped range itself, as bogon lists carry it) names IPv6 packets with such sources and must
/// not become "all of IPv4".
fn parse(s: &str) -> Option<IpNet> {
    let net = match s.parse::<IpAddr>() {
        Ok(ip) => IpNet::from(ip),
        Err(_) => s.parse::<IpNet>().ok()?.trunc(),
    };
    Some(match crate::model::unmap(net) {
        v4 @ IpNet::V4(n) if n.prefix_len() >= crate::model::MIN_PREFIX_V4 => v4,
        _ => net,
    })
}

/// Sorts and merges overlapping and adjacent ranges.
fn merge<T: Ord + Copy + Into<u128>>(mut v: Vec<(T, T)>, top: T) -> Vec<(T, T)> {
    v.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        if let Some(last) = out.last_mut() {
            let touches = last.1 == top || Into::<u128>::into(last.1) + 1 >= Into::<u128>::into(a);
            if touches {
                if b > last.1 {
                    last.1 = b;
                }
                continue;
            }
        }
        out.push((a, b));
    }
    out.shrink_to_fit();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]], max: usize) -> (Ranges, u64, u64) {
        let mut p = Parser::new(max);
        for c in chunks {
            p.feed(c);
        }
        p.finish()
    }

    fn v4(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().expect("ip"))
    }

    #[test]
    fn spamhaus_text_json_and_plain_lines_split_anywhere() {
        let text = b"; Spamhaus DROP List 2026/05/11\n1.10.16.0/20 ; SBL256894\n\
            {\"cidr\":\"2.56.192.0/22\",\"sblid\":\"SBL459831\",\"rir\":\"ripencc\"}\n\
            {\"type\":\"metadata\",\"timestamp\":1715446503,\"size\":1}\n\
            # netset comment\n3.3.3.3\r\n2001:db8::/32\nnot-an-ip\n5.5.5.5 # trailing\n";
        for split in [1usize, 3, 7, 64, text.len()] {
            let chunks: Vec<&[u8]> = text.chunks(split).collect();
            let (r, entries, invalid) = parse_all(&chunks, 0);
            assert_eq!(entries, 5, "split {split}");
            assert_eq!(invalid, 1, "split {split}");
            assert_eq!(r.v4.len(), 4);
            assert_eq!(r.v6.len(), 1);
            assert_eq!(r.v4[0], (v4("1.10.16.0"), v4("1.10.31.255")));
        }
    }

    #[test]
    fn ipv4_mapped_feed_entries_land_in_the_ipv4_ranges() {
        let (r, entries, invalid) = parse_all(
            &[b"::ffff:198.51.100.7
::ffff:203.0.113.0/120 ; SBL1
::ffff:0:0/96
"],
            0,
        );
        assert_eq!((entries, invalid), (3, 0));
        assert_eq!(
            r.v4,
            vec![
                (v4("198.51.100.7"), v4("198.51.100.7")),
                (v4("203.0.113.0"), v4("203.0.113.255"))
            ]
        );
        // the mapped range as a whole stays IPv6 (a bogon), never "all of IPv4"
        assert_eq!(r.v6, vec![(0xffff_0000_0000, 0xffff_ffff_ffff)]);
        let hit = r.find("::ffff:198.51.100.7".parse().expect("ip"));
        assert_eq!(
            hit.map(|(a, _)| a.to_string()).as_deref(),
            Some("198.51.100.7")
        );
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let (r, _, _) = parse_all(
            &[b"10.0.0.0/25\n10.0.0.128/25\n10.0.0.5\n10.0.2.0/24\n0.0.0.0/0\n"],
            0,
        );
        assert_eq!(r.v4, vec![(0, u32::MAX)]);
        let (r, _, _) = parse_all(&[b"10.0.0.0/25\n10.0.0.128/25\n10.0.2.0/24\n"], 0);
        assert_eq!(
            r.v4,
            vec![
                (v4("10.0.0.0"), v4("10.0.0.255")),
                (v4("10.0.2.0"), v4("10.0.2.255"))
            ]
        );
        assert_eq!(
            r.find("10.0.2.9".parse().expect("ip"))
                .map(|x| x.0.to_string()),
            Some("10.0.2.0".into())
        );
        assert!(r.find("10.0.1.9".parse().expect("ip")).is_none());
    }

    #[test]
    fn max_keeps_the_first_entries_and_long_lines_are_invalid() {
        let (r, entries, _) = parse_all(&[b"1.1.1.1\n2.2.2.2\n3.3.3.3\n"], 2);
        assert_eq!((entries, r.v4.len()), (2, 2));
        let long = vec![b'9'; MAX_LINE + 10];
        let (r, _, invalid) = parse_all(&[&long, b"\n4.4.4.4\n"], 0);
        assert_eq!((r.v4.len(), invalid), (1, 1));
    }

    #[test]
    fn ranges_round_trip_through_bytes() {
        let (r, _, _) = parse_all(&[b"1.2.3.0/24\n2001:db8::/48\n9.9.9.9\n"], 0);
        assert_eq!(Ranges::from_bytes(&r.to_bytes()), Some(r));
        assert_eq!(Ranges::from_bytes(b"junk"), None);
    }
}
