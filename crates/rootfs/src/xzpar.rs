//! Block-parallel xz decoding with bounded memory.
//!
//! liblzma's threaded decoder buffers every block it decodes in full (block
//! size + dictionary per thread: 32 MiB per thread for `xz -6`), so two
//! threads already exceed the 64 MiB budget. Here the index at the end of
//! the file gives every block's position; workers decode blocks with raw
//! LZMA2 decoders (no block-sized buffer) and stream 1 MiB chunks into a
//! bounded channel per block. The block being consumed streams straight
//! through; the next block may run ahead by at most `cap` chunks. At most
//! `workers` blocks are in flight, so memory is about
//! `workers × (dictionary + cap)`, plus the few emptied chunks the reader
//! has handed back for reuse ([`Pool`]).
//!
//! Each block's header CRC32, sizes, padding and check (CRC32 or CRC64) are
//! verified. Anything unusual (no index, SHA-256 checks, unknown filters,
//! large dictionaries) makes [`plan`] return `None`, and the caller falls
//! back to liblzma's own decoder, which reports corruption in detail.
#![forbid(unsafe_code)]

use crate::report::Reporter;
use crate::sys;
use liblzma::stream::{Action, Filters, Status, Stream};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Condvar, Mutex};

const CHUNK: usize = 1 << 20;
const READ: usize = 256 << 10;
/// Memory for dictionaries plus look-ahead buffers across all workers.
const BUDGET: u64 = 40 << 20;
/// Look-ahead per block, in chunks.
const CAP: u64 = 12;

/// One block, located through the index.
pub(crate) struct Block {
    offset: u64,
    header: Vec<u8>,
    unpadded: u64,
    uncompressed: u64,
    check: u8,
}

/// The decoding plan: blocks in order and how many workers fit the budget.
pub(crate) struct Plan {
    blocks: Vec<Block>,
    workers: usize,
    cap: usize,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("xz: {what}"))
}

fn vli(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return None; // not minimally encoded
            }
            return Some(v);
        }
    }
    None
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().unwrap())
}

fn read_at(f: &File, off: u64, len: usize) -> Option<Vec<u8>> {
    let mut v = vec![0; len];
    f.read_exact_at(&mut v, off).ok()?;
    Some(v)
}

fn round4(x: u64) -> u64 {
    x.div_ceil(4) * 4
}

/// A block's filter chain: `(filter id, properties)` in order.
type Chain = Vec<(u64, Vec<u8>)>;

/// Filter chain and declared uncompressed size of a block header; `None`
/// if malformed.
fn filters(h: &[u8]) -> Option<(Chain, Option<u64>)> {
    let flags = *h.get(1)?;
    if flags & 0x3c != 0 {
        return None;
    }
    let n = (flags & 3) as usize + 1;
    let mut pos = 2;
    if flags & 0x40 != 0 {
        vli(h, &mut pos)?;
    }
    let unc = if flags & 0x80 != 0 {
        Some(vli(h, &mut pos)?)
    } else {
        None
    };
    let mut out = Vec::new();
    for _ in 0..n {
        let id = vli(h, &mut pos)?;
        let len = vli(h, &mut pos)? as usize;
        let props = h.get(pos..pos + len)?.to_vec();
        pos += len;
        out.push((id, props));
    }
    if h[pos..h.len() - 4].iter().any(|&b| b != 0) {
        return None;
    }
    Some((out, unc))
}

fn build_filters(chain: &[(u64, Vec<u8>)]) -> io::Result<Filters> {
    let mut f = Filters::new();
    for (id, p) in chain {
        let r = match id {
            0x21 => f.lzma2_properties(p),
            0x03 => f.delta_properties(p),
            0x04 => f.x86_properties(p),
            0x0a => f.arm64_properties(p),
            _ => return Err(bad("unsupported filter")),
        };
        r.map_err(|e| bad(&e.to_string()))?;
    }
    Ok(f)
}

/// LZMA2 dictionary size from its one property byte.
fn dict_size(p: &[u8]) -> Option<u64> {
    let d = *p.first()? as u64;
    if d > 40 {
        return None;
    }
    Some(if d == 40 {
        u32::MAX as u64
    } else {
        (2 | (d & 1)) << (d / 2 + 11)
    })
}

/// Reads the index(es) of every concatenated stream, from the end.
/// `None` means: use the sequential decoder.
pub(crate) fn plan(f: &File, threads: usize) -> Option<Plan> {
    if threads < 2 {
        return None;
    }
    let mut end = f.metadata().ok()?.len();
    let mut streams: Vec<Vec<Block>> = Vec::new();
    while end > 0 {
        // Stream padding: zero bytes in multiples of four.
        while end >= 4 && read_at(f, end - 4, 4)? == [0, 0, 0, 0] {
            end -= 4;
        }
        if end < 24 {
            return None;
        }
        let foot = read_at(f, end - 12, 12)?;
        if &foot[10..12] != b"YZ" || sys::crc32(&foot[4..10]) != le32(&foot[0..4]) || foot[8] != 0 {
            return None;
        }
        let check = foot[9] & 0x0f;
        if !matches!(check, 0 | 1 | 4) {
            return None; // SHA-256 or reserved: leave it to liblzma
        }
        let isize = (le32(&foot[4..8]) as u64 + 1) * 4;
        if isize > 64 << 20 || isize + 24 > end {
            return None;
        }
        let istart = end - 12 - isize;
        let idx = read_at(f, istart, isize as usize)?;
        if idx[0] != 0 || sys::crc32(&idx[..idx.len() - 4]) != le32(&idx[idx.len() - 4..]) {
            return None;
        }
        let mut pos = 1;
        let n = vli(&idx, &mut pos)?;
        let mut recs = Vec::new();
        let mut total: u64 = 0;
        for _ in 0..n {
            let unpadded = vli(&idx, &mut pos)?;
            let unc = vli(&idx, &mut pos)?;
            total = total.checked_add(round4(unpadded))?;
            recs.push((unpadded, unc));
        }
        let sstart = istart.checked_sub(total)?.checked_sub(12)?;
        let head = read_at(f, sstart, 12)?;
        if head[..6] != [0xfd, b'7', b'z', b'X', b'Z', 0]
            || head[6..8] != foot[8..10]
            || sys::crc32(&head[6..8]) != le32(&head[8..12])
        {
            return None;
        }
        let mut off = sstart + 12;
        let mut blocks = Vec::new();
        for (unpadded, uncompressed) in recs {
            let hs = read_at(f, off, 1)?[0];
            if hs == 0 {
                return None;
            }
            let header = read_at(f, off, (hs as usize + 1) * 4)?;
            let hl = header.len();
            if sys::crc32(&header[..hl - 4]) != le32(&header[hl - 4..]) {
                return None;
            }
            blocks.push(Block {
                offset: off,
                header,
                unpadded,
                uncompressed,
                check,
            });
            off += round4(unpadded);
        }
        streams.push(blocks);
        end = sstart;
    }
    let blocks: Vec<Block> = streams.into_iter().rev().flatten().collect();
    if blocks.len() < 2 {
        return None;
    }
    // Every block must use filters we can build, and dictionaries must fit.
    let mut dict = 0;
    let mut biggest = 0;
    for b in &blocks {
        let (chain, unc) = filters(&b.header)?;
        if unc.is_some_and(|u| u != b.uncompressed) {
            return None;
        }
        build_filters(&chain).ok()?;
        let (id, p) = chain.last()?;
        if *id != 0x21 {
            return None;
        }
        dict = dict.max(dict_size(p)?.min(b.uncompressed.max(4096)));
        biggest = biggest.max(b.uncompressed);
    }
    let cap = CAP.min(biggest.div_ceil(CHUNK as u64)).max(1);
    let per = dict + cap * CHUNK as u64;
    let workers = (BUDGET / per).min(threads as u64).min(blocks.len() as u64) as usize;
    if workers < 2 {
        return None;
    }
    Some(Plan {
        blocks,
        workers,
        cap: cap as usize,
    })
}

type Chunks = SyncSender<io::Result<Vec<u8>>>;

/// Chunks the reader has emptied and handed back ([`crate::decode`]'s
/// pool). Workers reuse them before they allocate, so the pages of a chunk
/// are faulted in once, not once per MiB decoded.
pub(crate) type Pool = Mutex<Receiver<Vec<u8>>>;

/// An empty chunk of exactly [`CHUNK`] bytes' capacity, from the pool if
/// it has one.
fn empty_chunk(pool: &Pool) -> Vec<u8> {
    let given = pool.lock().ok().and_then(|rx| rx.try_recv().ok());
    match given {
        Some(mut v) if v.capacity() == CHUNK => {
            v.clear();
            v
        }
        _ => Vec::with_capacity(CHUNK),
    }
}

/// Decodes one block and streams it into `tx`. A send failure means the
/// reader went away: stop quietly.
fn decode_block(f: &File, b: &Block, tx: &Chunks, pool: &Pool) -> io::Result<()> {
    let (chain, _) = filters(&b.header).ok_or_else(|| bad("bad block header"))?;
    let mut stream =
        Stream::new_raw_decoder(&build_filters(&chain)?).map_err(|e| bad(&e.to_string()))?;
    let hl = b.header.len() as u64;
    let check_len: u64 = match b.check {
        0 => 0,
        1 => 4,
        _ => 8,
    };
    let comp = b
        .unpadded
        .checked_sub(hl + check_len)
        .filter(|&c| c > 0)
        .ok_or_else(|| bad("bad block size"))?;
    let mut crc32: u32 = 0;
    let mut crc64: u64 = 0;
    let mut inbuf = vec![0u8; READ];
    let mut in_off: u64 = 0;
    let (mut in_pos, mut in_len) = (0usize, 0usize);
    let mut out = empty_chunk(pool);
    let mut produced: u64 = 0;
    loop {
        if in_pos == in_len && in_off < comp {
            let n = (comp - in_off).min(READ as u64) as usize;
            f.read_exact_at(&mut inbuf[..n], b.offset + hl + in_off)?;
            in_off += n as u64;
            in_pos = 0;
            in_len = n;
        }
        let action = if in_off == comp {
            Action::Finish
        } else {
            Action::Run
        };
        let before_in = stream.total_in();
        let before_out = out.len();
        let status = stream
            .process_vec(&inbuf[in_pos..in_len], &mut out, action)
            .map_err(|e| bad(&e.to_string()))?;
        in_pos += (stream.total_in() - before_in) as usize;
        let fresh = &out[before_out..];
        let fresh_len = fresh.len();
        match b.check {
            1 => crc32 = sys::crc32_update(fresh, crc32),
            4 => crc64 = sys::crc64_update(fresh, crc64),
            _ => {}
        }
        produced += fresh_len as u64;
        if produced > b.uncompressed {
            return Err(bad("block is larger than the index says"));
        }
        if out.len() == out.capacity() || (status == Status::StreamEnd && !out.is_empty()) {
            let full = std::mem::replace(&mut out, empty_chunk(pool));
            if tx.send(Ok(full)).is_err() {
                return Ok(());
            }
        }
        if status == Status::StreamEnd {
            break;
        }
        if in_pos == in_len && in_off == comp && fresh_len == 0 && stream.total_in() == before_in {
            return Err(bad("block ends early"));
        }
    }
    if stream.total_in() != comp || produced != b.uncompressed {
        return Err(bad("block size does not match the index"));
    }
    let pad = (4 - (hl + comp) % 4) % 4;
    let tail = read_at(f, b.offset + hl + comp, (pad + check_len) as usize)
        .ok_or_else(|| bad("truncated block"))?;
    if tail[..pad as usize].iter().any(|&x| x != 0) {
        return Err(bad("bad block padding"));
    }
    let ok = match b.check {
        0 => true,
        1 => le32(&tail[pad as usize..]) == crc32,
        _ => u64::from_le_bytes(tail[pad as usize..].try_into().unwrap()) == crc64,
    };
    if !ok {
        return Err(bad("block check mismatch"));
    }
    Ok(())
}

/// Runs the plan: workers decode, this thread forwards chunks in order.
pub(crate) fn run(f: &File, plan: Plan, rep: &dyn Reporter, id: u64, tx: &Chunks, pool: &Pool) {
    // `current` is the block being forwarded; a worker may start block i
    // only when i < current + workers. `usize::MAX` means stop.
    let gate = (Mutex::new(0usize), Condvar::new());
    let n = plan.workers;
    let blocks = &plan.blocks;
    std::thread::scope(|s| {
        let mut slots: Vec<Receiver<Receiver<io::Result<Vec<u8>>>>> = Vec::new();
        for w in 0..n {
            let (stx, srx) = sync_channel(1);
            slots.push(srx);
            let gate = &gate;
            let cap = plan.cap;
            s.spawn(move || {
                for i in (w..blocks.len()).step_by(n) {
                    {
                        let mut cur = gate.0.lock().unwrap();
                        while *cur != usize::MAX && i >= *cur + n {
                            cur = gate.1.wait(cur).unwrap();
                        }
                        if *cur == usize::MAX {
                            return;
                        }
                    }
                    let (btx, brx) = sync_channel(cap);
                    if stx.send(brx).is_err() {
                        return;
                    }
                    if let Err(e) = decode_block(f, &blocks[i], &btx, pool) {
                        let _ = btx.send(Err(e));
                        return;
                    }
                }
            });
        }
        let stop = || {
            *gate.0.lock().unwrap() = usize::MAX;
            gate.1.notify_all();
        };
        'blocks: for (i, b) in blocks.iter().enumerate() {
            {
                *gate.0.lock().unwrap() = i;
                gate.1.notify_all();
            }
            let Ok(brx) = slots[i % n].recv() else {
                let _ = tx.send(Err(bad("decoder thread stopped")));
                break;
            };
            for chunk in brx {
                let failed = chunk.is_err();
                if tx.send(chunk).is_err() || failed {
                    break 'blocks;
                }
            }
            rep.advance(id, round4(b.unpadded));
        }
        stop();
        drop(slots);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_chunk_is_reused_and_an_odd_one_is_not() {
        let (back, rx) = sync_channel(2);
        let pool: Pool = Mutex::new(rx);
        let mut v = Vec::with_capacity(CHUNK);
        v.extend_from_slice(b"old bytes");
        let at = v.as_ptr();
        back.send(v).unwrap();
        back.send(Vec::with_capacity(CHUNK / 2)).unwrap();
        let first = empty_chunk(&pool);
        assert_eq!(first.as_ptr(), at, "the returned chunk was not reused");
        assert!(first.is_empty());
        let second = empty_chunk(&pool);
        assert_eq!(second.capacity(), CHUNK);
        assert!(empty_chunk(&pool).capacity() == CHUNK);
    }

    #[test]
    fn vli_and_dict() {
        let mut p = 0;
        assert_eq!(vli(&[0x80, 0x01], &mut p), Some(128));
        let mut p = 0;
        assert_eq!(vli(&[0x80, 0x00], &mut p), None);
        assert_eq!(dict_size(&[16]), Some(1 << 20));
        assert_eq!(dict_size(&[17]), Some(3 << 19));
        assert_eq!(dict_size(&[22]), Some(8 << 20));
    }
}
