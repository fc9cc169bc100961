//! Format sniffing and the decompression thread.
//!
//! The archive is decoded on its own thread into a small, fixed pool of
//! buffers that travel to the tar parser over a bounded channel, so
//! decompression overlaps with writing and memory stays bounded whatever the
//! image size. Multi-block xz is decoded on two threads by
//! [`crate::xzpar`]; other xz files use liblzma's threaded decoder (capped at
//! 40 MiB) or, with `threads: 1`, its plain one.
#![forbid(unsafe_code)]

use crate::report::Reporter;
use liblzma::stream::{Action, MtStreamBuilder, Status, Stream};
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};

/// Size of one buffer in flight.
const CHUNK: usize = 1 << 20;
/// Buffers in flight (decoded, not yet written).
const BUFFERS: usize = 2;
/// Memory liblzma may use for threaded decoding before it reduces threads.
/// A worker needs about dict + block size (8 + 24 MiB for `xz -6`), so 40
/// MiB keeps one worker decoding ahead of the writer and the whole unpack
/// under the 64 MiB RSS target; 128 MiB gives two workers (about 1.6×
/// faster on 2 CPUs) at about 115 MiB RSS (bench/unpack/RESULTS.md).
const XZ_MEMLIMIT_THREADING: u64 = 40 << 20;

/// Archive compression, sniffed from the magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Xz,
    Gzip,
    Zstd,
    Tar,
}

pub(crate) fn sniff(f: &mut File) -> io::Result<Format> {
    let mut m = [0u8; 6];
    let mut n = 0;
    while n < m.len() {
        match f.read(&mut m[n..])? {
            0 => break,
            k => n += k,
        }
    }
    f.seek(SeekFrom::Start(0))?;
    let m = &m[..n];
    Ok(if m.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0]) {
        Format::Xz
    } else if m.starts_with(&[0x1F, 0x8B]) {
        Format::Gzip
    } else if m.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        Format::Zstd
    } else {
        Format::Tar
    })
}

/// Counts compressed bytes read and reports them.
struct Counting<'r> {
    f: File,
    rep: &'r dyn Reporter,
    id: u64,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.f.read(buf)?;
        self.rep.advance(self.id, n as u64);
        Ok(n)
    }
}

/// Multi-stream, multi-threaded xz decoder (`xz -T0` semantics: every
/// concatenated stream is decoded, stream padding is skipped).
struct Xz<R: BufRead> {
    inner: R,
    stream: Option<Stream>,
    threads: u32,
}

impl<R: BufRead> Xz<R> {
    fn new_stream(&self) -> io::Result<Stream> {
        if self.threads <= 1 {
            // The plain decoder: no worker threads, no block buffers.
            return Stream::new_stream_decoder(u64::MAX, 0).map_err(io::Error::other);
        }
        let mut b = MtStreamBuilder::new();
        b.threads(self.threads.max(1))
            .memlimit_threading(XZ_MEMLIMIT_THREADING)
            .memlimit_stop(u64::MAX);
        b.decoder().map_err(io::Error::other)
    }
}

impl<R: BufRead> Read for Xz<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.stream.is_none() {
                // Between streams: skip zero padding, stop at EOF.
                loop {
                    let input = self.inner.fill_buf()?;
                    if input.is_empty() {
                        return Ok(0);
                    }
                    let zeros = input.iter().take_while(|&&b| b == 0).count();
                    if zeros == 0 {
                        break;
                    }
                    self.inner.consume(zeros);
                }
                self.stream = Some(self.new_stream()?);
            }
            let stream = self.stream.as_mut().unwrap();
            let input = self.inner.fill_buf()?;
            let eof = input.is_empty();
            let (bi, bo) = (stream.total_in(), stream.total_out());
            let ret = stream.process(input, buf, if eof { Action::Finish } else { Action::Run });
            let read = (stream.total_out() - bo) as usize;
            let consumed = (stream.total_in() - bi) as usize;
            self.inner.consume(consumed);
            let status = ret.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if status == Status::StreamEnd {
                self.stream = None;
            }
            if read > 0 {
                return Ok(read);
            }
            if status == Status::StreamEnd {
                continue;
            }
            if eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "xz stream ends early",
                ));
            }
        }
    }
}

/// Builds the decoder over the counted file.
fn decoder<'r>(
    f: File,
    fmt: Format,
    threads: u32,
    rep: &'r dyn Reporter,
    id: u64,
) -> io::Result<Box<dyn Read + 'r>> {
    let c = Counting { f, rep, id };
    Ok(match fmt {
        Format::Tar => Box::new(c),
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            1 << 16,
            c,
        ))),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::new(c)?),
        Format::Xz => Box::new(Xz {
            inner: BufReader::with_capacity(1 << 16, c),
            stream: None,
            threads,
        }),
    })
}

/// Runs on the decoder thread: fills pooled buffers and sends them on.
pub(crate) fn pump(
    f: File,
    fmt: Format,
    threads: u32,
    rep: &dyn Reporter,
    id: u64,
    tx: SyncSender<io::Result<Vec<u8>>>,
    free: Receiver<Vec<u8>>,
) {
    if fmt == Format::Xz {
        if let Some(plan) = crate::xzpar::plan(&f, threads as usize) {
            crate::xzpar::run(&f, plan, rep, id, &tx, &std::sync::Mutex::new(free));
            return;
        }
    }
    let mut r = match decoder(f, fmt, threads, rep, id) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    let mut allocated = 0;
    loop {
        let mut buf = match free.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Empty) if allocated < BUFFERS + 2 => {
                allocated += 1;
                Vec::with_capacity(CHUNK)
            }
            Err(TryRecvError::Empty) => match free.recv() {
                Ok(b) => b,
                Err(_) => return,
            },
            Err(TryRecvError::Disconnected) => return,
        };
        buf.clear();
        buf.resize(CHUNK, 0);
        let mut n = 0;
        let res = loop {
            if n == CHUNK {
                break Ok(());
            }
            match r.read(&mut buf[n..]) {
                Ok(0) => break Ok(()),
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        buf.truncate(n);
        if n > 0 && tx.send(Ok(buf)).is_err() {
            return;
        }
        match res {
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
            Ok(()) if n < CHUNK => return,
            Ok(()) => {}
        }
    }
}

/// Sender of decoded buffers (or the decoder's error).
pub(crate) type Filled = SyncSender<io::Result<Vec<u8>>>;

/// Creates the channel pair for [`pump`] and the reading side.
pub(crate) fn channel() -> (Filled, Receiver<Vec<u8>>, Pipe) {
    let (tx, rx) = sync_channel(BUFFERS);
    let (back_tx, back_rx) = sync_channel(BUFFERS + 2);
    let marks = Rc::new(RefCell::new(crate::tarnorm::Marks::default()));
    let pipe = Pipe {
        norm: crate::tarnorm::Norm::new(
            Raw {
                rx,
                back: back_tx,
                cur: Vec::new(),
                pos: 0,
                done: false,
            },
            marks.clone(),
        ),
        marks,
        count: Rc::new(Cell::new(0)),
        rec: Rc::new(RefCell::new(None)),
    };
    (tx, back_rx, pipe)
}

/// The decoded stream as it comes from the decoder thread.
pub(crate) struct Raw {
    rx: Receiver<io::Result<Vec<u8>>>,
    back: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

/// The tar parser's view of the decoded stream: as GNU tar reads member
/// sizes (`tarnorm`).
pub(crate) struct Pipe {
    norm: crate::tarnorm::Norm<Raw>,
    /// Where the members the parser sees were in the decoded archive.
    pub(crate) marks: Rc<RefCell<crate::tarnorm::Marks>>,
    /// Decoded bytes handed to the parser so far.
    pub(crate) count: Rc<Cell<u64>>,
    /// When `Some`, every byte handed to the parser is also appended here
    /// (used to see the raw extension headers the parser consumed).
    pub(crate) rec: Rc<RefCell<Option<Vec<u8>>>>,
}

impl Read for Raw {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    let old = std::mem::replace(&mut self.cur, b);
                    self.pos = 0;
                    if old.capacity() > 0 {
                        let _ = self.back.try_send(old);
                    }
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Read for Pipe {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.norm.read(out)?;
        self.count.set(self.count.get() + n as u64);
        if let Some(v) = self.rec.borrow_mut().as_mut() {
            v.extend_from_slice(&out[..n]);
        }
        Ok(n)
    }
}
