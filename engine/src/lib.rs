//! # janus-engine
//!
//! Enforces file-access guards with fanotify permission events. One
//! enforcement thread owns an io_uring ring; it reads events from every
//! guard's fanotify group, decides each from an immutable compiled
//! [`Policy`](policy::Policy), and writes all responses of a batch in one
//! submission. See `docs/engine.md` for the design and its trade-offs.
#![deny(unsafe_code)]

pub mod audit;
mod cache;
mod decide;
mod enforce;
mod engine;
pub mod event;
mod fault;
pub mod heartbeat;
mod instance;
mod marks;
pub mod metrics;
pub mod policy;
pub mod reference;
mod root;
#[allow(unsafe_code)]
mod sys;
mod watch;

pub use enforce::Backend;
pub use engine::{Engine, EngineConfig};
pub use instance::{EngineError, GuardReport, GuardTarget, TargetInfo};

/// An access kind a rule can apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// open(2) (`FAN_OPEN_PERM`).
    Open = 0,
    /// read(2) of file data (`FAN_ACCESS_PERM`).
    Access = 1,
    /// execve(2) of a file (`FAN_OPEN_EXEC_PERM`).
    Exec = 2,
}

impl Kind {
    /// Every kind, in index order.
    pub const ALL: [Kind; 3] = [Kind::Open, Kind::Access, Kind::Exec];

    /// Lowercase name used in records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Open => "open",
            Kind::Access => "access",
            Kind::Exec => "exec",
        }
    }

    /// The fanotify permission event bit for this kind.
    pub fn fan_mask(self) -> u64 {
        match self {
            Kind::Open => libc::FAN_OPEN_PERM,
            Kind::Access => libc::FAN_ACCESS_PERM,
            Kind::Exec => libc::FAN_OPEN_EXEC_PERM,
        }
    }

    /// The kind of a permission event mask, if it holds one.
    pub fn from_fan_mask(mask: u64) -> Option<Kind> {
        if mask & libc::FAN_OPEN_EXEC_PERM != 0 {
            Some(Kind::Exec)
        } else if mask & libc::FAN_OPEN_PERM != 0 {
            Some(Kind::Open)
        } else if mask & libc::FAN_ACCESS_PERM != 0 {
            Some(Kind::Access)
        } else {
            None
        }
    }
}

/// A small set of [`Kind`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct KindSet(u8);

impl KindSet {
    /// No kinds.
    pub const EMPTY: KindSet = KindSet(0);
    /// `open`.
    pub const OPEN: KindSet = KindSet(1);
    /// `access`.
    pub const ACCESS: KindSet = KindSet(2);
    /// `exec`.
    pub const EXEC: KindSet = KindSet(4);
    /// Every kind (`all`).
    pub const ALL: KindSet = KindSet(7);

    /// Set union.
    pub const fn union(self, other: KindSet) -> KindSet {
        KindSet(self.0 | other.0)
    }

    /// Membership.
    pub fn contains(self, kind: Kind) -> bool {
        self.0 & (1 << kind as u8) != 0
    }

    /// Adds `kind`.
    pub fn insert(&mut self, kind: Kind) {
        self.0 |= 1 << kind as u8;
    }

    /// Whether no kind is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members.
    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.contains(*k))
    }

    /// The fanotify permission mask of these kinds.
    pub fn fan_mask(self) -> u64 {
        self.iter().fold(0, |m, k| m | k.fan_mask())
    }
}
