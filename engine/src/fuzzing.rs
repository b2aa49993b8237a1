//! Entry points for the fuzz targets in `fuzz/` (not an API): each feeds arbitrary bytes to a
//! sans-IO codec the way a session would, in chunks, and checks what must always hold.

use crate::imap::framing::{Frame, Framer};
use crate::smtp::codec::{Codec, Event};

/// The SMTP codec over `data`, cut into reads at the bytes the first byte picks; DATA and BDAT
/// are entered when their commands parse, as the session does.
pub fn smtp_codec(data: &[u8]) {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut).max(1);
    let mut codec = Codec::default();
    for chunk in data.chunks(step) {
        let mut input = chunk.iter();
        while let Some(event) = codec.decode(&mut input) {
            match event {
                Event::Request(smtp_proto::Request::Data) => codec.start_data(4096),
                Event::Request(smtp_proto::Request::Bdat {
                    chunk_size,
                    is_last,
                }) => codec.start_chunk(chunk_size.min(1 << 16), is_last, true, 4096, true),
                Event::DataEnd { .. } | Event::ChunkEnd { .. } => {
                    assert!(codec.take_message().len() <= 4096 + 64 * 1024);
                }
                _ => {}
            }
        }
        assert!(input.as_slice().is_empty(), "the codec consumes every read");
        assert!(codec.message_capacity() <= 4096 + 2 * 64 * 1024 + step);
    }
}

/// IMAP framing over `data` in chunks, every frame handed to imap-codec's command parser as the
/// session does; literals are admitted up to a small budget.
pub fn imap_framing(data: &[u8]) {
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut).max(1);
    let mut framer = Framer::new(1024, 4096);
    let mut budget = 0usize;
    for chunk in data.chunks(step) {
        let mut input = chunk;
        while let Some(frame) = framer.next(&mut input, 4096, &mut |n| {
            budget = n;
            n <= 8192
        }) {
            if let Frame::Command(bytes) = frame {
                assert!(bytes.len() <= 4096 + 4 * 1024 + 1024);
                let _ = CommandCodec::default().decode(&bytes);
            }
        }
    }
    let _ = budget;
}

/// The ManageSieve codec over `data` in chunks: every read is taken, nothing is held past the
/// line and literal bounds.
pub fn managesieve_codec(data: &[u8]) {
    crate::sieve::manage::fuzz_codec(data);
}

/// The POP3 command codec and parser over `data` in chunks, and the same bytes byte-stuffed as
/// RETR sends them: lines stay bounded, the stuffed body is CRLF lines ended only by its `.`.
pub fn pop3_codec(data: &[u8]) {
    crate::pop3::fuzz_codec(data);
}

/// A Sieve script from arbitrary bytes: compiled (with wispd's limits), and when it compiles,
/// run over a fixed message as delivery would, with every event answered.
pub fn sieve_script(data: &[u8]) {
    use std::sync::OnceLock;
    static FILTERS: OnceLock<(crate::sieve::Filters, std::path::PathBuf)> = OnceLock::new();
    let (filters, _) = FILTERS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wispd-fuzz-sieve-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let store = wispd_store::Store::open(&dir).expect("fuzz store");
        (
            crate::sieve::Filters::new(store, crate::sieve::SieveSettings::default()),
            dir,
        )
    });
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if filters.compile(source).is_err() {
        return;
    }
    let message = b"From: a@b.test\r\nTo: c@d.test\r\nSubject: hi\r\nList-Id: <l.d.test>\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nbody\r\n--x--\r\n";
    filters.fuzz_run(source, message);
}
