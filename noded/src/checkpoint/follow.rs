//! Following the archive while the runtime writes it. Both runtimes write the tar front to
//! back into the path they are given, so its bytes are parsed and hashed as they land, and once
//! the runtime is done only its last bytes are left to read, not the whole file. The CRI
//! promises no such order: what was read is checked against the file as it ends ([`judge`]),
//! and when the two may differ the caller hashes the file again.

use std::fs::{self, File, Metadata};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use checkpointing::archive::{self, ArchiveError, Scanned};

/// How long the reader waits at the end of the file before looking again.
const POLL: Duration = Duration::from_millis(2);
const FOLLOW_BUFFER: usize = 256 << 10;

/// A file's identity, size and modification time, from one `stat`. Not its change time: noded
/// makes the file private (a `chmod`) while the last bytes are read, which changes no byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl From<&Metadata> for Stamp {
    fn from(m: &Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }
}

/// Why the bytes read while the file was written may not be the file's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
enum Behind {
    #[error("another file took the archive's name")]
    Replaced,
    #[error("the archive shrank below the {read} bytes already read")]
    Shrunk { read: u64 },
    #[error("the archive was written without growing: bytes already read may have changed")]
    Rewritten,
}

/// Whether the file, stamped `now` after `previous` (the same file's last stamp), may no longer
/// hold the `read` bytes read from it. A writer that only appends grows the file with every
/// write; one that writes without growing it changes its modification time at the same size.
/// Linux takes a fine-grained time for a write after a `stat` (multigrain timestamps), so a
/// write between two stamps shows; older kernels tick coarsely, and a rewrite within the tick
/// of the write before it goes unseen. So does a rewrite while the reader lags behind appends:
/// the runtimes only append, this is a check against the unexpected, not a proof.
fn judge(previous: &Stamp, now: &Stamp, read: u64) -> Result<(), Behind> {
    if (previous.dev, previous.ino) != (now.dev, now.ino) {
        return Err(Behind::Replaced);
    }
    if now.size < read {
        return Err(Behind::Shrunk { read });
    }
    if previous.size == now.size && previous.mtime != now.mtime {
        return Err(Behind::Rewritten);
    }
    Ok(())
}

/// Where the runtime's call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Writing,
    Done,
    Failed,
}

/// The runtime's call as the reader sees it: it waits on this at the end of the file.
#[derive(Debug)]
struct Call {
    phase: Mutex<Phase>,
    changed: Condvar,
}

impl Call {
    fn set(&self, phase: Phase) {
        let mut current = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if *current == Phase::Writing {
            *current = phase;
        }
        self.changed.notify_all();
    }

    /// Whether the runtime is done writing; an error once its call failed (nothing to read).
    fn done(&self) -> io::Result<bool> {
        match *self.phase.lock().unwrap_or_else(|p| p.into_inner()) {
            Phase::Writing => Ok(false),
            Phase::Done => Ok(true),
            Phase::Failed => Err(io::Error::other("the runtime's checkpoint call failed")),
        }
    }

    /// Waits a moment for more bytes, or less if the call ends meanwhile.
    fn pause(&self) {
        let phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if *phase == Phase::Writing {
            drop(self.changed.wait_timeout(phase, POLL));
        }
    }
}

/// Reads a file being written, as one stream ending where the file ends once its writer is
/// done, stamping it after each read so that a write behind the reader shows.
struct Tail<'a> {
    file: File,
    read: u64,
    last: Stamp,
    call: &'a Call,
}

impl Tail<'_> {
    fn stamp(&mut self) -> io::Result<()> {
        let now = Stamp::from(&self.file.metadata()?);
        judge(&self.last, &now, self.read).map_err(io::Error::other)?;
        self.last = now;
        Ok(())
    }
}

impl Read for Tail<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // Asked before the read: a call done by now wrote all it will before this read.
            let done = self.call.done()?;
            let n = self.file.read(buf)?;
            self.read += n as u64;
            self.stamp()?;
            if n > 0 {
                return Ok(n);
            }
            if self.last.size > self.read {
                continue;
            }
            if done {
                return Ok(0);
            }
            self.call.pause();
        }
    }
}

/// Opens `path` once the runtime has made it; not found when its call ended without it.
fn open(path: &Path, call: &Call) -> io::Result<File> {
    loop {
        let done = call.done()?;
        match File::open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && !done => call.pause(),
            opened => return opened,
        }
    }
}

/// Reads, parses and hashes the archive at `path` as the runtime writes it, then checks that
/// the file at `path` is still what was read.
fn follow(path: &Path, call: &Call) -> io::Result<Scanned> {
    let file = open(path, call)?;
    let last = Stamp::from(&file.metadata()?);
    let mut tail = Tail {
        file,
        read: 0,
        last,
        call,
    };
    // A quarter MiB: each running dump has a follower, and with 1 MiB each noded's RSS under
    // a burst of checkpoints reached 1.31x its idle RSS (bench section 6).
    let scanned = archive::scan_from(path, BufReader::with_capacity(FOLLOW_BUFFER, &mut tail))
        .map_err(io::Error::other)?;
    let at_path = Stamp::from(&fs::metadata(path)?);
    judge(&tail.last, &at_path, tail.read).map_err(io::Error::other)?;
    Ok(scanned)
}

/// An archive followed on a thread of its own while the runtime's call runs.
#[derive(Debug)]
pub(super) struct Following {
    call: Arc<Call>,
    reader: Option<JoinHandle<io::Result<Scanned>>>,
    path: PathBuf,
}

impl Following {
    /// Starts following the file the runtime is about to write at `path` (none there yet).
    pub fn start(path: &Path) -> Self {
        let call = Arc::new(Call {
            phase: Mutex::new(Phase::Writing),
            changed: Condvar::new(),
        });
        let reader = {
            let (call, path) = (call.clone(), path.to_owned());
            std::thread::Builder::new()
                .name("archive-follower".into())
                .spawn(move || follow(&path, &call))
        };
        // Without a thread the file is read after the call, as if following had failed.
        let reader = reader.inspect_err(|error| tracing::warn!(%error, "cannot follow the archive; it will be read once written")).ok();
        Self {
            call,
            reader,
            path: path.to_owned(),
        }
    }

    /// Tells the reader the runtime's call ended: it reads to the end of a written file, or
    /// stops.
    pub fn ended(&self, written: bool) {
        self.call
            .set(if written { Phase::Done } else { Phase::Failed });
    }

    /// What was read while the runtime wrote, once it is all read; an error when it may not be
    /// the file as it is now, or could not be read (the caller reads the file again).
    pub fn finish(mut self) -> Result<Scanned, ArchiveError> {
        let followed = match self.reader.take().map(JoinHandle::join) {
            Some(Ok(followed)) => followed,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Err(io::Error::other("not followed")),
        };
        followed.map_err(|source| ArchiveError::Io {
            path: self.path.display().to_string(),
            source,
        })
    }
}

impl Drop for Following {
    /// A call abandoned (its future dropped) stops the reader too.
    fn drop(&mut self) {
        self.call.set(Phase::Failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(ino: u64, size: u64, time: i64) -> Stamp {
        Stamp {
            dev: 1,
            ino,
            size,
            mtime: (time, 0),
        }
    }

    #[test]
    fn appends_pass_and_writes_behind_the_reader_do_not() {
        let first = stamp(7, 100, 1);
        assert_eq!(judge(&first, &stamp(7, 200, 2), 100), Ok(()), "grew");
        assert_eq!(judge(&first, &first, 100), Ok(()), "nothing new");
        assert_eq!(
            judge(&first, &stamp(7, 100, 2), 100),
            Err(Behind::Rewritten),
            "written at the same size"
        );
        assert_eq!(
            judge(&first, &stamp(7, 50, 2), 100),
            Err(Behind::Shrunk { read: 100 })
        );
        assert_eq!(
            judge(&first, &stamp(7, 60, 2), 50),
            Ok(()),
            "cut only where nothing was read yet"
        );
        assert_eq!(judge(&first, &stamp(8, 100, 1), 100), Err(Behind::Replaced));
    }
}
