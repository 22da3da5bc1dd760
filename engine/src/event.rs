//! Parsing of fanotify event buffers and encoding of responses, in safe code
//! over byte slices (no allocation: events borrow the read buffer).

/// Size of `struct fanotify_event_metadata`.
pub const METADATA_LEN: usize = 24;
/// Size of `struct fanotify_response`.
pub const RESPONSE_LEN: usize = 8;
/// `FANOTIFY_METADATA_VERSION`.
pub const METADATA_VERSION: u8 = 3;

/// One event's fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Event bits (`FAN_*`).
    pub mask: u64,
    /// Open fd for the object, or `FAN_NOFD` (-1).
    pub fd: i32,
    /// Pid (thread group id) of the process that caused the event.
    pub pid: i32,
    /// Bytes of optional info records following the header.
    pub info_len: usize,
    info_start: usize,
}

/// Iterates the events in `buf[..len]`. Stops at the first malformed or
/// truncated record (the kernel never produces one; a bad version does).
pub fn events(buf: &[u8]) -> impl Iterator<Item = (Event, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let rest = buf.get(off..)?;
        if rest.len() < METADATA_LEN {
            return None;
        }
        let event_len = u32::from_ne_bytes(rest[0..4].try_into().ok()?) as usize;
        let vers = rest[4];
        let meta_len = u16::from_ne_bytes(rest[6..8].try_into().ok()?) as usize;
        if vers != METADATA_VERSION || event_len < METADATA_LEN || event_len > rest.len() || meta_len < METADATA_LEN {
            return None;
        }
        let ev = Event {
            mask: u64::from_ne_bytes(rest[8..16].try_into().ok()?),
            fd: i32::from_ne_bytes(rest[16..20].try_into().ok()?),
            pid: i32::from_ne_bytes(rest[20..24].try_into().ok()?),
            info_len: event_len - meta_len,
            info_start: meta_len,
        };
        let info = &rest[ev.info_start..event_len];
        off += event_len;
        Some((ev, info))
    })
}

/// Appends a `struct fanotify_response` for `fd` to `out`.
pub fn push_response(out: &mut Vec<u8>, fd: i32, allow: bool) {
    let response = if allow { libc::FAN_ALLOW } else { libc::FAN_DENY };
    out.extend_from_slice(&fd.to_ne_bytes());
    out.extend_from_slice(&response.to_ne_bytes());
}

/// A directory-entry record of a `FAN_REPORT_DFID_NAME` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEntryInfo<'a> {
    /// `handle_type` (native-endian bytes) followed by the handle: the same
    /// encoding as `sys::fanotify::handle_of_fd`, so it can be a map key.
    pub handle_type: i32,
    /// Opaque handle bytes of the parent directory.
    pub handle: &'a [u8],
    /// Entry name inside that directory.
    pub name: &'a [u8],
}

/// Finds the `FAN_EVENT_INFO_TYPE_DFID_NAME` record in an event's info bytes.
pub fn dir_entry_info(mut info: &[u8]) -> Option<DirEntryInfo<'_>> {
    while info.len() >= 4 {
        let kind = info[0];
        let len = u16::from_ne_bytes([info[2], info[3]]) as usize;
        if len < 4 || len > info.len() {
            return None;
        }
        let record = &info[..len];
        if kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME {
            // header(4) fsid(8) handle_bytes(4) handle_type(4) handle[..] name\0
            let body = record.get(12..)?;
            let bytes = u32::from_ne_bytes(body.get(0..4)?.try_into().ok()?) as usize;
            let handle_type = i32::from_ne_bytes(body.get(4..8)?.try_into().ok()?);
            let handle = body.get(8..8 + bytes)?;
            let tail = body.get(8 + bytes..)?;
            let name_end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            return Some(DirEntryInfo { handle_type, handle, name: &tail[..name_end] });
        }
        info = &info[len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mask: u64, fd: i32, pid: i32, extra: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((METADATA_LEN + extra.len()) as u32).to_ne_bytes());
        v.push(METADATA_VERSION);
        v.push(0);
        v.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        v.extend_from_slice(&mask.to_ne_bytes());
        v.extend_from_slice(&fd.to_ne_bytes());
        v.extend_from_slice(&pid.to_ne_bytes());
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn parses_consecutive_events_and_stops_at_garbage() {
        let mut buf = meta(libc::FAN_OPEN_PERM, 7, 100, &[]);
        buf.extend(meta(libc::FAN_ACCESS_PERM, 8, 101, &[]));
        buf.extend_from_slice(&[1, 2, 3]); // truncated tail
        let evs: Vec<_> = events(&buf).map(|(e, _)| (e.mask, e.fd, e.pid)).collect();
        assert_eq!(evs, vec![(libc::FAN_OPEN_PERM, 7, 100), (libc::FAN_ACCESS_PERM, 8, 101)]);
        let mut bad = meta(libc::FAN_OPEN_PERM, 7, 100, &[]);
        bad[4] = 2; // wrong version
        assert_eq!(events(&bad).count(), 0);
    }

    #[test]
    fn parses_dfid_name_record() {
        let mut rec = vec![libc::FAN_EVENT_INFO_TYPE_DFID_NAME, 0, 0, 0];
        rec.extend_from_slice(&[0u8; 8]); // fsid
        rec.extend_from_slice(&4u32.to_ne_bytes());
        rec.extend_from_slice(&1i32.to_ne_bytes());
        rec.extend_from_slice(&[9, 9, 9, 9]);
        rec.extend_from_slice(b"new.key\0\0\0");
        let len = rec.len() as u16;
        rec[2..4].copy_from_slice(&len.to_ne_bytes());
        let buf = meta(libc::FAN_CREATE, -1, 5, &rec);
        let (ev, info) = events(&buf).next().unwrap();
        assert_eq!(ev.info_len, rec.len());
        let d = dir_entry_info(info).unwrap();
        assert_eq!((d.handle_type, d.handle, d.name), (1, &[9u8, 9, 9, 9][..], &b"new.key"[..]));
    }

    #[test]
    fn response_encoding() {
        let mut out = Vec::new();
        push_response(&mut out, 5, false);
        assert_eq!(out.len(), RESPONSE_LEN);
        assert_eq!(i32::from_ne_bytes(out[0..4].try_into().unwrap()), 5);
        assert_eq!(u32::from_ne_bytes(out[4..8].try_into().unwrap()), libc::FAN_DENY);
    }
}
