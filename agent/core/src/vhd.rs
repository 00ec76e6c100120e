//! The fixed-VHD footer: 512 bytes after the disk that make a raw image (or a
//! page blob) a VHD Azure can import as a managed disk.
//!
//! Layout (big-endian), from the Virtual Hard Disk Image Format Specification:
//!
//! ```text
//!  0  8 cookie "conectix"          40  8 original size
//!  8  4 features = 2               48  8 current size (virtual size)
//! 12  4 format version 0x00010000  56  4 geometry: cylinders u16, heads u8, sectors/track u8
//! 16  8 data offset = all ones     60  4 disk type = 2 (fixed)
//! 24  4 timestamp (s since 2000)   64  4 checksum: one's complement of the byte sum
//! 28  4 creator application        68 16 unique id
//! 32  4 creator version            84  1 saved state = 0
//! 36  4 creator host OS "Wi2k"     85 427 reserved, zero
//! ```
//!
//! The creator application is `"win "` (Hyper-V): readers such as qemu then
//! take the virtual size from the size field rather than from the CHS
//! geometry, which cannot express every multiple of 1 MiB.

use crate::geometry::round_up_mib;

pub const FOOTER_LEN: usize = 512;
const COOKIE: &[u8; 8] = b"conectix";
const FEATURES: u32 = 2;
const FORMAT_VERSION: u32 = 0x0001_0000;
const DISK_TYPE_FIXED: u32 = 2;
const CREATOR_APP: &[u8; 4] = b"win ";
/// Hyper-V 10.0, as Azure's own VHDs say.
const CREATOR_VERSION: u32 = 0x000a_0000;
const CREATOR_HOST: &[u8; 4] = b"Wi2k";
/// Seconds from the Unix epoch to 2000-01-01T00:00:00Z, the VHD epoch.
pub const VHD_EPOCH_UNIX: u64 = 946_684_800;

/// CHS geometry as the VHD specification computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chs {
    pub cylinders: u16,
    pub heads: u8,
    pub sectors_per_track: u8,
}

impl Chs {
    /// The specification's algorithm (appendix "CHS calculation").
    pub fn for_size(bytes: u64) -> Self {
        let mut total = (bytes / 512).min(65535 * 16 * 255);
        let (spt, heads, cyl_times_heads);
        if total >= 65535 * 16 * 63 {
            spt = 255;
            heads = 16;
            cyl_times_heads = total / spt;
        } else {
            let mut s = 17;
            let mut cth = total / s;
            let mut h = cth.div_ceil(1024).max(4);
            if cth >= h * 1024 || h > 16 {
                s = 31;
                h = 16;
                cth = total / s;
            }
            if cth >= h * 1024 {
                s = 63;
                h = 16;
                cth = total / s;
            }
            spt = s;
            heads = h;
            cyl_times_heads = cth;
        }
        total = cyl_times_heads / heads;
        Self { cylinders: total as u16, heads: heads as u8, sectors_per_track: spt as u8 }
    }
}

/// A parsed fixed-VHD footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Virtual size: the disk size rounded up to 1 MiB.
    pub size: u64,
    /// Seconds since 2000-01-01.
    pub timestamp: u32,
    pub unique_id: [u8; 16],
    pub chs: Chs,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FooterError {
    #[error("VHD footer is {0} bytes, 512 expected")]
    Length(usize),
    #[error("VHD footer has no \"conectix\" cookie")]
    Cookie,
    #[error("VHD footer checksum {stored:#010x} does not match {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("VHD disk type {0} is not fixed (2)")]
    DiskType(u32),
    #[error("VHD format version {0:#010x} is not 1.0")]
    Version(u32),
    #[error("VHD data offset {0:#x} is not that of a fixed disk")]
    DataOffset(u64),
    #[error("VHD virtual size {0} is not a multiple of 512")]
    Size(u64),
}

impl Footer {
    /// The footer for a disk of `disk_size` bytes (rounded up to 1 MiB).
    pub fn new(disk_size: u64, timestamp: u32, unique_id: [u8; 16]) -> Self {
        let size = round_up_mib(disk_size);
        Self { size, timestamp, unique_id, chs: Chs::for_size(size) }
    }

    /// The footer for a disk of `disk_size` bytes written at `unix_secs`, its
    /// unique id derived from `name` (so a destination keeps one id).
    pub fn for_disk(disk_size: u64, unix_secs: u64, name: &[u8]) -> Self {
        let mut id = [0u8; 16];
        id.copy_from_slice(&blake3::hash(name).as_bytes()[..16]);
        let ts = unix_secs.saturating_sub(VHD_EPOCH_UNIX).min(u64::from(u32::MAX)) as u32;
        Self::new(disk_size, ts, id)
    }

    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut f = [0u8; FOOTER_LEN];
        f[0..8].copy_from_slice(COOKIE);
        f[8..12].copy_from_slice(&FEATURES.to_be_bytes());
        f[12..16].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
        f[24..28].copy_from_slice(&self.timestamp.to_be_bytes());
        f[28..32].copy_from_slice(CREATOR_APP);
        f[32..36].copy_from_slice(&CREATOR_VERSION.to_be_bytes());
        f[36..40].copy_from_slice(CREATOR_HOST);
        f[40..48].copy_from_slice(&self.size.to_be_bytes());
        f[48..56].copy_from_slice(&self.size.to_be_bytes());
        f[56..58].copy_from_slice(&self.chs.cylinders.to_be_bytes());
        f[58] = self.chs.heads;
        f[59] = self.chs.sectors_per_track;
        f[60..64].copy_from_slice(&DISK_TYPE_FIXED.to_be_bytes());
        f[68..84].copy_from_slice(&self.unique_id);
        let sum = checksum(&f);
        f[64..68].copy_from_slice(&sum.to_be_bytes());
        f
    }

    pub fn parse(f: &[u8]) -> Result<Self, FooterError> {
        if f.len() != FOOTER_LEN {
            return Err(FooterError::Length(f.len()));
        }
        if &f[0..8] != COOKIE {
            return Err(FooterError::Cookie);
        }
        let stored = be_u32(f, 64);
        let computed = checksum(f);
        if stored != computed {
            return Err(FooterError::Checksum { stored, computed });
        }
        let version = be_u32(f, 12);
        if version != FORMAT_VERSION {
            return Err(FooterError::Version(version));
        }
        let offset = u64::from_be_bytes(f[16..24].try_into().map_err(|_| FooterError::Length(f.len()))?);
        if offset != u64::MAX {
            return Err(FooterError::DataOffset(offset));
        }
        let disk_type = be_u32(f, 60);
        if disk_type != DISK_TYPE_FIXED {
            return Err(FooterError::DiskType(disk_type));
        }
        let size = u64::from_be_bytes(f[48..56].try_into().map_err(|_| FooterError::Length(f.len()))?);
        if !size.is_multiple_of(512) {
            return Err(FooterError::Size(size));
        }
        let mut unique_id = [0u8; 16];
        unique_id.copy_from_slice(&f[68..84]);
        Ok(Self {
            size,
            timestamp: be_u32(f, 24),
            unique_id,
            chs: Chs { cylinders: u16::from_be_bytes([f[56], f[57]]), heads: f[58], sectors_per_track: f[59] },
        })
    }
}

/// One's complement of the sum of all bytes, the checksum field taken as zero.
fn checksum(f: &[u8]) -> u32 {
    let sum: u32 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_matches_the_specification() {
        // Values follow the specification's algorithm, which rounds down
        // (qemu then rounds its own images up: 1020, 2081, 65279 cylinders).
        // 127 MiB: the branch with 17 sectors per track.
        assert_eq!(Chs::for_size(127 << 20), Chs { cylinders: 1019, heads: 15, sectors_per_track: 17 });
        // 1 GiB.
        assert_eq!(Chs::for_size(1 << 30), Chs { cylinders: 2080, heads: 16, sectors_per_track: 63 });
        // 127 GiB and past: capped at 65535 cylinders.
        assert_eq!(Chs::for_size(127 << 30), Chs { cylinders: 65278, heads: 16, sectors_per_track: 255 });
        assert_eq!(Chs::for_size(4 << 40), Chs { cylinders: 65535, heads: 16, sectors_per_track: 255 });
    }

    #[test]
    fn round_trip_and_checksum() {
        let f = Footer::new((100 << 20) + 512, 123, [7; 16]);
        assert_eq!(f.size, 101 << 20);
        let b = f.encode();
        assert_eq!(Footer::parse(&b), Ok(f));
        let mut bad = b;
        bad[100] = 1;
        assert!(matches!(Footer::parse(&bad), Err(FooterError::Checksum { .. })));
        let mut bad = b;
        bad[0] = b'C';
        assert_eq!(Footer::parse(&bad), Err(FooterError::Cookie));
        assert_eq!(Footer::parse(&b[..511]), Err(FooterError::Length(511)));
    }
}
