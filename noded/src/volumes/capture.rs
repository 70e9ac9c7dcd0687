//! Copying volumes into a tar while their container runs.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use tar::{EntryType, Header};

use super::{Error, LINKS, MAX_DEPTH, PREFIX, host_dir, open_beneath, open_volume, stays_inside};

/// Where procfs lists this process's descriptors.
const OWN_FDS: &str = "/proc/self/fd";

/// Writes the `volumes` of pod `uid` as a tar at `dest` (under a temporary name, fsynced, then
/// renamed, mode 0600: the data is the pod's), failing once it would exceed `limit` bytes.
/// Symbolic links are kept as links (listed, see [`LINKS`]), and one out of its volume fails
/// the whole; sockets, fifos
/// and devices are left out; each hard link is a file of its own. An entry gone by the time it is opened is left out.
pub fn capture(
    pods: &Path,
    uid: &str,
    volumes: &[String],
    dest: &Path,
    limit: u64,
) -> Result<(), Error> {
    let partial = dest.with_extension("partial");
    let written = write(pods, uid, volumes, &partial, limit);
    if written.is_err() {
        // Nothing half-written stays; absent is fine.
        let _ = fs::remove_file(&partial);
    }
    written?;
    fs::rename(&partial, dest).map_err(|source| Error::Write {
        path: dest.to_owned(),
        source,
    })
}

fn write(
    pods: &Path,
    uid: &str,
    volumes: &[String],
    partial: &Path,
    limit: u64,
) -> Result<(), Error> {
    let fail = |source| Error::Write {
        path: partial.to_owned(),
        source,
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(partial)
        .map_err(fail)?;
    let mut walk = Walk {
        tar: tar::Builder::new(Counted { file, written: 0 }),
        limit,
        fds: own_fds()?,
        partial,
        links: Vec::new(),
    };
    for volume in volumes {
        let dir = host_dir(pods, uid, volume).ok_or_else(|| Error::Name {
            pod: uid.to_owned(),
            volume: volume.clone(),
        })?;
        let read = |source| Error::Read {
            path: dir.clone(),
            source,
        };
        let fd = open_volume(&dir).map_err(read)?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| read(e.into()))?;
        walk.directory(fd, &stat, &Path::new(PREFIX).join(volume), &dir, 0)?;
    }
    if !walk.links.is_empty() {
        let links = std::mem::take(&mut walk.links);
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_size(links.len() as u64);
        header.set_mode(0o600);
        walk.append(header, &Path::new(PREFIX).join(LINKS), &links[..])?;
    }
    let counted = walk.tar.into_inner().map_err(fail)?;
    counted.file.sync_all().map_err(fail)
}

/// noded's own descriptors as procfs shows them, checked to be procfs: the one way to open for
/// reading the file an `O_PATH` descriptor holds, rather than whatever its name is by then.
fn own_fds() -> Result<OwnedFd, Error> {
    let read = |source| Error::Read {
        path: OWN_FDS.into(),
        source,
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fds = rustix::fs::open(OWN_FDS, flags, Mode::empty()).map_err(|e| read(e.into()))?;
    let fs = rustix::fs::fstatfs(&fds).map_err(|e| read(e.into()))?;
    if fs.f_type != rustix::fs::PROC_SUPER_MAGIC {
        return Err(read(io::Error::other("not procfs")));
    }
    Ok(fds)
}

/// The tar file, counting what is written to it.
struct Counted {
    file: File,
    written: u64,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written = self.written.saturating_add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

struct Walk<'a> {
    tar: tar::Builder<Counted>,
    limit: u64,
    fds: OwnedFd,
    partial: &'a Path,
    /// The symbolic links met, as [`LINKS`] lists them.
    links: Vec<u8>,
}

impl Walk<'_> {
    /// Archives directory `dir` (open, `stat` its status) as `name`, then what is beneath it;
    /// `host` names it in messages.
    fn directory(
        &mut self,
        dir: OwnedFd,
        stat: &Stat,
        name: &Path,
        host: &Path,
        depth: usize,
    ) -> Result<(), Error> {
        self.append(header(stat, EntryType::Directory, 0), name, io::empty())?;
        let read = |source: Errno| Error::Read {
            path: host.to_owned(),
            source: source.into(),
        };
        let mut entries = Dir::new(dir).map_err(read)?;
        while let Some(entry) = entries.next() {
            let child = entry.map_err(read)?;
            let child = OsStr::from_bytes(child.file_name().to_bytes());
            if child == "." || child == ".." {
                continue;
            }
            let parent = entries.fd().map_err(read)?;
            self.entry(parent, child, &name.join(child), &host.join(child), depth)?;
        }
        Ok(())
    }

    /// Archives `child` of directory `parent`, by what the descriptor opened holds: a name
    /// the container swaps meanwhile changes nothing already open.
    fn entry(
        &mut self,
        parent: impl AsFd,
        child: &OsStr,
        name: &Path,
        host: &Path,
        depth: usize,
    ) -> Result<(), Error> {
        let read = |source: io::Error| Error::Read {
            path: host.to_owned(),
            source,
        };
        // O_PATH opens nothing: a device node's driver never runs, a fifo never blocks.
        let held = match open_beneath(parent, child, OFlags::PATH, Mode::empty()) {
            Ok(fd) => fd,
            // Gone since the directory was read, or another mount: not the volume's.
            Err(Errno::NOENT | Errno::XDEV) => return Ok(()),
            Err(e) => return Err(read(e.into())),
        };
        let stat = rustix::fs::fstat(&held).map_err(|e| read(e.into()))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                if depth >= MAX_DEPTH {
                    return Err(Error::TooDeep {
                        path: host.to_owned(),
                    });
                }
                // "." of the held directory: no name left to swap.
                let flags = OFlags::RDONLY | OFlags::DIRECTORY;
                let dir = open_beneath(&held, ".", flags, Mode::empty());
                let dir = dir.map_err(|e| read(e.into()))?;
                drop(held);
                self.directory(dir, &stat, name, host, depth + 1)
            }
            FileType::RegularFile => {
                let size = u64::try_from(stat.st_size).unwrap_or(0);
                if self.tar.get_ref().written.saturating_add(size) > self.limit {
                    return Err(Error::TooLarge { limit: self.limit });
                }
                let file = File::from(self.reopen(&held, &stat).map_err(read)?);
                // The size fstat gave, whatever the file does meanwhile: the header says it.
                let data = file.take(size).chain(io::repeat(0)).take(size);
                self.append(header(&stat, EntryType::Regular, size), name, data)
            }
            FileType::Symlink => {
                let target =
                    rustix::fs::readlinkat(&held, "", Vec::new()).map_err(|e| read(e.into()))?;
                let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                // No node would place it (see `place`): the checkpoint fails now, saying why,
                // rather than its restore later.
                if !stays_inside(depth, target) {
                    return Err(Error::Escape {
                        path: name.to_owned(),
                        target: target.to_owned(),
                    });
                }
                // Listed, not archived as a link: see [`LINKS`].
                for field in [name.as_os_str(), target.as_os_str()] {
                    self.links.extend_from_slice(field.as_bytes());
                    self.links.push(0);
                }
                for id in [stat.st_uid, stat.st_gid] {
                    self.links.extend_from_slice(id.to_string().as_bytes());
                    self.links.push(0);
                }
                self.bounded()
            }
            // Sockets, fifos and devices: no data of the pod's to carry.
            _ => Ok(()),
        }
    }

    /// Opens for reading the regular file `held` holds (an `O_PATH` descriptor).
    fn reopen(&self, held: &OwnedFd, stat: &Stat) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let number = held.as_raw_fd().to_string();
        let file = rustix::fs::openat(&self.fds, number, flags, Mode::empty())?;
        let opened = rustix::fs::fstat(&file)?;
        if (opened.st_dev, opened.st_ino) != (stat.st_dev, stat.st_ino) {
            return Err(io::Error::other("procfs reopened another file"));
        }
        Ok(file)
    }

    fn append(&mut self, mut header: Header, name: &Path, data: impl Read) -> Result<(), Error> {
        let appended = self.tar.append_data(&mut header, name, data);
        appended.map_err(|source| self.write_error(source))?;
        self.bounded()
    }

    fn bounded(&self) -> Result<(), Error> {
        let links = self.links.len() as u64;
        if self.tar.get_ref().written.saturating_add(links) > self.limit {
            return Err(Error::TooLarge { limit: self.limit });
        }
        Ok(())
    }

    fn write_error(&self, source: io::Error) -> Error {
        Error::Write {
            path: self.partial.to_owned(),
            source,
        }
    }
}

/// A header with the type, mode, owner and time of the entry as opened.
fn header(stat: &Stat, kind: EntryType, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(stat.st_mode & 0o7777);
    header.set_uid(stat.st_uid.into());
    header.set_gid(stat.st_gid.into());
    header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
    header
}
