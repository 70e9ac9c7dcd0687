//! SHA-256 as the OCI world writes it: lowercase hex, of bytes at hand, of a reader, or of a
//! stream checked against its descriptor as it passes.

use std::io::{self, Read};
use std::str::FromStr;

use oci_spec::image::Sha256Digest;

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> Sha256Digest {
    digest_of(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// The digest and size of everything `reader` gives, read in large chunks.
pub fn sha256_read(reader: impl Read) -> io::Result<(Sha256Digest, u64)> {
    HashingReader::new(reader).finish()
}

/// Hashes and counts every byte read through it, so one pass over a file can both parse it
/// and digest it.
pub struct HashingReader<R> {
    inner: R,
    context: ring::digest::Context,
    size: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            context: ring::digest::Context::new(&ring::digest::SHA256),
            size: 0,
        }
    }

    /// Reads whatever is left, then gives the digest and size of everything read.
    pub fn finish(mut self) -> io::Result<(Sha256Digest, u64)> {
        let mut buf = vec![0u8; 1 << 20];
        while self.read(&mut buf)? != 0 {}
        Ok((digest_of(self.context.finish()), self.size))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.context.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

fn digest_of(d: ring::digest::Digest) -> Sha256Digest {
    Sha256Digest::from_str(&hex(d.as_ref()))
        .expect("64 lowercase hex digits are a valid sha256 digest")
}

/// How received bytes differ from their descriptor.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("more than the expected {expected} bytes")]
    TooLong { expected: u64 },
    #[error("{found} bytes, expected {expected}")]
    Size { found: u64, expected: u64 },
    #[error("digest sha256:{found}, expected sha256:{expected}")]
    Digest { found: String, expected: String },
}

/// Hashes and counts a stream as it passes, refusing it as soon as it runs long.
pub struct Verifier {
    context: ring::digest::Context,
    size: u64,
    expected_size: u64,
    expected_hex: String,
}

impl Verifier {
    pub fn new(expected_hex: &str, expected_size: u64) -> Self {
        Self {
            context: ring::digest::Context::new(&ring::digest::SHA256),
            size: 0,
            expected_size,
            expected_hex: expected_hex.to_owned(),
        }
    }

    pub fn update(&mut self, chunk: &[u8]) -> Result<(), Mismatch> {
        self.size += chunk.len() as u64;
        if self.size > self.expected_size {
            return Err(Mismatch::TooLong {
                expected: self.expected_size,
            });
        }
        self.context.update(chunk);
        Ok(())
    }

    pub fn finish(self) -> Result<(), Mismatch> {
        if self.size != self.expected_size {
            return Err(Mismatch::Size {
                found: self.size,
                expected: self.expected_size,
            });
        }
        let found = hex(self.context.finish().as_ref());
        if found != self.expected_hex {
            return Err(Mismatch::Digest {
                found,
                expected: self.expected_hex,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(data: &[&[u8]], hex: &str, size: u64) -> Result<(), Mismatch> {
        let mut v = Verifier::new(hex, size);
        for chunk in data {
            v.update(chunk)?;
        }
        v.finish()
    }

    #[test]
    fn streams_are_checked_for_size_and_digest() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), abc);
        assert_eq!(verify(&[b"a", b"", b"bc"], abc, 3), Ok(()));
        assert_eq!(
            verify(&[b"ab", b"cd"], abc, 3),
            Err(Mismatch::TooLong { expected: 3 }),
            "refused as soon as it runs long"
        );
        assert_eq!(
            verify(&[b"ab"], abc, 3),
            Err(Mismatch::Size {
                found: 2,
                expected: 3
            })
        );
        assert!(matches!(
            verify(&[b"abd"], abc, 3),
            Err(Mismatch::Digest { .. })
        ));
    }
}
