//! WAL positions and segment files: which segments a clone needs, and whether a copied one is
//! really the segment it claims to be (a recycled file carries an old page address).

use std::fmt;
use std::path::Path;

use crate::error::{Error, ErrorKind, IoContext, Result};

/// A WAL position (`XLogRecPtr`), written `X/X` in hexadecimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(
    /// The byte position in the WAL stream.
    pub u64,
);

impl Lsn {
    /// Parses PostgreSQL's text form, `16/B374D848`.
    pub fn parse(text: &str) -> Option<Lsn> {
        let (high, low) = text.trim().split_once('/')?;
        let high = u64::from_str_radix(high, 16).ok()?;
        let low = u64::from_str_radix(low, 16).ok()?;
        (high <= u32::MAX as u64 && low <= u32::MAX as u64).then_some(Lsn(high << 32 | low))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The file name of segment `segno` on `timeline` (`TTTTTTTTXXXXXXXXYYYYYYYY`).
pub(crate) fn segment_name(timeline: u32, segno: u64, segment_size: u64) -> String {
    let per_xlogid = 0x1_0000_0000 / segment_size;
    format!(
        "{timeline:08X}{:08X}{:08X}",
        segno / per_xlogid,
        segno % per_xlogid
    )
}

/// The segments a backup from `start` to `stop` needs: from the one holding `start` to the one
/// holding the byte before `stop` (as `basebackup.c` does).
pub(crate) fn backup_segments(
    start: Lsn,
    stop: Lsn,
    segment_size: u64,
) -> std::ops::RangeInclusive<u64> {
    start.0 / segment_size..=(stop.0.max(start.0 + 1) - 1) / segment_size
}

/// The timeline in a backup label's `START TIMELINE:` line.
pub(crate) fn label_timeline(label: &str) -> Option<u32> {
    label
        .lines()
        .find_map(|l| l.strip_prefix("START TIMELINE:"))
        .and_then(|t| t.trim().parse().ok())
}

/// Checks that `path` starts with the long page header of segment `segno` of the cluster with
/// `system_id`: a recycled segment still carries the address it had before.
pub(crate) fn check_segment(
    path: &Path,
    segno: u64,
    segment_size: u64,
    system_id: u64,
) -> Result<()> {
    use std::io::Read;
    let mut header = [0u8; 40];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .doing("read WAL segment", path)?;
    const XLP_LONG_HEADER: u16 = 0x0002;
    let word = |at: usize| u64::from_ne_bytes(header[at..at + 8].try_into().unwrap());
    let info = u16::from_ne_bytes([header[2], header[3]]);
    let header_segment_size = u32::from_ne_bytes(header[32..36].try_into().unwrap()) as u64;
    if info & XLP_LONG_HEADER == 0 || header_segment_size != segment_size {
        return Err(Error::new(
            ErrorKind::Wal,
            format!("{} does not start like a WAL segment of this cluster (no long page header for {segment_size}-byte segments)", path.display()),
        ));
    }
    let (page_address, segment_system_id) = (word(8), word(24));
    let expected = segno * segment_size;
    if page_address != expected {
        return Err(Error::new(
            ErrorKind::Wal,
            format!(
                "WAL segment {} starts at {} instead of {}: it was recycled while the clone was made",
                path.display(),
                Lsn(page_address),
                Lsn(expected)
            ),
        )
        .hint("clone again; if it keeps happening, the source removes WAL faster than pgclone copies it"));
    }
    if segment_system_id != system_id {
        return Err(Error::new(
            ErrorKind::Wal,
            format!(
                "WAL segment {} belongs to another cluster (system identifier {segment_system_id}, expected {system_id})",
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_and_segments() {
        let lsn = Lsn::parse("1/2000028").unwrap();
        assert_eq!(lsn, Lsn(0x1_0200_0028));
        assert_eq!(lsn.to_string(), "1/2000028");
        assert_eq!(Lsn::parse("nonsense"), None);
        let mb16 = 16 << 20;
        assert_eq!(
            segment_name(1, lsn.0 / mb16, mb16),
            "000000010000000100000002"
        );
        // Stop exactly at a segment boundary: that segment is not needed.
        assert_eq!(backup_segments(Lsn(0x2000028), Lsn(0x4000000), mb16), 2..=3);
        assert_eq!(backup_segments(Lsn(0x2000028), Lsn(0x2000100), mb16), 2..=2);
        assert_eq!(label_timeline("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n"), Some(1));
    }

    /// A segment's first 40 bytes: magic, info, timeline, page address, ..., system id, size.
    fn segment(page_address: u64, system_id: u64, info: u16, size: u32) -> tempfile::NamedTempFile {
        let mut header = vec![0u8; 8192];
        header[0..2].copy_from_slice(&0xD110u16.to_ne_bytes());
        header[2..4].copy_from_slice(&info.to_ne_bytes());
        header[8..16].copy_from_slice(&page_address.to_ne_bytes());
        header[24..32].copy_from_slice(&system_id.to_ne_bytes());
        header[32..36].copy_from_slice(&size.to_ne_bytes());
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), header).unwrap();
        file
    }

    #[test]
    fn segment_headers_are_checked() {
        let size = 16 << 20;
        let good = segment(3 * size as u64, 42, 0x0002, size);
        check_segment(good.path(), 3, size as u64, 42).unwrap();
        let recycled = segment(size as u64, 42, 0x0002, size);
        assert!(check_segment(recycled.path(), 3, size as u64, 42)
            .unwrap_err()
            .to_string()
            .contains("recycled"));
        let foreign = segment(3 * size as u64, 7, 0x0002, size);
        assert!(check_segment(foreign.path(), 3, size as u64, 42)
            .unwrap_err()
            .to_string()
            .contains("another cluster"));
        let short_header = segment(3 * size as u64, 42, 0, size);
        assert!(check_segment(short_header.path(), 3, size as u64, 42).is_err());
        let zeroed = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(zeroed.path(), vec![0u8; 8192]).unwrap();
        assert!(check_segment(zeroed.path(), 3, size as u64, 42).is_err());
    }
}
