//! Sparse members (GNU pax sparse 1.0): holes are never written.

use super::name::werr;
use super::Unpacker;
use crate::decode::Pipe;
use crate::error::{Error, Result};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

impl Unpacker<'_> {
    /// Writes a GNU pax sparse 1.0 member: the data starts with a decimal
    /// map (count, then offset/size pairs, one per line) padded to 512
    /// bytes, followed by the data of each region.
    pub(super) fn write_pax_sparse(
        &mut self,
        e: &mut tar::Entry<'_, Pipe>,
        f: &mut File,
        real: u64,
        name: &str,
        path: &[u8],
    ) -> Result<()> {
        let data_pos = self.at(e.raw_file_position());
        let size = e.size();
        let mut used: u64 = 0;
        let corrupt = |why| Error::BadEntry {
            entry: name.to_owned(),
            offset: data_pos,
            why,
        };
        let truncated = |at: u64| Error::Truncated {
            archive: self.archive.to_owned(),
            entry: name.to_owned(),
            offset: data_pos + at,
        };
        let line = |e: &mut tar::Entry<'_, Pipe>, used: &mut u64| -> Result<u64> {
            let mut v: u64 = 0;
            let mut digits = 0;
            loop {
                let mut b = [0u8; 1];
                match e.read(&mut b) {
                    Ok(1) => {}
                    Ok(_) => return Err(truncated(*used)),
                    Err(_) => return Err(truncated(*used)),
                }
                *used += 1;
                match b[0] {
                    b'\n' if digits > 0 => return Ok(v),
                    c @ b'0'..=b'9' if digits < 19 => {
                        v = v * 10 + (c - b'0') as u64;
                        digits += 1;
                    }
                    _ => return Err(corrupt("bad sparse map")),
                }
            }
        };
        let n = line(e, &mut used)?;
        if n > crate::tarnorm::MAX_SPARSE_REGIONS as u64 {
            return Err(corrupt("sparse map lists too many regions"));
        }
        let mut regions = Vec::new();
        let mut end = 0u64;
        let mut total = 0u64;
        for _ in 0..n {
            let off = line(e, &mut used)?;
            let len = line(e, &mut used)?;
            let stop = off
                .checked_add(len)
                .ok_or_else(|| corrupt("sparse region overflows"))?;
            if off < end || stop > real {
                return Err(corrupt("sparse regions overlap or exceed the file size"));
            }
            end = stop;
            total = total
                .checked_add(len)
                .ok_or_else(|| corrupt("sparse region overflows"))?;
            regions.push((off, len));
        }
        let pad = (512 - used % 512) % 512;
        let map_len = used + pad;
        if map_len.checked_add(total) != Some(size) {
            return Err(corrupt("sparse map does not match the member size"));
        }
        io::copy(&mut e.take(pad), &mut io::sink()).map_err(|_| truncated(used))?;
        used += pad;
        for (off, len) in regions {
            f.seek(SeekFrom::Start(off))
                .map_err(|e| werr("lseek", path, e))?;
            let mut left = len;
            while left > 0 {
                let want = left.min(self.buf.len() as u64) as usize;
                let n = match e.read(&mut self.buf[..want]) {
                    Ok(0) | Err(_) => return Err(truncated(used)),
                    Ok(n) => n,
                };
                f.write_all(&self.buf[..n])
                    .map_err(|e| werr("write", path, e))?;
                left -= n as u64;
                used += n as u64;
            }
        }
        f.set_len(real).map_err(|e| werr("ftruncate", path, e))
    }
}
