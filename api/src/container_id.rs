//! Container IDs as Kubernetes reports them in a pod's status
//! (`containerStatuses[].containerID`): `<runtime>://<id>`.

use std::fmt;
use std::str::FromStr;

/// The container runtime named by the scheme of a container ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// `containerd://<id>`
    Containerd,
    /// `cri-o://<id>`
    CriO,
    /// `docker://<id>`
    Docker,
}

impl Runtime {
    /// The scheme Kubernetes writes in `containerStatuses[].containerID`.
    pub fn scheme(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
        }
    }

    fn from_scheme(s: &str) -> Option<Runtime> {
        [Runtime::Containerd, Runtime::CriO, Runtime::Docker].into_iter().find(|r| r.scheme() == s)
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// Shortest container ID accepted (Docker's short form).
pub const MIN_ID_LEN: usize = 12;
/// Longest container ID accepted (a full SHA-256 in hex).
pub const MAX_ID_LEN: usize = 64;

/// Why a container ID is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerIdError {
    /// No `://` in the input.
    #[error("container ID {input:?} has no runtime prefix; expected containerd://<id>, cri-o://<id> or docker://<id>")]
    MissingScheme {
        /// The whole input.
        input: String,
    },
    /// A scheme other than containerd, cri-o or docker.
    #[error("container ID {input:?}: unsupported runtime {scheme:?}; expected containerd, cri-o or docker")]
    UnknownRuntime {
        /// The whole input.
        input: String,
        /// What came before `://`.
        scheme: String,
    },
    /// Nothing after `://`.
    #[error("container ID {input:?}: the ID after {scheme}:// is empty")]
    EmptyId {
        /// The whole input.
        input: String,
        /// The runtime scheme.
        scheme: &'static str,
    },
    /// Fewer than 12 or more than 64 characters after `://`.
    #[error(
        "container ID {input:?}: the ID after {scheme}:// has {len} characters; expected {MIN_ID_LEN} to {MAX_ID_LEN} lowercase hex digits"
    )]
    BadIdLength {
        /// The whole input.
        input: String,
        /// The runtime scheme.
        scheme: &'static str,
        /// Characters in the ID.
        len: usize,
    },
    /// A character that is not `0-9a-f`.
    #[error(
        "container ID {input:?}: character {ch:?} at position {pos} of the ID is not a lowercase hex digit (0-9, a-f)"
    )]
    BadIdChar {
        /// The whole input.
        input: String,
        /// The offending character.
        ch: char,
        /// Its position in the ID (0-based, in characters).
        pos: usize,
    },
}

/// A container as Kubernetes names it: runtime and ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerId {
    /// The runtime, from the scheme.
    pub runtime: Runtime,
    /// 12 to 64 lowercase hex digits.
    pub id: String,
}

impl ContainerId {
    /// Parses `containerd://<id>`, `cri-o://<id>` or `docker://<id>`.
    pub fn parse(s: &str) -> Result<ContainerId, ContainerIdError> {
        let Some((scheme, id)) = s.split_once("://") else {
            return Err(ContainerIdError::MissingScheme { input: s.to_string() });
        };
        let Some(runtime) = Runtime::from_scheme(scheme) else {
            return Err(ContainerIdError::UnknownRuntime { input: s.to_string(), scheme: scheme.to_string() });
        };
        let scheme = runtime.scheme();
        if id.is_empty() {
            return Err(ContainerIdError::EmptyId { input: s.to_string(), scheme });
        }
        if let Some((pos, ch)) = id.chars().enumerate().find(|&(_, c)| !matches!(c, '0'..='9' | 'a'..='f')) {
            return Err(ContainerIdError::BadIdChar { input: s.to_string(), ch, pos });
        }
        // All ASCII from here on, so bytes == characters.
        if !(MIN_ID_LEN..=MAX_ID_LEN).contains(&id.len()) {
            return Err(ContainerIdError::BadIdLength { input: s.to_string(), scheme, len: id.len() });
        }
        Ok(ContainerId { runtime, id: id.to_string() })
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.runtime.scheme(), self.id)
    }
}

impl FromStr for ContainerId {
    type Err = ContainerIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ContainerId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3b1f0c2d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcdef";

    #[test]
    fn parse_accepts_every_runtime() {
        for (s, rt) in [
            (format!("containerd://{ID}"), Runtime::Containerd),
            (format!("cri-o://{ID}"), Runtime::CriO),
            (format!("docker://{ID}"), Runtime::Docker),
            ("docker://0123456789ab".to_string(), Runtime::Docker),
        ] {
            let c = ContainerId::parse(&s).unwrap();
            assert_eq!(c.runtime, rt);
            assert_eq!(c.to_string(), s);
            assert_eq!(s.parse::<ContainerId>().unwrap(), c);
        }
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let cases: Vec<(String, &str)> = vec![
            (ID.to_string(), "no runtime prefix"),
            (String::new(), "no runtime prefix"),
            (format!("rkt://{ID}"), "unsupported runtime \"rkt\""),
            (format!("Containerd://{ID}"), "unsupported runtime"),
            (format!("://{ID}"), "unsupported runtime \"\""),
            ("containerd://".to_string(), "is empty"),
            ("containerd://0123456789a".to_string(), "has 11 characters"),
            (format!("containerd://{ID}0"), "has 65 characters"),
            (format!("containerd://{}", ID.to_uppercase()), "character 'B' at position 1"),
            (format!("cri-o://{}", &ID[..20].replace('f', "F")), "character 'F' at position 3"),
            ("docker://0123456789abcdeg".to_string(), "character 'g' at position 15"),
            (format!("containerd://{ID}/"), "character '/' at position 64"),
            (format!("containerd:// {ID}"), "character ' ' at position 0"),
            (format!("containerd://{ID}\n"), "character '\\n'"),
        ];
        for (input, want) in cases {
            let err = ContainerId::parse(&input).expect_err(&input).to_string();
            assert!(err.contains(want), "{input:?}: {err:?} does not say {want:?}");
        }
        let err = ContainerId::parse(&format!("containerd://{}", ID.to_uppercase())).unwrap_err();
        assert!(matches!(err, ContainerIdError::BadIdChar { ch: 'B', pos: 1, .. }), "{err:?}");
    }
}
