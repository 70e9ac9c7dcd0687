//! CRIU's side of a failed checkpoint in words a user can act on: one line naming the cause
//! (CRIU's first `Error (file:line): …`, translated where the cause is known) and a bounded tail
//! of CRIU's log to keep with the request. Text in, text out; reading a log where the runtime
//! left it is noded's.
//!
//! Where each runtime leaves the log (from their sources):
//! - containerd's runc shim copies CRIU's `dump.log` to `criu-dump.log` in the task's bundle,
//!   under containerd's state directory, and answers `criu failed: type DUMP errno 0 path=
//!   /run/containerd/io.containerd.runtime.v2.task/k8s.io/<id>/criu-dump.log` (the rest of
//!   runc's output goes to its JSON log file).
//! - CRI-O answers with runc's whole stderr, in which runc quotes the lines of `dump.log` around
//!   each `Error` as logrus text: `level=warning msg="1530:(00.051234) Error (criu/…): …"`.
//!   The file itself stays in CRI-O's storage, which noded does not mount.

pub mod conf;
pub mod version;

use std::time::Duration;

/// Most of CRIU's log kept with a failed request: its end holds the errors.
pub const LOG_TAIL_BYTES: usize = crate::crd::CRIU_LOG_MAX;

/// Longest cause put in a status message, in characters.
const CAUSE_MAX: usize = 400;

/// Where the README explains the node's CRIU settings.
pub const NODE_SETUP: &str = "README, \"Node setup: CRIU\"";

/// One `Error (file:line): text` line of a CRIU log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorLine<'a> {
    /// `criu/sk-inet.c:199`.
    pub source: &'a str,
    /// What CRIU said, without its trailing period.
    pub text: &'a str,
}

impl<'a> ErrorLine<'a> {
    /// The error on `line`, if it is one. CRIU prefixes every error it logs with `Error
    /// (<file>:<line>): `, after a timestamp (and in runc's quote, the line's number).
    pub fn parse(line: &'a str) -> Option<Self> {
        let (_, rest) = line.split_once("Error (")?;
        let (source, text) = rest.split_once("): ")?;
        let (file, number) = source.rsplit_once(':')?;
        let plausible = !file.is_empty()
            && !file.contains(char::is_whitespace)
            && !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit());
        plausible.then(|| Self {
            source,
            text: text.trim_end().trim_end_matches('.'),
        })
    }
}

/// The first error CRIU logged: the cause; the ones after it are its consequences. Errors
/// CRIU logs and then carries on from are not causes.
pub fn first_error(log: &str) -> Option<ErrorLine<'_>> {
    log.lines()
        .filter_map(ErrorLine::parse)
        .find(|e| !carried_on(e))
}

/// An error CRIU logs and goes on from: without CAP_SYS_RESOURCE it cannot raise its own
/// open-file limit, and works within the one it has.
fn carried_on(error: &ErrorLine) -> bool {
    error
        .text
        .starts_with("rlimit: Can't setup RLIMIT_NOFILE for self")
}

/// The cause of `error` in plain words, where it is known.
pub fn translate(error: &ErrorLine) -> Option<String> {
    let text = error.text;
    let said = || format!("CRIU: {text}");
    if text.contains("Connected TCP socket") {
        return Some(format!(
            "a process in the container has an established TCP connection, and this node's \
             /etc/criu/runc.conf lacks the line `tcp-close` that lets CRIU dump it (closed on \
             restore); see {NODE_SETUP}"
        ));
    }
    if text.contains("Need to set the --tcp-close") {
        return Some(format!(
            "the checkpoint was taken with tcp-close and this node's /etc/criu/runc.conf lacks \
             the line `tcp-close`, which restoring it needs too; see {NODE_SETUP}"
        ));
    }
    if text.contains("Can't get rlimit") && text.contains("Operation not permitted") {
        return Some(format!(
            "a process in the container runs as a non-root user, and CRIU on this node lacks \
             CAP_SYS_RESOURCE, which it needs to read that process's resource limits ({})",
            said()
        ));
    }
    if let Some(file) = unsupported_file(text) {
        return Some(format!(
            "a process in the container holds an open file CRIU cannot checkpoint ({file}); \
             only a container without it can be checkpointed"
        ));
    }
    if text.contains("External socket is used") || text.contains("half of stream unix") {
        return Some(format!(
            "a process in the container has a Unix socket connected to a process outside the \
             container, which CRIU cannot checkpoint ({})",
            said()
        ));
    }
    if text.contains("Can't dump ghost file") {
        return Some(format!(
            "a process in the container holds a deleted file open that is larger than CRIU's \
             limit for such files (ghost-limit) ({})",
            said()
        ));
    }
    if text.starts_with("FS mnt") && text.contains("unsupported") {
        return Some(format!(
            "the container has a mount of a filesystem CRIU cannot checkpoint ({})",
            said()
        ));
    }
    if text.contains("Unable to freeze cgroup") {
        return Some(format!(
            "CRIU could not freeze the container's processes in time (a busy node); try again \
             ({})",
            said()
        ));
    }
    None
}

/// `fd 5, chr 10:200` from CRIU's `Can't dump file 5 of that type [20666] (chr 10:200)`.
fn unsupported_file(text: &str) -> Option<String> {
    let rest = text.strip_prefix("Can't dump file ")?;
    let (fd, rest) = rest.split_once(" of that type")?;
    let what = rest
        .split_once('(')
        .and_then(|(_, w)| w.rsplit_once(')'))
        .map_or("", |(w, _)| w.trim());
    Some(if what.is_empty() {
        format!("fd {fd}")
    } else {
        format!("fd {fd}, {what}")
    })
}

/// What noded could find of CRIU's log on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeLog<'a> {
    /// The runtime named no log file noded can reach.
    Absent,
    /// The log file's text (its tail).
    Read(&'a str),
    /// The runtime named `path`, which could not be read.
    Unreadable { path: &'a str, why: &'a str },
}

/// A failed CRI CheckpointContainer call, as noded saw it.
#[derive(Clone, Copy, Debug)]
pub struct Dump<'a> {
    /// The runtime's error message.
    pub message: &'a str,
    /// The call's deadline, when it ran out.
    pub deadline: Option<Duration>,
    pub log: NodeLog<'a>,
}

/// What a status says about a failed dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    /// One line.
    pub cause: String,
    /// CRIU's log (at most [`LOG_TAIL_BYTES`], whole lines), or the runtime's message when it
    /// was longer than the cause could carry.
    pub log: Option<String>,
}

/// The cause of a failed dump and the log to keep with it.
pub fn diagnose(dump: &Dump) -> Diagnosis {
    let log = match dump.log {
        NodeLog::Read(text) => Some(text.to_owned()),
        NodeLog::Absent | NodeLog::Unreadable { .. } => runc_quote(dump.message)
            // crun and others may inline CRIU's lines as they are.
            .or_else(|| first_error(dump.message).map(|_| dump.message.to_owned())),
    };
    let error = log.as_deref().and_then(first_error);
    let cause = if let Some(deadline) = dump.deadline {
        timed_out(Some(deadline))
    } else if dump.message.contains("context deadline exceeded") {
        timed_out(None)
    } else if let Some(error) = &error {
        translate(error).unwrap_or_else(|| format!("CRIU: {} ({})", error.text, error.source))
    } else if dump.message.contains("unable to freeze") {
        "the runtime could not freeze the container's processes in time (a busy node); try again"
            .to_owned()
    } else {
        let first = dump.message.lines().find(|l| !l.trim().is_empty());
        let mut said = format!("the runtime said: {}", first.unwrap_or("nothing").trim());
        if let NodeLog::Unreadable { path, why } = dump.log {
            said.push_str(&format!(
                " (CRIU's log {path} could not be read on the node: {why})"
            ));
        }
        said
    };
    let cause = one_line(&cause);
    // Nothing of CRIU's to keep, but more said than one line carries: keep the message.
    let long = dump.message.trim().contains('\n') || dump.message.chars().count() > CAUSE_MAX;
    let log = log.or_else(|| long.then(|| dump.message.to_owned()));
    Diagnosis {
        cause,
        log: log.map(|l| tail(&l, LOG_TAIL_BYTES).to_owned()),
    }
}

fn timed_out(deadline: Option<Duration>) -> String {
    let within = deadline.map_or(String::new(), |d| format!(" within {}s", d.as_secs()));
    format!(
        "the runtime did not finish the checkpoint{within}: raise spec.timeoutSeconds (at most \
         3600) for a container whose memory takes longer to dump"
    )
}

/// `text` on one line of at most [`CAUSE_MAX`] characters.
fn one_line(text: &str) -> String {
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some((cut, _)) = line.char_indices().nth(CAUSE_MAX) {
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// The path of CRIU's log a runtime's message names (containerd: `… path= <file>`).
pub fn log_path(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once("path= ")?;
    let path = rest.split_whitespace().next()?;
    let path = path.trim_end_matches([':', ',', ';', '"', '\'', ')']);
    path.starts_with('/').then_some(path)
}

/// The last `max` bytes of `log`, from the start of a line (a line longer than that is cut).
pub fn tail(log: &str, max: usize) -> &str {
    if log.len() <= max {
        return log;
    }
    let mut start = log.len() - max;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    let mid_line = log.as_bytes()[start - 1] != b'\n';
    match log[start..].find('\n') {
        Some(newline) if mid_line && start + newline + 1 < log.len() => &log[start + newline + 1..],
        _ => &log[start..],
    }
}

/// The lines of `dump.log` runc quoted in its stderr (`--- Quoting "…/dump.log"`, then each
/// line as `<number>:<text>`, `...` between groups, `---` at the end), which CRI-O passes on.
pub fn runc_quote(message: &str) -> Option<String> {
    let mut quoted = Vec::new();
    let mut inside = false;
    for msg in message.lines().filter_map(logrus_msg) {
        if msg.starts_with("--- Quoting ") {
            inside = true;
        } else if msg == "---" {
            inside = false;
        } else if inside {
            quoted.push(msg);
        }
    }
    (!quoted.is_empty()).then(|| quoted.join("\n") + "\n")
}

/// The `msg` of one logrus text line (`time="…" level=warning msg="…"`), unquoted.
fn logrus_msg(line: &str) -> Option<String> {
    let (_, value) = line
        .split_once(" msg=")
        .or_else(|| line.strip_prefix("msg=").map(|v| ("", v)))?;
    match value.strip_prefix('"') {
        Some(quoted) => Some(unquote(quoted)),
        None => Some(value.split_whitespace().next().unwrap_or("").to_owned()),
    }
}

/// The text of a Go `%q` string whose opening quote is gone, up to its closing one.
fn unquote(quoted: &str) -> String {
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(e @ ('x' | 'u' | 'U')) => {
                    let digits = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex: String = chars.by_ref().take(digits).collect();
                    let decoded = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                    out.push(decoded.unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
