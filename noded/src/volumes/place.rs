//! Unpacking a volumes layer into a restored pod's emptyDir directories.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use tar::EntryType;

use super::{Error, LINKS, PREFIX, host_dir, open_beneath, open_volume, stays_inside};

/// The kernel's overflow user and group.
const NOBODY: u32 = 65534;

/// Who placed files belong to. Whoever it is, they get no setuid or setgid bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Owners {
    /// The owner of the volume's directory the kubelet made: the pod's spec is not known.
    #[default]
    Volume,
    /// The pod's user and group: it runs as this user, not root, who must be able to write
    /// its own files.
    Pod { uid: u32, gid: u32 },
    /// The owners the layer records (those at the source): the pod may run as root, which
    /// may change anything in its volume anyway, and its restored processes keep their users.
    Recorded,
}

/// Unpacks the volumes of the layer at `layer` into pod `uid`'s emptyDir directories: only
/// those `wanted` says yes to and the pod has (the kubelet made their directory). Returns the
/// volumes placed. Files belong to `owners` and keep their permission bits but setuid and
/// setgid. A hard link, device or fifo, a symbolic link out of its volume, or an entry that
/// would land outside it fails the whole.
pub fn place(
    layer: &Path,
    pods: &Path,
    uid: &str,
    owners: Owners,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<String>, Error> {
    let unreadable = |source| Error::Layer {
        path: layer.to_owned(),
        source,
    };
    let open = || File::open(layer).map(tar::Archive::new).map_err(unreadable);
    // Every entry checked before any is placed: a refused layer leaves nothing behind.
    let mut archive = open()?;
    for entry in archive.entries_with_seek().map_err(unreadable)? {
        read(&mut entry.map_err(unreadable)?, layer)?;
    }
    // Each volume's target, opened at its first entry; `None`: not placed.
    let mut targets: HashMap<String, Option<Target>> = HashMap::new();
    let mut placed: Vec<String> = Vec::new();
    let mut archive = open()?;
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        for checked in read(&mut entry, layer)? {
            let volume = checked.volume.as_str();
            if !targets.contains_key(volume) {
                let target = Target::open(pods, uid, volume, owners, &wanted, &checked.path)?;
                if target.is_some() {
                    placed.push(volume.to_owned());
                }
                targets.insert(volume.to_owned(), target);
            }
            if let Some(Some(target)) = targets.get(volume) {
                target.put(&checked, &mut entry)?;
            }
        }
    }
    Ok(placed)
}

/// An entry of the layer that may be placed: where, and what it makes.
struct Checked {
    /// Its name in the layer, for messages.
    path: PathBuf,
    volume: String,
    /// Its path beneath the volume, one name at a time; none for the volume itself.
    names: Vec<OsString>,
    /// The target of a symbolic link.
    link: Option<PathBuf>,
    directory: bool,
    /// The owner the source recorded.
    recorded: (u32, u32),
}

/// What `entry` places: itself, or the links its list names (see [`LINKS`]).
fn read(entry: &mut tar::Entry<impl Read>, layer: &Path) -> Result<Vec<Checked>, Error> {
    let unreadable = |source| Error::Layer {
        path: layer.to_owned(),
        source,
    };
    let path = entry.path().map_err(unreadable)?.into_owned();
    if path != Path::new(PREFIX).join(LINKS) {
        return Ok(vec![check(entry, layer)?]);
    }
    if entry.header().entry_type() != EntryType::Regular {
        return Err(Error::Refused {
            path,
            kind: "list of links that is no regular file",
        });
    }
    let mut list = Vec::new();
    entry.read_to_end(&mut list).map_err(unreadable)?;
    let malformed = || Error::Refused {
        path: path.clone(),
        kind: "malformed list of links",
    };
    let fields: Vec<&[u8]> = list.split(|b| *b == 0).collect();
    // `path\0target\0uid\0gid\0` per link: the last split is the empty rest.
    let (rest, links) = fields.split_last().ok_or_else(malformed)?;
    if !rest.is_empty() || links.len() % 4 != 0 {
        return Err(malformed());
    }
    links
        .chunks(4)
        .map(|link| {
            let id = |raw: &[u8]| {
                std::str::from_utf8(raw)
                    .ok()
                    .and_then(|t| t.parse::<u32>().ok())
                    .ok_or_else(malformed)
            };
            let name = PathBuf::from(OsStr::from_bytes(link[0]));
            let target = PathBuf::from(OsStr::from_bytes(link[1]));
            let (volume, names) = beneath(&name)?;
            linked(name, volume, names, target, (id(link[2])?, id(link[3])?))
        })
        .collect()
}

/// A link at `path` (`volume`/`names`) to `target`, if it stays in its volume.
fn linked(
    path: PathBuf,
    volume: String,
    names: Vec<OsString>,
    target: PathBuf,
    recorded: (u32, u32),
) -> Result<Checked, Error> {
    if !stays_inside(names.len().saturating_sub(1), &target) {
        return Err(Error::Escape { path, target });
    }
    Ok(Checked {
        path,
        volume,
        names,
        link: Some(target),
        directory: false,
        recorded,
    })
}

/// The volume and the names beneath it of `path`, which must be
/// `checkpointing-volumes/<volume>/…` by plain names only.
fn beneath(path: &Path) -> Result<(String, Vec<OsString>), Error> {
    let stray = || Error::Stray {
        path: path.to_owned(),
    };
    let mut parts = path.strip_prefix(PREFIX).map_err(|_| stray())?.components();
    let volume = match parts.next() {
        Some(Component::Normal(name)) => name.to_str(),
        _ => None,
    };
    let volume = volume.ok_or_else(stray)?.to_owned();
    let mut names = Vec::new();
    for part in parts {
        match part {
            Component::Normal(name) => names.push(name.to_owned()),
            _ => return Err(stray()),
        }
    }
    Ok((volume, names))
}

/// Whether `entry` (of the layer at `layer`) is under `checkpointing-volumes/<volume>/`, beneath it by plain names only,
/// and a directory, a regular file or a symbolic link that stays in the volume.
fn check(entry: &tar::Entry<impl Read>, layer: &Path) -> Result<Checked, Error> {
    let unreadable = |source| Error::Layer {
        path: layer.to_owned(),
        source,
    };
    let path = entry.path().map_err(unreadable)?.into_owned();
    let (volume, names) = beneath(&path)?;
    let refused = |kind| Error::Refused {
        path: path.clone(),
        kind,
    };
    let header = entry.header();
    let id = |raw: io::Result<u64>| raw.map(|r| u32::try_from(r).unwrap_or(NOBODY));
    let recorded = (
        id(header.uid()).map_err(unreadable)?,
        id(header.gid()).map_err(unreadable)?,
    );
    let kind = header.entry_type();
    match kind {
        EntryType::Regular | EntryType::Continuous | EntryType::Directory => Ok(Checked {
            path,
            volume,
            names,
            link: None,
            directory: kind == EntryType::Directory,
            recorded,
        }),
        // Layers written before links travelled as a list (see [`LINKS`]).
        EntryType::Symlink => {
            let target = entry.link_name().map_err(unreadable)?;
            let target = target.ok_or_else(|| refused("link without a target"))?;
            linked(path.clone(), volume, names, target.into_owned(), recorded)
        }
        EntryType::Link => Err(refused("hard link")),
        EntryType::Char | EntryType::Block => Err(refused("device")),
        EntryType::Fifo => Err(refused("fifo")),
        _ => Err(refused("special entry")),
    }
}

/// A volume being placed: its directory, open, and who its files belong to.
struct Target {
    root: OwnedFd,
    /// The owner of what the layer does not record (directories it implies) or, unless
    /// `recorded`, of everything.
    owner: (u32, u32),
    /// Entries keep the owners the layer records.
    recorded: bool,
}

impl Target {
    /// The target of `volume`, if pod `uid` has it and it is `wanted`.
    fn open(
        pods: &Path,
        uid: &str,
        volume: &str,
        owners: Owners,
        wanted: impl Fn(&str) -> bool,
        path: &Path,
    ) -> Result<Option<Self>, Error> {
        let Some(dir) = host_dir(pods, uid, volume) else {
            return Ok(None);
        };
        let fail = |source| Error::Place {
            path: path.to_owned(),
            source,
        };
        let root = match open_volume(&dir) {
            Ok(root) => root,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        if !wanted(volume) {
            return Ok(None);
        }
        let owner = match owners {
            Owners::Pod { uid, gid } => (uid, gid),
            Owners::Volume | Owners::Recorded => {
                let stat = rustix::fs::fstat(&root).map_err(|e| fail(e.into()))?;
                (stat.st_uid, stat.st_gid)
            }
        };
        let recorded = owners == Owners::Recorded;
        Ok(Some(Self {
            root,
            owner,
            recorded,
        }))
    }

    /// Places `entry`, as checked.
    fn put(&self, checked: &Checked, entry: &mut tar::Entry<impl Read>) -> Result<(), Error> {
        // The volume's own directory is the kubelet's: its mode and owner stay.
        let Some((leaf, parents)) = checked.names.split_last() else {
            return Ok(());
        };
        let fail = |source| Error::Place {
            path: checked.path.clone(),
            source,
        };
        let header = entry.header();
        // Permission bits and the sticky bit: never setuid or setgid, whoever owns the file.
        let mode = Mode::from_raw_mode(header.mode().map_err(fail)? & 0o1777);
        let mtime = header.mtime().map_err(fail)?;
        let owner = if self.recorded {
            checked.recorded
        } else {
            self.owner
        };
        let mut parent = None;
        for name in parents {
            let at = parent.as_ref().map_or(self.root.as_fd(), AsFd::as_fd);
            parent = Some(self.directory(at, name).map_err(fail)?);
        }
        let at = parent.as_ref().map_or(self.root.as_fd(), AsFd::as_fd);
        let placed = match &checked.link {
            Some(target) => self.symlink(at, leaf, target, owner),
            None if checked.directory => {
                (self.directory(at, leaf)).and_then(|dir| own(&dir, owner, mode))
            }
            None => self.file(at, leaf, entry, (mode, owner), mtime),
        };
        placed.map_err(fail)
    }

    /// Directory `name` of `at`, made (the owner's, 0755) if absent; a link there fails.
    fn directory(&self, at: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        match open_beneath(at, name, flags, Mode::empty()) {
            Err(Errno::NOENT) => {}
            opened => return Ok(opened?),
        }
        match rustix::fs::mkdirat(at, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {
                let dir = open_beneath(at, name, flags, Mode::empty())?;
                own(&dir, self.owner, Mode::from_raw_mode(0o755))?;
                Ok(dir)
            }
            // Made meanwhile (by the pod): used as it is.
            Err(Errno::EXIST) => Ok(open_beneath(at, name, flags, Mode::empty())?),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes regular file `name` of `at` afresh: whatever was at that name (a file, a link)
    /// is replaced, never written through.
    fn file(
        &self,
        at: BorrowedFd<'_>,
        name: &OsStr,
        data: &mut impl Read,
        (mode, owner): (Mode, (u32, u32)),
        mtime: u64,
    ) -> io::Result<()> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
        let private = Mode::from_raw_mode(0o600);
        let fd = match open_beneath(at, name, flags, private) {
            Err(Errno::EXIST) => {
                rustix::fs::unlinkat(at, name, AtFlags::empty())?;
                open_beneath(at, name, flags, private)?
            }
            opened => opened?,
        };
        let mut file = File::from(fd);
        io::copy(data, &mut file)?;
        own(&file, owner, mode)?;
        let time = Timespec {
            tv_sec: i64::try_from(mtime).unwrap_or(0),
            tv_nsec: 0,
        };
        let times = Timestamps {
            last_access: time,
            last_modification: time,
        };
        Ok(rustix::fs::futimens(&file, &times)?)
    }

    /// Makes symbolic link `name` of `at` point to `target`, replacing what was there.
    fn symlink(
        &self,
        at: BorrowedFd<'_>,
        name: &OsStr,
        target: &Path,
        owner: (u32, u32),
    ) -> io::Result<()> {
        match rustix::fs::symlinkat(target, at, name) {
            Err(Errno::EXIST) => {
                rustix::fs::unlinkat(at, name, AtFlags::empty())?;
                rustix::fs::symlinkat(target, at, name)?;
            }
            made => made?,
        }
        let (uid, gid) = ids(owner);
        let flags = AtFlags::SYMLINK_NOFOLLOW;
        Ok(rustix::fs::chownat(at, name, Some(uid), Some(gid), flags)?)
    }
}

/// Gives what `fd` holds to `owner`, with `mode`; after the owner, which would clear it.
fn own(fd: impl AsFd, owner: (u32, u32), mode: Mode) -> io::Result<()> {
    let (uid, gid) = ids(owner);
    rustix::fs::fchown(&fd, Some(uid), Some(gid))?;
    Ok(rustix::fs::fchmod(&fd, mode)?)
}

fn ids((uid, gid): (u32, u32)) -> (Uid, Gid) {
    // -1 would mean "unchanged" (root's, in a fresh file): nobody's instead.
    let id = |raw: u32| if raw == u32::MAX { NOBODY } else { raw };
    (Uid::from_raw(id(uid)), Gid::from_raw(id(gid)))
}
