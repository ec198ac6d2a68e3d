//! Where request headers begin and end in a client's byte stream, for the header
//! deadline: the blank line of an HTTP/1 header, and the header blocks of HTTP/2 (a
//! HEADERS frame and its CONTINUATIONs, up to END_HEADERS). No I/O: the stream wrapper
//! feeds every chunk it reads, however the reads split the bytes.

/// The HTTP/2 connection preface (RFC 9113, 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Finds the blank line that ends an HTTP/1 request header.
#[derive(Debug, Default)]
pub struct HeaderEnd {
    /// Whether the last byte that was not `\r` was `\n`: a second `\n` ends it.
    lf: bool,
}

impl HeaderEnd {
    /// True when `bytes` hold the end of the header.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            match b {
                b'\n' if self.lf => return true,
                b'\n' => self.lf = true,
                b'\r' => {}
                _ => self.lf = false,
            }
        }
        false
    }
}

const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Follows HTTP/2 frame boundaries (only the 9-byte frame headers are looked at; payloads
/// are skipped unread) to tell when a header block opens and when it completes.
#[derive(Debug)]
pub struct FrameScan {
    /// Preface bytes still to pass before the first frame.
    preface_left: usize,
    header: [u8; FRAME_HEADER],
    header_len: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: usize,
    /// A HEADERS frame without END_HEADERS was seen: CONTINUATIONs follow.
    block_open: bool,
}

/// What one chunk of bytes did to the header blocks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Blocks {
    /// At least one header block ended in the chunk.
    pub completed: bool,
    /// A header block was left open at the end of the chunk.
    pub open: bool,
}

impl FrameScan {
    /// A scan of a whole connection: the preface comes first.
    pub fn from_preface() -> Self {
        Self::with_preface_left(H2_PREFACE.len())
    }

    /// A scan whose first `preface_left` bytes are the rest of the preface.
    pub fn with_preface_left(preface_left: usize) -> Self {
        Self {
            preface_left,
            header: [0; FRAME_HEADER],
            header_len: 0,
            payload_left: 0,
            block_open: false,
        }
    }

    pub fn feed(&mut self, mut bytes: &[u8]) -> Blocks {
        let mut completed = false;
        while !bytes.is_empty() {
            if self.preface_left > 0 || self.payload_left > 0 {
                let skip = if self.preface_left > 0 {
                    &mut self.preface_left
                } else {
                    &mut self.payload_left
                };
                let n = (*skip).min(bytes.len());
                *skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len < FRAME_HEADER {
                break;
            }
            self.header_len = 0;
            let [l0, l1, l2, kind, flags, ..] = self.header;
            self.payload_left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
            let ends = flags & END_HEADERS != 0;
            match kind {
                HEADERS | PUSH_PROMISE => {
                    completed |= ends;
                    self.block_open = !ends;
                }
                CONTINUATION if self.block_open => {
                    completed |= ends;
                    self.block_open = !ends;
                }
                _ => {}
            }
        }
        Blocks {
            completed,
            open: self.block_open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends_at(chunks: &[&[u8]]) -> Option<usize> {
        let mut scan = HeaderEnd::default();
        chunks.iter().position(|c| scan.feed(c))
    }

    #[test]
    fn finds_the_blank_line_across_reads() {
        assert_eq!(ends_at(&[b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"]), Some(0));
        assert_eq!(
            ends_at(&[b"GET / HTTP/1.1\r\nhost: a\r", b"\n", b"\r", b"\nbody"]),
            Some(3)
        );
        assert_eq!(ends_at(&[b"GET / HTTP/1.1\n\n"]), Some(0));
        assert_eq!(
            ends_at(&[b"GET / HTTP/1.1\r\nhost: a\r\n", b"x-slow: 1"]),
            None
        );
        assert_eq!(ends_at(&[b"G", b"E", b"T", b" "]), None);
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    const SETTINGS: u8 = 0x4;
    const DATA: u8 = 0x0;

    #[test]
    fn a_header_block_completes_at_end_headers_however_the_reads_split() {
        let mut wire = H2_PREFACE.to_vec();
        wire.extend(frame(SETTINGS, 0, 0, &[0; 6]));
        // HEADERS without END_HEADERS (its payload looks like frame bytes: skipped
        // unread), then the CONTINUATION that ends the block.
        wire.extend(frame(HEADERS, 0, 1, &[HEADERS, END_HEADERS, 0, 0, 0]));
        let continuation_at = wire.len();
        wire.extend(frame(CONTINUATION, END_HEADERS, 1, &[1, 2, 3]));
        wire.extend(frame(DATA, 0, 1, &[9; 40]));

        for split in 1..wire.len() {
            let mut scan = FrameScan::from_preface();
            let (a, b) = wire.split_at(split);
            let first = scan.feed(a);
            let second = scan.feed(b);
            let ends_in_first = split >= continuation_at + FRAME_HEADER;
            assert_eq!(first.completed, ends_in_first, "split at {split}");
            assert_eq!(second.completed, !ends_in_first, "split at {split}");
            assert!(!second.open);
        }
        let mut scan = FrameScan::from_preface();
        let open = scan.feed(&wire[..continuation_at]);
        assert_eq!(
            open,
            Blocks {
                completed: false,
                open: true
            }
        );
    }

    #[test]
    fn only_headers_end_a_block() {
        let mut scan = FrameScan::from_preface();
        let mut wire = H2_PREFACE.to_vec();
        wire.extend(frame(SETTINGS, 0, 0, &[]));
        // END_HEADERS is 0x4, which is also PING's ACK bit and SETTINGS' nothing: only
        // on HEADERS and CONTINUATION does it mean the end of a header block.
        wire.extend(frame(0x6, 0x1, 0, &[0; 8]));
        wire.extend(frame(CONTINUATION, END_HEADERS, 1, &[]));
        wire.extend(frame(DATA, END_HEADERS, 1, &[0; 4]));
        assert_eq!(scan.feed(&wire), Blocks::default());
        let done = scan.feed(&frame(HEADERS, END_HEADERS | 0x1, 3, &[0; 12]));
        assert!(done.completed && !done.open);
    }

    #[test]
    fn a_scan_may_start_inside_the_preface() {
        let mut scan = FrameScan::with_preface_left(10);
        let mut wire = H2_PREFACE[14..].to_vec();
        wire.extend(frame(HEADERS, END_HEADERS, 1, &[0; 3]));
        assert!(scan.feed(&wire).completed);
    }
}
