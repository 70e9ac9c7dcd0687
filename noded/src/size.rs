//! Sizes in words: what a message says of a number of bytes.

use std::fmt;

/// Bytes in binary units to one decimal, for people: `1.5 GiB`, `256 MiB`, `512 B`.
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        // Only for display: f64's precision loss is far below the one decimal shown.
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        let shown = format!("{value:.1}");
        let shown = shown.strip_suffix(".0").unwrap_or(&shown);
        write!(f, "{shown} {}", UNITS[unit])
    }
}
