//! Whether a pushed checkpoint's archive layer is compressed: as the request says, or, for
//! `Auto`, as a sample of the archive measures. The decision is pure; [`measure`] reads and
//! compresses the sample.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use checkpointing::crd::Compression;

/// zstd level of pushed layers: the library's default, most of level 19's savings on memory
/// pages at a small fraction of its time.
pub const LEVEL: i32 = 3;
/// Slices of the archive compressed to measure it, and their size: spread over the file,
/// since its members (memory pages, then small dumps) compress unevenly.
const SLICES: u64 = 4;
const SLICE: u64 = 1 << 20;
/// `Auto` compresses a layer that shrinks to 4/5 of its size or less. Below a fifth saved, the
/// bytes spared do not pay for compressing on this node and decompressing on every pull.
const WORTH: (u64, u64) = (4, 5);

/// How the archive layer is pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Plain,
    Zstd,
}

impl Layer {
    /// The `compression` label of the push metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Plain => "none",
            Self::Zstd => "zstd",
        }
    }
}

/// Bytes of a sample, before and after compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub read: u64,
    pub written: u64,
}

/// The request's choice; for `Auto`, zstd when `sample` (taken only for `Auto`; none when
/// taking it failed) shrinks enough.
pub fn decide(asked: Compression, sample: Option<Sample>) -> Layer {
    match (asked, sample) {
        (Compression::Zstd, _) => Layer::Zstd,
        (Compression::None, _) | (Compression::Auto, None) => Layer::Plain,
        (Compression::Auto, Some(Sample { read, written })) => {
            if read > 0 && written * WORTH.1 <= read * WORTH.0 {
                Layer::Zstd
            } else {
                Layer::Plain
            }
        }
    }
}

/// Where the sample's slices start in a file of `size` bytes: the whole of a small file, else
/// [`SLICES`] slices from its start to its end, evenly apart.
fn slice_offsets(size: u64) -> Vec<u64> {
    if size <= SLICES * SLICE {
        return vec![0];
    }
    let last = size - SLICE;
    (0..SLICES).map(|i| last * i / (SLICES - 1)).collect()
}

/// Compresses the sample of the archive at `path`.
pub fn measure(path: &Path) -> io::Result<Sample> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut sample = Sample {
        read: 0,
        written: 0,
    };
    let length = if size <= SLICES * SLICE { size } else { SLICE };
    let mut slice = Vec::new();
    for offset in slice_offsets(size) {
        file.seek(SeekFrom::Start(offset))?;
        slice.clear();
        (&mut file).take(length).read_to_end(&mut slice)?;
        sample.read += slice.len() as u64;
        sample.written += zstd::bulk::compress(&slice, LEVEL)?.len() as u64;
    }
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(read: u64, written: u64) -> Option<Sample> {
        Some(Sample { read, written })
    }

    #[test]
    fn auto_compresses_what_shrinks_to_four_fifths_or_less() {
        assert_eq!(decide(Compression::Auto, sample(100, 80)), Layer::Zstd);
        assert_eq!(decide(Compression::Auto, sample(100, 20)), Layer::Zstd);
        assert_eq!(decide(Compression::Auto, sample(100, 81)), Layer::Plain);
        assert_eq!(decide(Compression::Auto, sample(100, 104)), Layer::Plain);
        assert_eq!(decide(Compression::Auto, sample(0, 0)), Layer::Plain);
        assert_eq!(decide(Compression::Auto, None), Layer::Plain, "no sample");
    }

    #[test]
    fn an_explicit_choice_is_followed_whatever_the_sample() {
        assert_eq!(decide(Compression::Zstd, sample(100, 104)), Layer::Zstd);
        assert_eq!(decide(Compression::Zstd, None), Layer::Zstd);
        assert_eq!(decide(Compression::None, sample(100, 1)), Layer::Plain);
    }

    #[test]
    fn slices_spread_from_start_to_end() {
        assert_eq!(slice_offsets(0), vec![0]);
        assert_eq!(slice_offsets(4 * SLICE), vec![0]);
        let size = 100 * SLICE + 7;
        let offsets = slice_offsets(size);
        assert_eq!(offsets.len(), 4);
        assert_eq!(offsets[0], 0);
        assert_eq!(offsets[3] + SLICE, size, "the last slice ends the file");
        assert!(offsets.windows(2).all(|w| w[1] - w[0] >= SLICE));
    }

    #[test]
    fn repetitive_archives_measure_compressible_random_ones_not() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = dir.path().join("zeros");
        std::fs::write(&zeros, vec![0u8; 6 << 20]).unwrap();
        let measured = measure(&zeros).unwrap();
        assert_eq!(measured.read, 4 * SLICE);
        assert_eq!(decide(Compression::Auto, Some(measured)), Layer::Zstd);

        let noise = dir.path().join("noise");
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let bytes: Vec<u8> = (0..(1 << 20))
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(&noise, bytes).unwrap();
        let measured = measure(&noise).unwrap();
        assert_eq!(measured.read, 1 << 20, "a small file is its own sample");
        assert_eq!(decide(Compression::Auto, Some(measured)), Layer::Plain);
    }
}
