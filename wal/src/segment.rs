//! The on-disk format: segment file names, the segment header and record frames.
//!
//! A segment file is named `{base:020}.wal`, where `base` is the log position
//! of its byte 0. It starts with a 16-byte header (magic `VATIOWAL`, u32 LE
//! version, u32 reserved) followed by frames: u32 LE payload length, u32 LE
//! crc32c over (length bytes ++ payload), then the payload. The next segment's
//! base is this base plus this file's length, so positions are contiguous.

use std::path::{Path, PathBuf};

/// Bytes of the segment header; a segment's first record is at `base + 16`.
pub const HEADER_BYTES: u64 = 16;
/// Bytes in front of every payload (length and checksum).
pub const FRAME_HEADER_BYTES: u64 = 8;
/// The largest payload one record may carry (16 MiB).
pub const PAYLOAD_BYTES_MAX: usize = 16 << 20;

const MAGIC: &[u8; 8] = b"VATIOWAL";
const VERSION: u32 = 1;
const SUFFIX: &str = ".wal";
const BASE_DIGITS: usize = 20;

/// A segment file of the log, known by its base position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub base: u64,
    pub path: PathBuf,
}

impl SegmentFile {
    pub fn new(dir: &Path, base: u64) -> Self {
        SegmentFile {
            base,
            path: dir.join(file_name(base)),
        }
    }
}

/// `00000000000000001234.wal` for base 1234.
pub(crate) fn file_name(base: u64) -> String {
    format!("{base:0width$}{SUFFIX}", width = BASE_DIGITS)
}

/// The base encoded in a segment file name, or `None` for any other file.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != BASE_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn encode_header() -> [u8; HEADER_BYTES as usize] {
    let mut header = [0u8; HEADER_BYTES as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// Checks a segment header; the error says what is wrong with it.
pub(crate) fn check_header(header: &[u8; HEADER_BYTES as usize]) -> Result<(), String> {
    if &header[..8] != MAGIC {
        return Err(format!(
            "bad magic {:?}",
            String::from_utf8_lossy(&header[..8])
        ));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != VERSION {
        return Err(format!(
            "unsupported segment version {version} (expected {VERSION})"
        ));
    }
    Ok(())
}

/// Bytes a record with this payload takes in a segment.
pub(crate) fn frame_bytes(payload_len: usize) -> u64 {
    FRAME_HEADER_BYTES + payload_len as u64
}

/// Appends one frame for `payload` to `buf`.
pub(crate) fn encode_frame(buf: &mut Vec<u8>, payload: &[u8]) {
    debug_assert!(payload.len() <= PAYLOAD_BYTES_MAX);
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// A decoded frame header: payload length and the stored checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub len: u32,
    pub crc: u32,
}

impl FrameHeader {
    pub fn decode(bytes: &[u8; FRAME_HEADER_BYTES as usize]) -> Self {
        FrameHeader {
            len: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            crc: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }

    /// Whether the length is one the log could have written.
    pub fn len_ok(&self) -> bool {
        self.len as usize <= PAYLOAD_BYTES_MAX
    }

    /// The checksum seeded with the length bytes; continue it over the
    /// payload with `crc32c::crc32c_append` and compare with `self.crc`.
    pub fn crc_seed(&self) -> u32 {
        crc32c::crc32c(&self.len.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_sort_by_base() {
        assert_eq!(file_name(0), "00000000000000000000.wal");
        assert_eq!(file_name(1234), "00000000000000001234.wal");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("1234.wal"), None);
        assert_eq!(parse_file_name("0000000000000000000x.wal"), None);
        assert_eq!(parse_file_name("00000000000000001234.pos"), None);
        assert!(file_name(99) < file_name(100));
    }

    #[test]
    fn header_checks_magic_and_version() {
        let header = encode_header();
        assert_eq!(check_header(&header), Ok(()));
        let mut bad = header;
        bad[0] = b'X';
        assert!(check_header(&bad).is_err_and(|e| e.contains("magic")));
        let mut newer = header;
        newer[8] = 2;
        assert!(check_header(&newer).is_err_and(|e| e.contains("version 2")));
    }

    #[test]
    fn frame_encodes_length_checksum_and_payload() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, b"reading");
        assert_eq!(buf.len() as u64, frame_bytes(7));
        let mut head = [0u8; 8];
        head.copy_from_slice(&buf[..8]);
        let frame = FrameHeader::decode(&head);
        assert_eq!(frame.len, 7);
        assert!(frame.len_ok());
        assert_eq!(
            crc32c::crc32c_append(frame.crc_seed(), &buf[8..]),
            frame.crc
        );
        assert_eq!(crc32c::crc32c(&buf[..4]), frame.crc_seed());
    }
}
