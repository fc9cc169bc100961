//! The parent/child sync protocol: fixed-size typed messages over a
//! close-on-exec socketpair. Errors cross as kinds and errno, never strings.
#![forbid(unsafe_code)]

use std::io::{ErrorKind as IoKind, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use nix::errno::Errno;

use crate::error::{Error, ErrorKind, InitStep, Result};

/// One message on the sync socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Msg {
    /// Parent → child: the id maps are written and the cgroup joined.
    MapsDone,
    /// Child → parent: setup done, about to exec; waiting for `Start`.
    Ready,
    /// Parent → child: state recorded, exec now.
    Start,
    /// Child → parent, with the master of the container's terminal
    /// attached: the pseudo-terminal init (or an attached command) runs on.
    Console,
    /// Parent → child, after `MapsDone`, once per host bind marked
    /// `idmap` (in config order): with the idmapped detached tree attached
    /// when the parent could make one, without a descriptor when not (the
    /// child then binds the directory plainly).
    HostMount,
    /// Either way: a step failed.
    Failed {
        step: InitStep,
        kind: ErrorKind,
        errno: i32,
    },
}

const LEN: usize = 8;

impl Msg {
    fn encode(self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        match self {
            Msg::MapsDone => b[0] = 1,
            Msg::Ready => b[0] = 2,
            Msg::Start => b[0] = 3,
            Msg::Console => b[0] = 5,
            Msg::HostMount => b[0] = 6,
            Msg::Failed { step, kind, errno } => {
                b[0] = 4;
                b[1] = step.to_u8();
                b[2] = kind.to_u8();
                b[4..8].copy_from_slice(&errno.to_le_bytes());
            }
        }
        b
    }

    fn decode(b: [u8; LEN]) -> Option<Msg> {
        Some(match b[0] {
            1 => Msg::MapsDone,
            2 => Msg::Ready,
            3 => Msg::Start,
            5 => Msg::Console,
            6 => Msg::HostMount,
            4 => Msg::Failed {
                step: InitStep::from_u8(b[1]),
                kind: ErrorKind::from_u8(b[2]),
                errno: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            },
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Msg::MapsDone => "maps-done",
            Msg::Ready => "ready",
            Msg::Start => "start",
            Msg::Console => "console",
            Msg::HostMount => "host-mount",
            Msg::Failed { .. } => "failed",
        }
    }
}

/// One end of the sync socket.
#[derive(Debug)]
pub(crate) struct Channel {
    sock: UnixStream,
}

impl Channel {
    /// A connected pair (both ends close-on-exec).
    pub(crate) fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = UnixStream::pair().map_err(|e| {
            Error::sys(
                "socketpair(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC, 0, …)",
                Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            )
        })?;
        Ok((Channel { sock: a }, Channel { sock: b }))
    }

    /// The socket's descriptor (to hand on across an exec).
    pub(crate) fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.sock)
    }

    /// A channel over a socket inherited from another process.
    pub(crate) fn from_stream(sock: UnixStream) -> Channel {
        Channel { sock }
    }

    /// Ends the conversation for both holders of this end (a forked copy
    /// included): the peer reads end of file, as after an exec.
    pub(crate) fn shutdown(&self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }

    pub(crate) fn send(&mut self, m: Msg) -> Result<()> {
        let r = self.sock.write_all(&m.encode()).map_err(|e| {
            Error::sys(
                format!("write(sync, {})", m.name()),
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EPIPE)),
            )
        });
        self.or_peer_failure(r)
    }

    /// A send failed because the peer is gone: if it said why before it
    /// went, that is the error to report, not the broken pipe.
    fn or_peer_failure(&mut self, r: Result<()>) -> Result<()> {
        match r {
            Err(e) => match self.recv() {
                Ok(Some(Msg::Failed { step, kind, errno })) => Err(failed(step, kind, errno)),
                _ => Err(e),
            },
            ok => ok,
        }
    }

    /// The next message, or `None` at end of file (the peer exec'd or died).
    pub(crate) fn recv(&mut self) -> Result<Option<Msg>> {
        let mut b = [0u8; LEN];
        let mut got = 0;
        while got < LEN {
            match self.sock.read(&mut b[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(Error::Protocol {
                        want: "a whole message",
                        got: format!("{got} bytes"),
                    })
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == IoKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::sys(
                        "read(sync)",
                        Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                    ))
                }
            }
        }
        Msg::decode(b).map(Some).ok_or_else(|| Error::Protocol {
            want: "a known message",
            got: format!("tag {}", b[0]),
        })
    }

    fn expect(&mut self, want: Msg) -> Result<()> {
        match self.recv()? {
            Some(m) if m == want => Ok(()),
            Some(Msg::Failed { step, kind, errno }) => Err(failed(step, kind, errno)),
            Some(m) => Err(Error::Protocol {
                want: want.name(),
                got: m.name().to_owned(),
            }),
            None => Err(Error::Protocol {
                want: want.name(),
                got: "end of file (the peer exited)".to_owned(),
            }),
        }
    }

    pub(crate) fn expect_maps_done(&mut self) -> Result<()> {
        self.expect(Msg::MapsDone)
    }

    /// Sends `m` with the descriptor `fd` attached (`SCM_RIGHTS`).
    pub(crate) fn send_with_fd(&mut self, m: Msg, fd: BorrowedFd<'_>) -> Result<()> {
        let b = m.encode();
        let fds = [fd];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        anc.push(SendAncillaryMessage::ScmRights(&fds));
        let sent = rustix::net::sendmsg(
            &self.sock,
            &[IoSlice::new(&b)],
            &mut anc,
            SendFlags::empty(),
        )
        .map_err(|e| {
            Error::sys(
                format!("sendmsg(sync, {}, SCM_RIGHTS)", m.name()),
                Errno::from_raw(e.raw_os_error()),
            )
        });
        let n = match sent {
            Ok(n) => n,
            Err(e) => return self.or_peer_failure(Err(e)),
        };
        if n != LEN {
            return Err(Error::Protocol {
                want: "a whole message sent",
                got: format!("{n} bytes"),
            });
        }
        Ok(())
    }

    /// Like [`Channel::expect_maps_done`], also taking the descriptor the
    /// parent attached to it.
    pub(crate) fn expect_maps_done_with_fd(&mut self) -> Result<OwnedFd> {
        self.expect_with_fd(Msg::MapsDone)
    }

    /// The next message and the descriptor that came with it, if any; `None`
    /// at end of file.
    pub(crate) fn recv_with_fd(&mut self) -> Result<Option<(Msg, Option<OwnedFd>)>> {
        let mut b = [0u8; LEN];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut anc = RecvAncillaryBuffer::new(&mut space);
        let got = loop {
            match rustix::net::recvmsg(
                &self.sock,
                &mut [IoSliceMut::new(&mut b)],
                &mut anc,
                RecvFlags::CMSG_CLOEXEC | RecvFlags::WAITALL,
            ) {
                Ok(r) => break r.bytes,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return Err(Error::sys(
                        "recvmsg(sync)",
                        Errno::from_raw(e.raw_os_error()),
                    ))
                }
            }
        };
        let mut fd = None;
        for m in anc.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = m {
                fd = fds.next();
            }
        }
        if got == 0 {
            return Ok(None);
        }
        if got != LEN {
            return Err(Error::Protocol {
                want: "a whole message",
                got: format!("{got} bytes"),
            });
        }
        match Msg::decode(b) {
            Some(m) => Ok(Some((m, fd))),
            None => Err(Error::Protocol {
                want: "a known message",
                got: format!("tag {}", b[0]),
            }),
        }
    }

    /// Message `want` with a descriptor attached.
    pub(crate) fn expect_with_fd(&mut self, want: Msg) -> Result<OwnedFd> {
        match self.recv_with_fd()? {
            Some((m, Some(fd))) if m == want => Ok(fd),
            Some((m, None)) if m == want => Err(Error::Protocol {
                want: want.name(),
                got: format!("{} without a descriptor", m.name()),
            }),
            Some((Msg::Failed { step, kind, errno }, _)) => Err(failed(step, kind, errno)),
            Some((m, _)) => Err(Error::Protocol {
                want: want.name(),
                got: m.name().to_owned(),
            }),
            None => Err(Error::Protocol {
                want: want.name(),
                got: "end of file (the peer exited)".to_owned(),
            }),
        }
    }

    /// A `HostMount`, with or without its tree.
    pub(crate) fn expect_host_mount(&mut self) -> Result<Option<OwnedFd>> {
        match self.recv_with_fd()? {
            Some((Msg::HostMount, fd)) => Ok(fd),
            Some((Msg::Failed { step, kind, errno }, _)) => Err(failed(step, kind, errno)),
            Some((m, _)) => Err(Error::Protocol {
                want: Msg::HostMount.name(),
                got: m.name().to_owned(),
            }),
            None => Err(Error::Protocol {
                want: Msg::HostMount.name(),
                got: "end of file (the peer exited)".to_owned(),
            }),
        }
    }

    pub(crate) fn expect_ready(&mut self) -> Result<()> {
        self.expect(Msg::Ready)
    }

    pub(crate) fn expect_start(&mut self) -> Result<()> {
        self.expect(Msg::Start)
    }

    /// After `Start`: end of file means the exec succeeded (the socket is
    /// close-on-exec); a `Failed` message means it did not.
    pub(crate) fn expect_exec(&mut self) -> Result<()> {
        match self.recv()? {
            None => Ok(()),
            Some(Msg::Failed { step, kind, errno }) => Err(failed(step, kind, errno)),
            Some(m) => Err(Error::Protocol {
                want: "end of file after exec",
                got: m.name().to_owned(),
            }),
        }
    }
}

fn failed(step: InitStep, kind: ErrorKind, errno: i32) -> Error {
    Error::Init {
        step,
        kind,
        source: (errno != 0).then(|| Errno::from_raw(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_errors_keep_kind() {
        let (mut a, mut b) = Channel::pair().unwrap();
        a.send(Msg::MapsDone).unwrap();
        b.expect_maps_done().unwrap();
        a.send(Msg::Failed {
            step: InitStep::Proc,
            kind: ErrorKind::Unsafe,
            errno: libc::ELOOP,
        })
        .unwrap();
        let e = b.expect_ready().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsafe);
        assert_eq!(e.errno(), Some(Errno::ELOOP));
        assert!(matches!(
            e,
            Error::Init {
                step: InitStep::Proc,
                ..
            }
        ));
        drop(a);
        b.expect_exec().unwrap();
    }

    #[test]
    fn a_descriptor_travels_with_maps_done() {
        use std::io::{Seek, SeekFrom};
        use std::os::fd::AsFd;
        let (mut a, mut b) = Channel::pair().unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"through the socket").unwrap();
        a.send_with_fd(Msg::MapsDone, f.as_fd()).unwrap();
        let got = b.expect_maps_done_with_fd().unwrap();
        let mut g = std::fs::File::from(got);
        g.seek(SeekFrom::Start(0)).unwrap();
        let mut text = String::new();
        g.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through the socket");
        // Without a descriptor it is a protocol error, not a hang.
        a.send(Msg::MapsDone).unwrap();
        assert!(b.expect_maps_done_with_fd().is_err());
    }

    #[test]
    fn a_host_mount_comes_with_or_without_its_tree() {
        use std::os::fd::AsFd;
        let (mut a, mut b) = Channel::pair().unwrap();
        let f = tempfile::tempfile().unwrap();
        a.send_with_fd(Msg::HostMount, f.as_fd()).unwrap();
        a.send(Msg::HostMount).unwrap();
        a.send(Msg::Ready).unwrap();
        assert!(b.expect_host_mount().unwrap().is_some());
        assert!(b.expect_host_mount().unwrap().is_none());
        assert!(b.expect_host_mount().is_err(), "another message is refused");
    }

    #[test]
    fn a_send_to_a_peer_that_failed_reports_its_failure() {
        let (mut a, mut b) = Channel::pair().unwrap();
        b.send(Msg::Failed {
            step: InitStep::Overlay,
            kind: ErrorKind::Config,
            errno: libc::ENOENT,
        })
        .unwrap();
        drop(b);
        // The write to the closed peer fails with EPIPE rather than a signal.
        crate::sys::set_signal_ignored(nix::sys::signal::Signal::SIGPIPE, true).unwrap();
        let e = a.send(Msg::MapsDone).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Init {
                    step: InitStep::Overlay,
                    ..
                }
            ),
            "{e}"
        );
    }
}
