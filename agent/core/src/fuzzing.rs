//! The properties the fuzz targets check (`fuzz/fuzz_targets/`), shared with
//! the regression test that replays the committed corpus on every `cargo test`.

use crate::journal;
use crate::manifest::Manifest;
use crate::vhd::Footer;

/// The manifest decoder never panics, and what it accepts re-encodes to a
/// manifest that decodes to the same value.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::decode(data) {
        let again = m.encode().unwrap_or_else(|e| panic!("a decoded manifest does not encode: {e}"));
        assert_eq!(Manifest::decode(&again).as_ref(), Ok(&m));
    }
}

/// The footer parser never panics; what it accepts round-trips.
pub fn vhd_footer(data: &[u8]) {
    if let Ok(f) = Footer::parse(data) {
        assert_eq!(Footer::parse(&f.encode()), Ok(f));
    }
}

/// The journal parser never panics.
pub fn journal(data: &[u8]) {
    let _ = journal::parse(data);
}
